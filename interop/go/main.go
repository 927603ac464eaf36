// Command interop drives the session and reputation services through their Go stubs and
// prints what it saw as one JSON object. It exits 1 on any unexpected result.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"time"

	reputationv1 "github.com/interview-platform/protos/gen/go/interview/reputation/v1"
	sessionsv1 "github.com/interview-platform/protos/gen/go/interview/sessions/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const callTimeout = 5 * time.Second

type report struct {
	Solo   soloReport   `json:"solo"`
	Paired pairedReport `json:"paired"`
}

type soloReport struct {
	SessionID        string                     `json:"session_id"`
	Statuses         []sessionsv1.SessionStatus `json:"statuses"`
	IdempotentCreate bool                       `json:"idempotent_create"`
	QuestionNumbers  []int32                    `json:"question_numbers"`
	Messages         int                        `json:"messages"`
	CompleteTimeSet  bool                       `json:"complete_time_set"`
	RepeatComplete   repeatComplete             `json:"repeat_complete"`
	BadID            badID                      `json:"bad_id"`
}

type repeatComplete struct {
	Code   codes.Code `json:"code"`
	Reason string     `json:"reason"`
	Domain string     `json:"domain"`
}

type badID struct {
	Code   codes.Code `json:"code"`
	Reason string     `json:"reason"`
	Fields []string   `json:"fields"`
}

type pairedReport struct {
	SessionID  string        `json:"session_id"`
	First      firstConfirm  `json:"first"`
	Second     secondConfirm `json:"second"`
	OwnerScore int64         `json:"owner_score,string"`
}

type firstConfirm struct {
	BothConfirmed    bool     `json:"both_confirmed"`
	ConfirmedUserIDs []string `json:"confirmed_user_ids"`
}

type secondConfirm struct {
	BothConfirmed     bool                     `json:"both_confirmed"`
	ReputationAwarded bool                     `json:"reputation_awarded"`
	SessionStatus     sessionsv1.SessionStatus `json:"session_status"`
	ConfirmedUserIDs  []string                 `json:"confirmed_user_ids"`
}

