"""The typed clients over real channels to the real servers: every method, tokens, deadlines, reasons.

Each test runs for the grpc.aio clients and again for their blocking twins (in a worker thread, so
the servers on this event loop keep serving).
"""

import asyncio
import inspect
import time

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from common.auth import mint
from common.client import error_reason
from reputation_service.client import ReputationClient, SyncReputationClient
from session_service.client import (
    SessionClient,
    SessionInternalClient,
    SyncSessionClient,
    SyncSessionInternalClient,
)
from tests.helpers import new_id, service_token

FLAVOURS = {
    "async": (SessionClient, SessionInternalClient, ReputationClient),
    "sync": (SyncSessionClient, SyncSessionInternalClient, SyncReputationClient),
}


class Tokens:
    """A token provider that mints a fresh user token for `subject` on each call and counts the calls."""

    def __init__(self, settings, subject):
        self.settings, self.subject = settings, subject
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return mint(self.settings, self.settings.key, self.subject, 300)


class Clients:
    """Opens clients of one flavour against the test servers and closes them all afterwards."""

    def __init__(self, flavour, session_target, reputation_target):
        self.flavour = flavour
        self._classes = FLAVOURS[flavour]
        self._targets = (session_target, session_target, reputation_target)
        self._opened = []

    def _open(self, index, tokens, **options):
        client = self._classes[index].connect(self._targets[index], tokens, **options)
        self._opened.append(client)
        return client

    def sessions(self, tokens, **options):
        return self._open(0, tokens, **options)

    def internal(self, tokens, **options):
        return self._open(1, tokens, **options)

    def reputation(self, tokens, **options):
        return self._open(2, tokens, **options)

    async def close(self):
        for client in self._opened:
            closed = client.close()
            if inspect.isawaitable(closed):
                await closed


async def call(method, *args, **kwargs):
    """Awaits an async client's method; runs a blocking client's in a thread."""
    if inspect.iscoroutinefunction(method):
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)


