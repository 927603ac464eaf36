"""A first confirmation (or rating) needs the session service: when it is down, nothing is recorded."""

from __future__ import annotations

import grpc
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc

from reputation_service import api as reputation_api
from tests.helpers import expect_error, new_id, user_metadata
from tests.servers import reputation_config_for


async def _closed_port() -> int:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.stop(None)  # never started: nothing listens on the port
    return port


async def test_a_first_confirmation_or_a_rating_while_the_session_service_is_down_records_nothing(
    database_url, keys, jwt_settings, db
):
    app = reputation_api.create_server(
        reputation_config_for(database_url, keys, f"127.0.0.1:{await _closed_port()}")
    )
    await app.start()
    session_id, user = new_id(), new_id()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = reputation_pb2_grpc.ReputationServiceStub(channel)
            for call in (
                stub.ConfirmCompletion(
                    rpb.ConfirmCompletionRequest(session_id=session_id, request_id=new_id()),
                    metadata=user_metadata(jwt_settings, user),
                ),
                stub.GetConfirmation(
                    rpb.GetConfirmationRequest(session_id=session_id),
                    metadata=user_metadata(jwt_settings, user),
                ),
                stub.RatePartner(
                    rpb.RatePartnerRequest(session_id=session_id, rating=5, request_id=new_id()),
                    metadata=user_metadata(jwt_settings, user),
                ),
            ):
                error = await expect_error(call, grpc.StatusCode.UNAVAILABLE, "SESSIONS_UNAVAILABLE")
                assert error.domain == "interview.reputation"
                assert error.metadata == {"session_id": session_id}
    finally:
        await app.stop(grace=1)
    for table, column, value in (
        ("paired_sessions", "session_id", session_id),
        ("confirmations", "session_id", session_id),
        ("confirmation_requests", "user_id", user),
        ("ratings", "session_id", session_id),
    ):
        assert await db.fetchval(f"SELECT count(*) FROM reputation.{table} WHERE {column} = $1", value) == 0
