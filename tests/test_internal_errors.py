"""A bug answers INTERNAL with a correlation id, logged with the details; the caller learns nothing more."""

from __future__ import annotations

import logging

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from reputation_service import api as reputation_api
from session_service import api as session_api
from tests.helpers import expect_error, new_id, user_metadata
from tests.servers import new_database, reputation_config_for, session_config_for


@pytest.fixture(scope="module")
async def unmigrated_url(postgres_url: str) -> str:
    """A database without the services' tables: every query fails the way a bug would."""
    return await new_database(postgres_url, "empty")


async def _check_internal(app, make_call, domain: str, caplog) -> None:
    caplog.set_level(logging.INFO, logger="rpc")
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            error = await expect_error(make_call(channel), grpc.StatusCode.INTERNAL, "INTERNAL")
    finally:
        await app.stop(grace=1)
    assert error.domain == domain
    assert error.message == "internal error"
    correlation_id = error.metadata["correlation_id"]
    assert set(error.metadata) == {"correlation_id"}
    logged = [
        r
        for r in caplog.records
        if correlation_id in r.getMessage()
        or (isinstance(r.msg, dict) and r.msg.get("correlation_id") == correlation_id)
    ]
    assert any(r.exc_info for r in logged), "the exception is logged under the correlation id"


async def test_an_unexpected_session_service_failure_is_internal_with_a_correlation_id(
    unmigrated_url, keys, jwt_settings, caplog
):
    app = session_api.create_server(session_config_for(unmigrated_url, keys, pool_size=2))

    def call(channel):
        return sessions_pb2_grpc.SessionServiceStub(channel).GetSession(
            pb.GetSessionRequest(session_id=new_id()), metadata=user_metadata(jwt_settings, new_id())
        )

    await _check_internal(app, call, "interview.sessions", caplog)


async def test_an_unexpected_reputation_service_failure_is_internal_with_a_correlation_id(
    unmigrated_url, keys, jwt_settings, session_server, caplog
):
    app = reputation_api.create_server(
        reputation_config_for(unmigrated_url, keys, f"127.0.0.1:{session_server.port}")
    )

    def call(channel):
        return reputation_pb2_grpc.ReputationServiceStub(channel).GetReputation(
            rpb.GetReputationRequest(), metadata=user_metadata(jwt_settings, new_id())
        )

    await _check_internal(app, call, "interview.reputation", caplog)
