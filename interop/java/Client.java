import static java.util.concurrent.TimeUnit.SECONDS;
import static java.util.stream.Collectors.joining;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.interviewplatform.reputation.v1.ConfirmCompletionRequest;
import com.interviewplatform.reputation.v1.GetReputationRequest;
import com.interviewplatform.reputation.v1.ReputationServiceGrpc;
import com.interviewplatform.reputation.v1.ReputationServiceGrpc.ReputationServiceBlockingStub;
import com.interviewplatform.sessions.v1.AppendMessageRequest;
import com.interviewplatform.sessions.v1.CompleteSessionRequest;
import com.interviewplatform.sessions.v1.CreateSessionRequest;
import com.interviewplatform.sessions.v1.GetSessionRequest;
import com.interviewplatform.sessions.v1.ListMessagesRequest;
import com.interviewplatform.sessions.v1.MessageRole;
import com.interviewplatform.sessions.v1.PauseSessionRequest;
import com.interviewplatform.sessions.v1.ResumeSessionRequest;
import com.interviewplatform.sessions.v1.SessionServiceGrpc;
import com.interviewplatform.sessions.v1.SessionServiceGrpc.SessionServiceBlockingStub;
import com.interviewplatform.sessions.v1.SessionStatus;
import io.grpc.Channel;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.MetadataUtils;
import java.lang.reflect.RecordComponent;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.function.Supplier;
import java.util.stream.Stream;

/**
 * Drives the session and reputation services through their Java stubs and prints what it saw as
 * one JSON object. Exits 1 on any unexpected result.
 */
public final class Client {
  private static final long CALL_TIMEOUT_SECONDS = 5;
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  // The report; record components become snake_case JSON keys, in declaration order.
  private record Report(Solo solo, Paired paired) {}

  private record Solo(
      String sessionId,
      List<Integer> statuses,
      boolean idempotentCreate,
      List<Integer> questionNumbers,
      int messages,
      boolean completeTimeSet,
      RepeatComplete repeatComplete,
      BadId badId) {}

  private record RepeatComplete(int code, String reason, String domain) {}

  private record BadId(int code, String reason, List<String> fields) {}

  private record Paired(
      String sessionId, FirstConfirm first, SecondConfirm second, String ownerScore) {}

  private record FirstConfirm(boolean bothConfirmed, List<String> confirmedUserIds) {}

  private record SecondConfirm(
      boolean bothConfirmed,
      boolean reputationAwarded,
      int sessionStatus,
      List<String> confirmedUserIds) {}

  /** One user's authenticated stubs; each accessor starts a fresh call deadline. */
  private record Caller(
      SessionServiceBlockingStub sessionStub, ReputationServiceBlockingStub reputationStub) {
    static Caller of(Channel sessionChannel, Channel reputationChannel, String token) {
      var headers = new Metadata();
      headers.put(AUTHORIZATION, "Bearer " + token);
      var auth = MetadataUtils.newAttachHeadersInterceptor(headers);
      return new Caller(
          SessionServiceGrpc.newBlockingStub(sessionChannel).withInterceptors(auth),
          ReputationServiceGrpc.newBlockingStub(reputationChannel).withInterceptors(auth));
    }

    SessionServiceBlockingStub sessions() {
      return sessionStub.withDeadlineAfter(CALL_TIMEOUT_SECONDS, SECONDS);
    }

    ReputationServiceBlockingStub reputation() {
      return reputationStub.withDeadlineAfter(CALL_TIMEOUT_SECONDS, SECONDS);
    }
  }

  /** The status of an RPC that had to fail, with its details (default instances when absent). */
  private record Failure(Status.Code code, ErrorInfo info, BadRequest badRequest) {}

  public static void main(String[] args) throws InterruptedException {
    try {
      System.out.println(json(run()));
    } catch (IllegalStateException e) {
      System.err.println("interop: " + e.getMessage());
      System.exit(1);
    }
  }

  private static Report run() throws InterruptedException {
    var sessionAddress = env("SESSION_ADDRESS");
    var reputationAddress = env("REPUTATION_ADDRESS");
    var ownerToken = env("OWNER_TOKEN");
    var partnerToken = env("PARTNER_TOKEN");
    var ownerId = env("OWNER_ID");
    var partnerId = env("PARTNER_ID");

    var sessionChannel = ManagedChannelBuilder.forTarget(sessionAddress).usePlaintext().build();
    var reputationChannel =
        ManagedChannelBuilder.forTarget(reputationAddress).usePlaintext().build();
    try {
      var owner = Caller.of(sessionChannel, reputationChannel, ownerToken);
      var partner = Caller.of(sessionChannel, reputationChannel, partnerToken);
      return new Report(solo(owner), paired(owner, partner, ownerId, partnerId));
    } finally {
      shutDown(sessionChannel);
      shutDown(reputationChannel);
    }
  }