func main() {
	sessionAddr, reputationAddr := env("SESSION_ADDRESS"), env("REPUTATION_ADDRESS")
	owner, partner := env("OWNER_TOKEN"), env("PARTNER_TOKEN")
	ownerID, partnerID := env("OWNER_ID"), env("PARTNER_ID")

	sessions := sessionsv1.NewSessionServiceClient(dial(sessionAddr))
	reputation := reputationv1.NewReputationServiceClient(dial(reputationAddr))

	var out report
	solo := &out.Solo

	create := &sessionsv1.CreateSessionRequest{JobPostingId: newUUID(), RequestId: newUUID()}
	created, err := call(sessions.CreateSession, owner, create)
	check(err, "CreateSession")
	again, err := call(sessions.CreateSession, owner, create)
	check(err, "CreateSession (repeat)")
	id := created.GetSessionId()
	solo.SessionID = id
	solo.IdempotentCreate = again.GetSessionId() == id
	expect(solo.IdempotentCreate, "repeated CreateSession returned %s, want %s", again.GetSessionId(), id)

	for _, m := range []struct {
		role    sessionsv1.MessageRole
		content string
	}{
		{sessionsv1.MessageRole_MESSAGE_ROLE_QUESTION, "Tell me about a hard bug."},
		{sessionsv1.MessageRole_MESSAGE_ROLE_ANSWER, "A race in a relay."},
	} {
		msg, err := call(sessions.AppendMessage, owner,
			&sessionsv1.AppendMessageRequest{SessionId: id, Role: m.role, Content: m.content})
		check(err, "AppendMessage "+m.role.String())
		solo.QuestionNumbers = append(solo.QuestionNumbers, msg.GetQuestionNumber())
	}
	expect(reflect.DeepEqual(solo.QuestionNumbers, []int32{1, 1}),
		"question numbers %v, want [1 1]", solo.QuestionNumbers)

	paused, err := call(sessions.PauseSession, owner, &sessionsv1.PauseSessionRequest{SessionId: id})
	check(err, "PauseSession")
	resumed, err := call(sessions.ResumeSession, owner, &sessionsv1.ResumeSessionRequest{SessionId: id})
	check(err, "ResumeSession")
	completed, err := call(sessions.CompleteSession, owner, &sessionsv1.CompleteSessionRequest{SessionId: id})
	check(err, "CompleteSession")
	solo.Statuses = []sessionsv1.SessionStatus{
		created.GetStatus(), paused.GetStatus(), resumed.GetStatus(), completed.GetStatus(),
	}
	want := []sessionsv1.SessionStatus{
		sessionsv1.SessionStatus_SESSION_STATUS_ACTIVE,
		sessionsv1.SessionStatus_SESSION_STATUS_PAUSED,
		sessionsv1.SessionStatus_SESSION_STATUS_ACTIVE,
		sessionsv1.SessionStatus_SESSION_STATUS_COMPLETED,
	}
	expect(reflect.DeepEqual(solo.Statuses, want), "statuses %v, want %v", solo.Statuses, want)
	solo.CompleteTimeSet = completed.GetCompleteTime() != nil
	expect(solo.CompleteTimeSet, "CompleteSession left complete_time unset")

	_, err = call(sessions.CompleteSession, owner, &sessionsv1.CompleteSessionRequest{SessionId: id})
	st, info, _ := rpcError(err, "CompleteSession (repeat)")
	solo.RepeatComplete = repeatComplete{Code: st.Code(), Reason: info.GetReason(), Domain: info.GetDomain()}
	expect(st.Code() == codes.FailedPrecondition && info.GetReason() == "SESSION_ALREADY_COMPLETED" &&
		info.GetDomain() == "interview.sessions",
		"repeated CompleteSession: %v %s/%s, want FailedPrecondition interview.sessions/SESSION_ALREADY_COMPLETED",
		st.Code(), info.GetDomain(), info.GetReason())

	listed, err := call(sessions.ListMessages, owner,
		&sessionsv1.ListMessagesRequest{SessionId: id, PageSize: 10})
	check(err, "ListMessages")
	solo.Messages = len(listed.GetMessages())
	expect(solo.Messages == 2, "ListMessages returned %d messages, want 2", solo.Messages)

	_, err = call(sessions.GetSession, owner, &sessionsv1.GetSessionRequest{SessionId: "not-a-uuid"})
	st, info, bad := rpcError(err, "GetSession (bad id)")
	solo.BadID = badID{Code: st.Code(), Reason: info.GetReason(), Fields: []string{}}
	for _, v := range bad.GetFieldViolations() {
		solo.BadID.Fields = append(solo.BadID.Fields, v.GetField())
	}
	expect(st.Code() == codes.InvalidArgument && info.GetReason() == "INVALID_ARGUMENT" &&
		contains(solo.BadID.Fields, "session_id"),
		"GetSession(not-a-uuid): %v %s fields %v, want InvalidArgument INVALID_ARGUMENT naming session_id",
		st.Code(), info.GetReason(), solo.BadID.Fields)

	paired := &out.Paired
	pair, err := call(sessions.CreateSession, owner,
		&sessionsv1.CreateSessionRequest{JobPostingId: newUUID(), PartnerUserId: partnerID})
	check(err, "CreateSession (paired)")
	paired.SessionID = pair.GetSessionId()

	first, err := call(reputation.ConfirmCompletion, owner,
		&reputationv1.ConfirmCompletionRequest{SessionId: paired.SessionID})
	check(err, "ConfirmCompletion (owner)")
	paired.First = firstConfirm{
		BothConfirmed:    first.GetBothConfirmed(),
		ConfirmedUserIDs: first.GetConfirmedUserIds(),
	}
	expect(!paired.First.BothConfirmed && reflect.DeepEqual(paired.First.ConfirmedUserIDs, []string{ownerID}),
		"owner's confirmation: both_confirmed %t, confirmed %v; want false, [%s]",
		paired.First.BothConfirmed, paired.First.ConfirmedUserIDs, ownerID)

	second, err := call(reputation.ConfirmCompletion, partner,
		&reputationv1.ConfirmCompletionRequest{SessionId: paired.SessionID, RequestId: newUUID()})
	check(err, "ConfirmCompletion (partner)")
	paired.Second = secondConfirm{
		BothConfirmed:     second.GetBothConfirmed(),
		ReputationAwarded: second.GetReputationAwarded(),
		SessionStatus:     second.GetSessionStatus(),
		ConfirmedUserIDs:  second.GetConfirmedUserIds(),
	}
	both := []string{ownerID, partnerID}
	sort.Strings(both)
	expect(paired.Second.BothConfirmed && paired.Second.ReputationAwarded &&
		paired.Second.SessionStatus == sessionsv1.SessionStatus_SESSION_STATUS_COMPLETED &&
		reflect.DeepEqual(paired.Second.ConfirmedUserIDs, both),
		"partner's confirmation: %+v; want both confirmed, awarded, COMPLETED, confirmed %v",
		paired.Second, both)

	rep, err := call(reputation.GetReputation, partner, &reputationv1.GetReputationRequest{UserId: ownerID})
	check(err, "GetReputation")
	paired.OwnerScore = rep.GetScore()

	enc := json.NewEncoder(os.Stdout)
	check(enc.Encode(out), "writing the report")
}

// call invokes rpc as the holder of token, with a deadline of callTimeout.
func call[Req, Resp any](rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), token string, req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	return rpc(ctx, req)
}

// rpcError returns the status of an RPC that had to fail, with its ErrorInfo and BadRequest
// details (nil when absent).
func rpcError(err error, what string) (*status.Status, *errdetails.ErrorInfo, *errdetails.BadRequest) {
	expect(err != nil, "%s succeeded, want an error", what)
	st, ok := status.FromError(err)
	expect(ok, "%s: not a gRPC status: %v", what, err)
	var info *errdetails.ErrorInfo
	var bad *errdetails.BadRequest
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.BadRequest:
			bad = d
		case error:
			fail("%s: undecodable error detail: %v", what, d)
		}
	}
	return st, info, bad
}

// dial connects in plaintext. WithInsecure, because Debian's grpc-go 1.33 predates
// credentials/insecure; current releases spell it grpc.WithTransportCredentials(insecure.NewCredentials()).
func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.Dial(addr, grpc.WithInsecure())
	check(err, "dialing "+addr)
	return conn
}

// newUUID returns a random (version 4) UUID in lowercase.
func newUUID() string {
	var b [16]byte
	_, err := rand.Read(b[:])
	check(err, "reading random bytes")
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func env(name string) string {
	v := os.Getenv(name)
	expect(v != "", "%s is required", name)
	return v
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func expect(ok bool, format string, args ...any) {
	if !ok {
		fail(format, args...)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "interop: "+format+"\n", args...)
	os.Exit(1)
}
