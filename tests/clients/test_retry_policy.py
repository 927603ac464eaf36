"""The clients' channels retry UNAVAILABLE through gRPC's own retry policy, and nothing else."""

import asyncio

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc

from common.client import RetryPolicy, error_reason
from session_service.client import SessionClient, SyncSessionClient

SESSION_ID = "3f2b8c4e-9a1d-4e7b-8c2f-5d6a7b8c9d0e"


class Flaky(pb_grpc.SessionServiceServicer):
    """GetSession fails with `code` for the first `failures` attempts, then answers; counts attempts."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.UNAVAILABLE
        self.failures = 0
        self.attempts = 0
        self.authorization: list[str] = []

    async def GetSession(self, request, context):
        self.attempts += 1
        self.authorization.append(dict(context.invocation_metadata())["authorization"])
        if self.attempts <= self.failures:
            await context.abort(self.code, "not now")
        return pb.Session(session_id=request.session_id)


@pytest.fixture
async def flaky():
    servicer = Flaky()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_SessionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_unavailable_is_retried_by_the_channel_until_it_succeeds(flaky):
    servicer, target = flaky
    servicer.failures = 2
    async with SessionClient.connect(target, lambda: "token") as client:
        session = await client.get_session(SESSION_ID)
    assert session.session_id == SESSION_ID
    assert servicer.attempts == 3
    # gRPC resends the same call: one token asked for, carried by every attempt.
    assert servicer.authorization == ["Bearer token"] * 3


async def test_unavailable_past_max_attempts_reaches_the_caller(flaky):
    servicer, target = flaky
    servicer.failures = 10
    async with SessionClient.connect(target, lambda: "token", retry=RetryPolicy(max_attempts=3)) as client:
        with pytest.raises(grpc.RpcError) as caught:
            await client.get_session(SESSION_ID)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert servicer.attempts == 3


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL],
)
async def test_other_codes_are_not_retried(flaky, code):
    servicer, target = flaky
    servicer.code, servicer.failures = code, 1
    async with SessionClient.connect(target, lambda: "token") as client:
        with pytest.raises(grpc.RpcError) as caught:
            await client.get_session(SESSION_ID)
    assert (caught.value.code(), servicer.attempts) == (code, 1)
    assert error_reason(caught.value) is None  # a bare status, no ErrorInfo


async def test_a_channel_without_the_policy_does_not_retry(flaky):
    """The retries above come from the service config, not from gRPC's defaults."""
    servicer, target = flaky
    servicer.failures = 1
    async with SessionClient(grpc.aio.insecure_channel(target), lambda: "token") as client:
        with pytest.raises(grpc.RpcError) as caught:
            await client.get_session(SESSION_ID)
    assert (caught.value.code(), servicer.attempts) == (grpc.StatusCode.UNAVAILABLE, 1)


async def test_the_blocking_client_gets_the_same_policy(flaky):
    servicer, target = flaky
    servicer.failures = 2
    with SyncSessionClient.connect(target, lambda: "token") as client:
        # Blocking on the loop thread would stall the in-test server: call from a worker thread.
        session = await asyncio.to_thread(client.get_session, SESSION_ID)
    assert (session.session_id, servicer.attempts) == (SESSION_ID, 3)