  private static Solo solo(Caller owner) {
    var create =
        CreateSessionRequest.newBuilder()
            .setJobPostingId(newUuid())
            .setRequestId(newUuid())
            .build();
    var created = call("CreateSession", () -> owner.sessions().createSession(create));
    var again = call("CreateSession (repeat)", () -> owner.sessions().createSession(create));
    var id = created.getSessionId();
    var idempotent = again.getSessionId().equals(id);
    expect(idempotent, "repeated CreateSession returned %s, want %s", again.getSessionId(), id);

    var appends =
        List.of(
            AppendMessageRequest.newBuilder()
                .setSessionId(id)
                .setRole(MessageRole.MESSAGE_ROLE_QUESTION)
                .setContent("Tell me about a hard bug.")
                .build(),
            AppendMessageRequest.newBuilder()
                .setSessionId(id)
                .setRole(MessageRole.MESSAGE_ROLE_ANSWER)
                .setContent("A race in a relay.")
                .build());
    var questionNumbers = new ArrayList<Integer>();
    for (var append : appends) {
      var message =
          call("AppendMessage " + append.getRole(), () -> owner.sessions().appendMessage(append));
      questionNumbers.add(message.getQuestionNumber());
    }
    expect(
        questionNumbers.equals(List.of(1, 1)), "question numbers %s, want [1, 1]", questionNumbers);

    var pause = PauseSessionRequest.newBuilder().setSessionId(id).build();
    var paused = call("PauseSession", () -> owner.sessions().pauseSession(pause));
    var resume = ResumeSessionRequest.newBuilder().setSessionId(id).build();
    var resumed = call("ResumeSession", () -> owner.sessions().resumeSession(resume));
    var complete = CompleteSessionRequest.newBuilder().setSessionId(id).build();
    var completed = call("CompleteSession", () -> owner.sessions().completeSession(complete));
    var statuses =
        List.of(
            created.getStatusValue(),
            paused.getStatusValue(),
            resumed.getStatusValue(),
            completed.getStatusValue());
    var wantStatuses =
        Stream.of(
                SessionStatus.SESSION_STATUS_ACTIVE,
                SessionStatus.SESSION_STATUS_PAUSED,
                SessionStatus.SESSION_STATUS_ACTIVE,
                SessionStatus.SESSION_STATUS_COMPLETED)
            .map(SessionStatus::getNumber)
            .toList();
    expect(statuses.equals(wantStatuses), "statuses %s, want %s", statuses, wantStatuses);
    expect(completed.hasCompleteTime(), "CompleteSession left complete_time unset");

    var repeat =
        failure("CompleteSession (repeat)", () -> owner.sessions().completeSession(complete));
    expect(
        repeat.code() == Status.Code.FAILED_PRECONDITION
            && repeat.info().getReason().equals("SESSION_ALREADY_COMPLETED")
            && repeat.info().getDomain().equals("interview.sessions"),
        "repeated CompleteSession: %s %s/%s, want FAILED_PRECONDITION"
            + " interview.sessions/SESSION_ALREADY_COMPLETED",
        repeat.code(),
        repeat.info().getDomain(),
        repeat.info().getReason());

    var list = ListMessagesRequest.newBuilder().setSessionId(id).setPageSize(10).build();
    var listed = call("ListMessages", () -> owner.sessions().listMessages(list));
    expect(
        listed.getMessagesCount() == 2,
        "ListMessages returned %d messages, want 2",
        listed.getMessagesCount());

    var get = GetSessionRequest.newBuilder().setSessionId("not-a-uuid").build();
    var bad = failure("GetSession (bad id)", () -> owner.sessions().getSession(get));
    var fields =
        bad.badRequest().getFieldViolationsList().stream()
            .map(BadRequest.FieldViolation::getField)
            .toList();
    expect(
        bad.code() == Status.Code.INVALID_ARGUMENT
            && bad.info().getReason().equals("INVALID_ARGUMENT")
            && fields.contains("session_id"),
        "GetSession(not-a-uuid): %s %s fields %s, want INVALID_ARGUMENT INVALID_ARGUMENT naming"
            + " session_id",
        bad.code(),
        bad.info().getReason(),
        fields);

    return new Solo(
        id,
        statuses,
        idempotent,
        questionNumbers,
        listed.getMessagesCount(),
        completed.hasCompleteTime(),
        new RepeatComplete(
            repeat.code().value(), repeat.info().getReason(), repeat.info().getDomain()),
        new BadId(bad.code().value(), bad.info().getReason(), fields));
  }

