"""The blocking clients on grpcio-testing's fake channel: exact requests, token, deadline, replies, errors.

grpcio-testing runs this code for real (ARCHITECTURE §8): the client blocks in a thread until the
test takes its request from the fake channel and terminates the call.
"""

import concurrent.futures
import threading

import grpc
import grpc_testing
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.client import error_reason
from reputation_service.client import SyncReputationClient
from session_service.client import SyncSessionClient, SyncSessionInternalClient

SESSIONS = pb.DESCRIPTOR.services_by_name["SessionService"]
INTERNAL = pb.DESCRIPTOR.services_by_name["SessionInternalService"]
REPUTATION = rpb.DESCRIPTOR.services_by_name["ReputationService"]
SID, JOB, USER, REQUEST = (f"{n}0000000-0000-4000-8000-000000000000" for n in "1234")
SESSION = pb.Session(session_id=SID, user_id=USER, status=pb.SESSION_STATUS_ACTIVE)
CONFIRMATION = rpb.Confirmation(session_id=SID, confirmed_user_ids=[USER])

# The service each client calls; the RPC is named by its request type (GetSessionRequest -> GetSession).
SERVICE_OF = {
    SyncSessionClient: SESSIONS,
    SyncSessionInternalClient: INTERNAL,
    SyncReputationClient: REPUTATION,
}
# client class, method, arguments, the exact request it must send, a reply
CASES = [
    (
        SyncSessionClient,
        "create_session",
        (JOB, USER, REQUEST),
        pb.CreateSessionRequest(job_posting_id=JOB, partner_user_id=USER, request_id=REQUEST),
        SESSION,
    ),
    (SyncSessionClient, "get_session", (SID,), pb.GetSessionRequest(session_id=SID), SESSION),
    (
        SyncSessionClient,
        "list_sessions",
        (pb.SESSION_STATUS_PAUSED, 20, "next"),
        pb.ListSessionsRequest(status=pb.SESSION_STATUS_PAUSED, page_size=20, page_token="next"),
        pb.ListSessionsResponse(sessions=[SESSION], next_page_token="more"),
    ),
    (SyncSessionClient, "pause_session", (SID,), pb.PauseSessionRequest(session_id=SID), SESSION),
    (SyncSessionClient, "resume_session", (SID,), pb.ResumeSessionRequest(session_id=SID), SESSION),
    (SyncSessionClient, "complete_session", (SID,), pb.CompleteSessionRequest(session_id=SID), SESSION),
    (
        SyncSessionClient,
        "retake_session",
        (SID, REQUEST),
        pb.RetakeSessionRequest(session_id=SID, request_id=REQUEST),
        SESSION,
    ),
    (
        SyncSessionClient,
        "list_retakes",
        (SID, 5, "next"),
        pb.ListRetakesRequest(session_id=SID, page_size=5, page_token="next"),
        pb.ListRetakesResponse(sessions=[SESSION], next_page_token="more"),
    ),
    (
        SyncSessionClient,
        "append_message",
        (SID, pb.MESSAGE_ROLE_QUESTION, "Why?", REQUEST),
        pb.AppendMessageRequest(
            session_id=SID, role=pb.MESSAGE_ROLE_QUESTION, content="Why?", request_id=REQUEST
        ),
        pb.SessionMessage(session_id=SID, content="Why?", question_number=1),
    ),
    (
        SyncSessionClient,
        "list_messages",
        (SID, 5, "next"),
        pb.ListMessagesRequest(session_id=SID, page_size=5, page_token="next"),
        pb.ListMessagesResponse(messages=[pb.SessionMessage(session_id=SID)]),
    ),
    (SyncSessionInternalClient, "lookup_session", (SID,), pb.LookupSessionRequest(session_id=SID), SESSION),
    (
        SyncSessionInternalClient,
        "complete_paired_session",
        (SID,),
        pb.CompletePairedSessionRequest(session_id=SID),
        SESSION,
    ),
    (
        SyncSessionInternalClient,
        "release_job_posting",
        (JOB,),
        pb.ReleaseJobPostingRequest(job_posting_id=JOB),
        pb.ReleaseJobPostingResponse(sessions_updated=2),
    ),
    (
        SyncReputationClient,
        "confirm_completion",
        (SID, REQUEST),
        rpb.ConfirmCompletionRequest(session_id=SID, request_id=REQUEST),
        CONFIRMATION,
    ),
    (
        SyncReputationClient,
        "get_confirmation",
        (SID,),
        rpb.GetConfirmationRequest(session_id=SID),
        CONFIRMATION,
    ),
    (
        SyncReputationClient,
        "get_reputation",
        (USER,),
        rpb.GetReputationRequest(user_id=USER),
        rpb.Reputation(user_id=USER, score=3),
    ),
    (
        SyncReputationClient,
        "list_reputation_events",
        (USER, 5, "next"),
        rpb.ListReputationEventsRequest(user_id=USER, page_size=5, page_token="next"),
        rpb.ListReputationEventsResponse(events=[rpb.ReputationEvent(user_id=USER, delta=1)]),
    ),
]


