"""Both services at start-up: bad settings, and health while the database is down."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from common.config import JwtSettings
from reputation_service import api as reputation_api
from session_service import api as session_api
from tests.helpers import expect_error, new_id, user_metadata
from tests.servers import reputation_config_for, session_config_for

UNREACHABLE_DB = "postgresql://postgres@/postgres?host=/nonexistent-socket-dir"
UNSET = None
LISTEN = {
    "session_service": {"SESSION_LISTEN": "127.0.0.1:0", "SESSION_DATABASE_URL": UNREACHABLE_DB},
    "reputation_service": {"REPUTATION_LISTEN": "127.0.0.1:0", "REPUTATION_DATABASE_URL": UNREACHABLE_DB},
}
NOT_A_FILE = "/nonexistent/file.pem"


@pytest.mark.parametrize(
    ("package", "extra", "variable", "value"),
    [
        ("session_service", {}, "SESSION_DATABASE_URL", UNSET),
        ("session_service", {}, "SESSION_DATABASE_URL", "mysql://db/sessions"),
        ("session_service", {}, "JWT_KEY", UNSET),
        ("session_service", {}, "JWT_KEY", "short"),
        ("session_service", {}, "JWT_ALGORITHM", "none"),
        ("session_service", {}, "JWT_MAX_LIFETIME_SECONDS", "0"),
        ("session_service", {"JWT_KEY": ""}, "JWT_JWKS_FILE", NOT_A_FILE),
        ("session_service", {"JWT_KEY": "", "JWT_ALGORITHM": "EdDSA"}, "JWT_JWKS_URL", "file:///etc/passwd"),
        ("session_service", {"JWT_ALGORITHM": "EdDSA"}, "JWT_JWKS_URL", "https://idp.example/jwks"),
        ("session_service", {}, "SESSION_LISTEN", "localhost"),
        ("session_service", {}, "SESSION_DB_POOL_SIZE", "zero"),
        ("session_service", {}, "SESSION_METRICS_LISTEN", "9151"),
        ("session_service", {}, "SESSION_WORKERS", "two"),
        ("session_service", {}, "SERVICE_TOKEN_JWKS_FILE", UNSET),
        ("session_service", {}, "SERVICE_TOKEN_JWKS_FILE", NOT_A_FILE),
        ("session_service", {}, "SERVICE_TOKEN_JWKS_FILE", "/etc/hostname"),
        ("session_service", {}, "PAGE_TOKEN_SECRET", UNSET),
        ("session_service", {}, "PAGE_TOKEN_SECRET", "short"),
        ("session_service", {}, "TLS_CERT_FILE", NOT_A_FILE),
        ("session_service", {}, "TLS_CERT_FILE", "/etc/hostname"),
        ("session_service", {}, "TLS_CLIENT_CA_FILE", "/etc/hostname"),
        ("reputation_service", {}, "REPUTATION_DATABASE_URL", UNSET),
        ("reputation_service", {}, "REPUTATION_LISTEN", "127.0.0.1:99999"),
        ("reputation_service", {}, "SESSION_SERVICE_TARGET", "no-port"),
        ("reputation_service", {}, "JWT_KEY", UNSET),
        ("reputation_service", {"JWT_ALGORITHM": "RS256"}, "JWT_KEY", "not a pem"),
        ("reputation_service", {}, "OUTBOX_LEASE_SECONDS", "-1"),
        ("reputation_service", {}, "RELAY_MAX_BACKOFF_SECONDS", "soon"),
        ("reputation_service", {}, "REPUTATION_METRICS_LISTEN", "127.0.0.1:70000"),
        ("reputation_service", {}, "SERVICE_SIGNING_KEY_FILE", UNSET),
        ("reputation_service", {}, "SERVICE_SIGNING_KEY_FILE", "/etc/hostname"),
        ("reputation_service", {}, "SERVICE_SIGNING_KEY_ID", UNSET),
        ("reputation_service", {}, "PAGE_TOKEN_SECRET", UNSET),
        ("reputation_service", {}, "TLS_CA_FILE", "/etc/hostname"),
    ],
)
def test_a_missing_or_invalid_setting_stops_start_up_with_one_line_naming_it(
    keys, package, extra, variable, value
):
    env = {**keys.env(), "PATH": "/usr/bin:/bin", **LISTEN[package], **extra}
    env = {key: val for key, val in env.items() if key != variable}
    if value is not UNSET:
        env[variable] = value
    result = subprocess.run(
        [sys.executable, "-m", package], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr


async def _health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return reply.status


async def test_the_session_service_is_not_serving_and_unavailable_while_its_database_is_down(
    keys, jwt_settings: JwtSettings
):
    app = session_api.create_server(session_config_for(UNREACHABLE_DB, keys, pool_size=2))
    await app.start()
    try:
        assert await _health(app.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            call = sessions_pb2_grpc.SessionServiceStub(channel).GetSession(
                pb.GetSessionRequest(session_id=new_id()), metadata=user_metadata(jwt_settings, new_id())
            )
            error = await expect_error(call, grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
            assert error.domain == "interview.sessions"
            assert "postgres" not in error.message.lower()
    finally:
        await app.stop(grace=1)


async def test_the_reputation_service_is_not_serving_and_unavailable_while_its_database_is_down(
    keys, jwt_settings: JwtSettings, session_server
):
    app = reputation_api.create_server(
        reputation_config_for(UNREACHABLE_DB, keys, f"127.0.0.1:{session_server.port}")
    )
    await app.start()
    try:
        assert await _health(app.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            call = reputation_pb2_grpc.ReputationServiceStub(channel).GetReputation(
                rpb.GetReputationRequest(), metadata=user_metadata(jwt_settings, new_id())
            )
            error = await expect_error(call, grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
            assert error.domain == "interview.reputation"
    finally:
        await app.stop(grace=1)