  private static Paired paired(Caller owner, Caller partner, String ownerId, String partnerId) {
    var create =
        CreateSessionRequest.newBuilder()
            .setJobPostingId(newUuid())
            .setPartnerUserId(partnerId)
            .build();
    var id = call("CreateSession (paired)", () -> owner.sessions().createSession(create))
        .getSessionId();

    var ownerConfirm = ConfirmCompletionRequest.newBuilder().setSessionId(id).build();
    var first =
        call("ConfirmCompletion (owner)", () -> owner.reputation().confirmCompletion(ownerConfirm));
    expect(
        !first.getBothConfirmed() && first.getConfirmedUserIdsList().equals(List.of(ownerId)),
        "owner's confirmation: both_confirmed %b, confirmed %s; want false, [%s]",
        first.getBothConfirmed(),
        first.getConfirmedUserIdsList(),
        ownerId);

    var partnerConfirm =
        ConfirmCompletionRequest.newBuilder().setSessionId(id).setRequestId(newUuid()).build();
    var second =
        call(
            "ConfirmCompletion (partner)",
            () -> partner.reputation().confirmCompletion(partnerConfirm));
    var both = Stream.of(ownerId, partnerId).sorted().toList();
    expect(
        second.getBothConfirmed()
            && second.getReputationAwarded()
            && second.getSessionStatus() == SessionStatus.SESSION_STATUS_COMPLETED
            && second.getConfirmedUserIdsList().equals(both),
        "partner's confirmation: %s; want both confirmed, awarded, COMPLETED, confirmed %s",
        second,
        both);

    var getReputation = GetReputationRequest.newBuilder().setUserId(ownerId).build();
    var reputation =
        call("GetReputation", () -> partner.reputation().getReputation(getReputation));

    return new Paired(
        id,
        new FirstConfirm(first.getBothConfirmed(), first.getConfirmedUserIdsList()),
        new SecondConfirm(
            second.getBothConfirmed(),
            second.getReputationAwarded(),
            second.getSessionStatusValue(),
            second.getConfirmedUserIdsList()),
        Long.toString(reputation.getScore()));
  }

  /** Runs an RPC that must succeed. */
  private static <T> T call(String what, Supplier<T> rpc) {
    try {
      return rpc.get();
    } catch (StatusRuntimeException e) {
      var cause = e.getCause() == null ? "" : " (" + e.getCause().getMessage() + ")";
      throw new IllegalStateException(what + ": " + e.getMessage() + cause, e);
    }
  }

  /** Runs an RPC that must fail and returns its status code and error details. */
  private static Failure failure(String what, Runnable rpc) {
    try {
      rpc.run();
    } catch (StatusRuntimeException e) {
      var info = ErrorInfo.getDefaultInstance();
      var badRequest = BadRequest.getDefaultInstance();
      var status = StatusProto.fromThrowable(e);
      for (Any detail : status == null ? List.<Any>of() : status.getDetailsList()) {
        try {
          if (detail.is(ErrorInfo.class)) {
            info = detail.unpack(ErrorInfo.class);
          } else if (detail.is(BadRequest.class)) {
            badRequest = detail.unpack(BadRequest.class);
          }
        } catch (InvalidProtocolBufferException undecodable) {
          throw new IllegalStateException(what + ": undecodable error detail", undecodable);
        }
      }
      return new Failure(e.getStatus().getCode(), info, badRequest);
    }
    throw new IllegalStateException(what + " succeeded, want an error");
  }

  private static void shutDown(ManagedChannel channel) throws InterruptedException {
    channel.shutdown().awaitTermination(CALL_TIMEOUT_SECONDS, SECONDS);
  }

  private static String newUuid() {
    return UUID.randomUUID().toString();
  }

  private static String env(String name) {
    var value = System.getenv(name);
    expect(value != null && !value.isEmpty(), "%s is required", name);
    return value;
  }

  private static void expect(boolean ok, String format, Object... args) {
    if (!ok) {
      throw new IllegalStateException(String.format(format, args));
    }
  }

  /** Renders records (as objects with snake_case keys), lists, strings, booleans and numbers. */
  private static String json(Object value) {
    if (value instanceof Record record) {
      return Stream.of(record.getClass().getRecordComponents())
          .map(c -> quote(snakeCase(c.getName())) + ":" + json(component(record, c)))
          .collect(joining(",", "{", "}"));
    }
    if (value instanceof List<?> list) {
      return list.stream().map(Client::json).collect(joining(",", "[", "]"));
    }
    if (value instanceof String string) {
      return quote(string);
    }
    return String.valueOf(value);
  }

  private static Object component(Record record, RecordComponent component) {
    try {
      return component.getAccessor().invoke(record);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("reading " + component, e);
    }
  }

  private static String snakeCase(String camelCase) {
    return camelCase.replaceAll("([A-Z])", "_$1").toLowerCase();
  }

  private static String quote(String s) {
    var out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') {
        out.append('\\').append(c);
      } else if (c < 0x20) {
        out.append(String.format("\\u%04x", (int) c));
      } else {
        out.append(c);
      }
    }
    return out.append('"').toString();
  }
}