class TimeoutRecorder:
    """Passes calls on to the fake channel, noting each call's timeout: grpc_testing accepts and drops it
    (its invoke_rpc ignores `timeout`, and its Call.time_remaining() raises NotImplementedError)."""

    def __init__(self, channel):
        self._channel = channel
        self.timeouts = []

    def unary_unary(self, method, *args, **kwargs):
        multicallable = self._channel.unary_unary(method, *args, **kwargs)

        def call(request, timeout=None, **rest):
            self.timeouts.append(timeout)
            return multicallable(request, timeout=timeout, **rest)

        return call

    def close(self):
        self._channel.close()


@pytest.fixture
def fake():
    channel = grpc_testing.channel([SESSIONS, INTERNAL, REPUTATION], grpc_testing.strict_real_time())
    return channel, TimeoutRecorder(channel)


def in_thread(function, *args):
    """Runs `function` in a daemon thread, so a call nobody answers cannot hang the test run."""
    future = concurrent.futures.Future()

    def run():
        try:
            future.set_result(function(*args))
        except BaseException as error:  # handed to the test through the future
            future.set_exception(error)

    threading.Thread(target=run, daemon=True).start()
    return future


def take(channel, method, pending_call):
    """The fake server's end of `method`; fails instead of hanging when the client never calls it."""
    taken = in_thread(channel.take_unary_unary, method)
    done, _ = concurrent.futures.wait(
        [taken, pending_call], timeout=5, return_when=concurrent.futures.FIRST_COMPLETED
    )
    if taken not in done:
        pending_call.result(timeout=0)  # the client's own error, if it raised before calling
        raise AssertionError(f"no {method.full_name} call reached the channel")
    return taken.result()


@pytest.mark.parametrize(
    ("client_class", "method", "args", "expected", "reply"), CASES, ids=[c[1] for c in CASES]
)
def test_each_method_sends_its_exact_request_with_token_and_deadline(
    fake, client_class, method, args, expected, reply
):
    channel, recorder = fake
    client = client_class(recorder, lambda: "token-1", deadline=2.5)
    rpc = SERVICE_OF[client_class].methods_by_name[type(expected).__name__.removesuffix("Request")]
    pending = in_thread(getattr(client, method), *args)
    metadata, request, server_side = take(channel, rpc, pending)
    server_side.terminate(reply, (), grpc.StatusCode.OK, "")

    assert pending.result(timeout=5) == reply
    assert request == expected
    assert [value for key, value in metadata if key == "authorization"] == ["Bearer token-1"]
    assert recorder.timeouts == [2.5]


def test_each_call_asks_the_token_provider_again(fake):
    channel, recorder = fake
    tokens = iter(["first", "second"])
    client = SyncSessionClient(recorder, lambda: next(tokens))
    seen = []
    for _ in range(2):
        pending = in_thread(client.get_session, SID)
        metadata, _, server_side = take(channel, SESSIONS.methods_by_name["GetSession"], pending)
        server_side.terminate(SESSION, (), grpc.StatusCode.OK, "")
        pending.result(timeout=5)
        seen.append(dict(metadata)["authorization"])
    assert seen == ["Bearer first", "Bearer second"]
    assert recorder.timeouts == [5.0, 5.0]  # the default deadline


def test_a_rich_error_raises_and_error_reason_decodes_it(fake):
    channel, recorder = fake
    client = SyncSessionClient(recorder, lambda: "token-1")
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message="no such session")
    status.details.add().Pack(
        error_details_pb2.ErrorInfo(
            reason="SESSION_NOT_FOUND", domain="interview.sessions", metadata={"session_id": SID}
        )
    )
    rich = rpc_status.to_status(status)

    pending = in_thread(client.get_session, SID)
    _, _, server_side = take(channel, SESSIONS.methods_by_name["GetSession"], pending)
    server_side.terminate(None, rich.trailing_metadata, rich.code, rich.details)

    with pytest.raises(grpc.RpcError) as caught:
        pending.result(timeout=5)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.NOT_FOUND, "no such session")
    assert error_reason(caught.value) == "SESSION_NOT_FOUND"


def test_error_reason_is_none_without_error_info(fake):
    channel, recorder = fake
    client = SyncSessionClient(recorder, lambda: "token-1")
    pending = in_thread(client.get_session, SID)
    _, _, server_side = take(channel, SESSIONS.methods_by_name["GetSession"], pending)
    server_side.terminate(None, (), grpc.StatusCode.UNAVAILABLE, "down")
    with pytest.raises(grpc.RpcError) as caught:
        pending.result(timeout=5)
    assert (caught.value.code(), error_reason(caught.value)) == (grpc.StatusCode.UNAVAILABLE, None)