async def failure(method, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        await call(method, *args, **kwargs)
    return caught.value


@pytest.fixture(params=sorted(FLAVOURS))
async def clients(request, session_server, reputation_server):
    opened = Clients(request.param, f"127.0.0.1:{session_server.port}", f"127.0.0.1:{reputation_server.port}")
    yield opened
    await opened.close()


async def test_every_method_returns_the_servers_real_results(clients, jwt_settings, service_keys):
    alice, bob, job = new_id(), new_id(), new_id()
    sessions = clients.sessions(Tokens(jwt_settings, alice))
    internal = clients.internal(lambda: service_token(service_keys))
    alice_reputation = clients.reputation(Tokens(jwt_settings, alice))
    bob_reputation = clients.reputation(Tokens(jwt_settings, bob))

    paired = await call(sessions.create_session, job, partner_user_id=bob, request_id=new_id())
    assert (paired.user_id, paired.partner_user_id, paired.status) == (alice, bob, pb.SESSION_STATUS_ACTIVE)
    assert await call(sessions.get_session, paired.session_id) == paired
    assert (await call(sessions.pause_session, paired.session_id)).status == pb.SESSION_STATUS_PAUSED
    assert (await call(sessions.resume_session, paired.session_id)).status == pb.SESSION_STATUS_ACTIVE
    question = await call(sessions.append_message, paired.session_id, pb.MESSAGE_ROLE_QUESTION, "Why?")
    answer = await call(
        sessions.append_message, paired.session_id, pb.MESSAGE_ROLE_ANSWER, "Because.", new_id()
    )
    assert (question.question_number, answer.question_number, answer.content) == (1, 1, "Because.")
    first_page = await call(sessions.list_messages, paired.session_id, page_size=1)
    assert [message.message_id for message in first_page.messages] == [question.message_id]
    last_page = await call(sessions.list_messages, paired.session_id, 1, first_page.next_page_token)
    assert ([m.message_id for m in last_page.messages], last_page.next_page_token) == (
        [answer.message_id],
        "",
    )
    looked_up = await call(internal.lookup_session, paired.session_id)
    assert (looked_up.user_id, looked_up.current_question_number) == (alice, 1)

    alone = await call(alice_reputation.confirm_completion, paired.session_id)
    assert (list(alone.confirmed_user_ids), alone.both_confirmed) == ([alice], False)
    both = await call(bob_reputation.confirm_completion, paired.session_id, request_id=new_id())
    assert (both.both_confirmed, both.reputation_awarded) == (True, True)
    assert both.session_status == pb.SESSION_STATUS_COMPLETED
    assert await call(alice_reputation.get_confirmation, paired.session_id) == both
    mine = await call(bob_reputation.get_reputation)
    assert (mine.user_id, mine.score, mine.confirmed_sessions) == (bob, 1, 1)
    assert (await call(bob_reputation.get_reputation, alice)).score == 1
    events = await call(alice_reputation.list_reputation_events, bob, page_size=10)
    assert [(e.session_id, e.delta) for e in events.events] == [(paired.session_id, 1)]

    solo = await call(sessions.create_session, job)
    completed = await call(sessions.complete_session, solo.session_id)
    assert completed.status == pb.SESSION_STATUS_COMPLETED and completed.HasField("complete_time")
    retake = await call(sessions.retake_session, solo.session_id, request_id=new_id())
    assert (retake.original_session_id, retake.retake_number) == (solo.session_id, 2)
    chain = await call(sessions.list_retakes, retake.session_id)
    assert [s.session_id for s in chain.sessions] == [solo.session_id, retake.session_id]
    done = await call(sessions.list_sessions, pb.SESSION_STATUS_COMPLETED)
    assert [s.session_id for s in done.sessions] == [solo.session_id, paired.session_id]
    everything = await call(sessions.list_sessions, page_size=2)
    assert len(everything.sessions) == 2 and everything.next_page_token

    other = await call(sessions.create_session, new_id(), partner_user_id=bob)
    closed = await call(internal.complete_paired_session, other.session_id)
    assert closed.status == pb.SESSION_STATUS_COMPLETED
    released = await call(internal.release_job_posting, job)
    assert released.sessions_updated == 3  # the paired session, the solo one and its retake
    assert (await call(sessions.get_session, retake.session_id)).job_posting_id == ""


async def test_the_token_provider_is_asked_on_every_call(clients, jwt_settings):
    user = new_id()
    tokens = Tokens(jwt_settings, user)
    sessions = clients.sessions(tokens)
    created = await call(sessions.create_session, new_id())
    for _ in range(3):
        await call(sessions.get_session, created.session_id)
    assert tokens.calls == 4

    # A provider whose token changes between calls: the next call carries the new (here: bad) one.
    current = {"token": tokens()}
    rotating = clients.sessions(lambda: current["token"])
    assert (await call(rotating.get_session, created.session_id)).user_id == user
    current["token"] = "not-a-jwt"
    error = await failure(rotating.get_session, created.session_id)
    assert (error.code(), error_reason(error)) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_a_call_that_outlives_its_deadline_fails_with_deadline_exceeded(clients, jwt_settings, db):
    tokens = Tokens(jwt_settings, new_id())
    created = await call(clients.sessions(tokens).create_session, new_id())
    impatient = clients.sessions(tokens, deadline=0.3)
    async with db.acquire() as conn, conn.transaction():
        # The row lock makes PauseSession's UPDATE wait past the client's deadline.
        await conn.execute(
            "SELECT 1 FROM sessions.sessions WHERE session_id = $1 FOR UPDATE", created.session_id
        )
        started = time.monotonic()
        error = await failure(impatient.pause_session, created.session_id)
        elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 < elapsed < 2
    assert error_reason(error) is None  # the client gave up: no server status, no ErrorInfo


@pytest.mark.parametrize(
    ("service", "method", "reason"),
    [
        ("sessions", "get_session", "SESSION_NOT_FOUND"),
        ("sessions", "complete_session", "SESSION_NOT_FOUND"),
        ("reputation", "get_confirmation", "SESSION_NOT_FOUND"),
    ],
)
async def test_error_reason_reads_the_error_info_of_a_failed_call(
    clients, jwt_settings, service, method, reason
):
    client = getattr(clients, service)(Tokens(jwt_settings, new_id()))
    error = await failure(getattr(client, method), new_id())
    assert (error.code(), error_reason(error)) == (grpc.StatusCode.NOT_FOUND, reason)


async def test_error_reason_names_a_broken_rule(clients, jwt_settings):
    owner = new_id()
    sessions = clients.sessions(Tokens(jwt_settings, owner))
    reputation = clients.reputation(Tokens(jwt_settings, owner))
    solo = await call(sessions.create_session, new_id())
    error = await failure(reputation.confirm_completion, solo.session_id)
    assert (error.code(), error_reason(error)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_A_PAIRED_SESSION",
    )
