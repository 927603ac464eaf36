"""Keys rotate under a running server: a JWK Set file or URL gains key B and B's tokens are accepted,
loses key A and A's tokens are refused, with no restart. User tokens (JWT_JWKS_FILE, JWT_JWKS_URL)
and service tokens (SERVICE_TOKEN_JWKS_FILE) alike.

No sleeps: a key that is added must be usable at once for a file (an unknown kid re-reads it) and
within the refresh for a URL; a key that is removed must stop working within a few seconds, which
the tests wait for with a deadline."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc

from common.auth.signing import public_jwk
from common.config import JwtSettings
from session_service import api as session_api
from tests.helpers import (
    StackKeys,
    bearer,
    expect_error,
    new_id,
    new_private_key,
    signed_service_token,
    user_metadata,
    wait_for,
    write_jwks,
)
from tests.servers import session_config_for, wait_serving

Metadata = tuple[tuple[str, str], ...]
# A removed key must stop working within this (the file is looked at about once a second).
REMOVAL_DEADLINE_SECONDS = 5.0
ISSUER, AUDIENCE = "rotation-idp", "interview"
A, B = new_private_key(), new_private_key()


def eddsa_settings(**where: Any) -> JwtSettings:
    return JwtSettings(algorithm="EdDSA", key="", issuer=ISSUER, audience=AUDIENCE, **where)


def rotator_token(key: Any, kid: str) -> Metadata:
    """A sessions.internal service token of `service:rotator`, signed with `key` under `kid`, as
    call metadata."""
    return bearer(signed_service_token(key, kid, name="rotator"))


@dataclass
class Server:
    port: int
    sessions: pb_grpc.SessionServiceStub
    internal: pb_grpc.SessionInternalServiceStub


@asynccontextmanager
async def session_server_with(database_url: str, keys: StackKeys, **overrides: Any) -> AsyncIterator[Server]:
    app = session_api.create_server(session_config_for(database_url, keys, **overrides))
    await app.start()
    try:
        await wait_serving(f"127.0.0.1:{app.port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield Server(
                app.port, pb_grpc.SessionServiceStub(channel), pb_grpc.SessionInternalServiceStub(channel)
            )
    finally:
        await app.stop(grace=1)


class UserProbe:
    """One user's session on the server, and whether a given token may read it."""

    def __init__(self, server: Server, session_id: str) -> None:
        self.server = server
        self.session_id = session_id

    @classmethod
    async def create(cls, server: Server, metadata: Metadata) -> UserProbe:
        created = await server.sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id()), metadata=metadata
        )
        return cls(server, created.session_id)

    async def accepted(self, metadata: Metadata) -> bool:
        """True if the token reads the session, False if it is UNAUTHENTICATED (anything else fails)."""
        try:
            await self.server.sessions.GetSession(
                pb.GetSessionRequest(session_id=self.session_id), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            return False
        return True


class ServiceProbe(UserProbe):
    async def accepted(self, metadata: Metadata) -> bool:
        try:
            await self.server.internal.LookupSession(
                pb.LookupSessionRequest(session_id=self.session_id), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            return False
        return True


async def refused_within(probe: UserProbe, metadata: Metadata, what: str) -> None:
    async def refused() -> bool:
        return not await probe.accepted(metadata)

    await wait_for(refused, within=REMOVAL_DEADLINE_SECONDS, what=what)


# --- JWT_JWKS_FILE -------------------------------------------------------------------------------


async def test_a_jwks_file_gaining_key_b_accepts_b_at_once_and_losing_key_a_refuses_a(
    database_url, keys, tmp_path
):
    jwks = tmp_path / "idp-jwks.json"
    write_jwks(jwks, {"a": A})
    settings = eddsa_settings(jwks_file=str(jwks))
    user = new_id()
    token_a = user_metadata(settings, user, key=A, key_id="a")
    token_b = user_metadata(settings, user, key=B, key_id="b")

    async with session_server_with(database_url, keys, jwt=settings) as server:
        probe = await UserProbe.create(server, token_a)
        assert await probe.accepted(token_a)
        assert not await probe.accepted(token_b)

        write_jwks(jwks, {"a": A, "b": B})
        # An unknown kid re-reads the file at once: no waiting for the periodic check.
        assert await probe.accepted(token_b)
        assert await probe.accepted(token_a)

        write_jwks(jwks, {"b": B})
        await refused_within(probe, token_a, "the token of removed key A to be refused")
        assert not await probe.accepted(user_metadata(settings, user, key=A, key_id="a")), (
            "a fresh token of A"
        )
        assert await probe.accepted(token_b)


async def test_a_jwks_file_half_written_keeps_the_keys_it_had(database_url, keys, tmp_path):
    jwks = tmp_path / "idp-jwks.json"
    write_jwks(jwks, {"a": A})
    settings = eddsa_settings(jwks_file=str(jwks))
    user = new_id()
    token_a = user_metadata(settings, user, key=A, key_id="a")
    token_b = user_metadata(settings, user, key=B, key_id="b")

    async with session_server_with(database_url, keys, jwt=settings) as server:
        probe = await UserProbe.create(server, token_a)
        jwks.write_text('{"keys": [')
        # The unknown kid forces a re-read of the broken file, which must not drop key A.
        assert not await probe.accepted(token_b)
        assert await probe.accepted(user_metadata(settings, user, key=A, key_id="a"))

        write_jwks(jwks, {"a": A, "b": B})
        assert await probe.accepted(token_b)


async def test_a_flood_of_unknown_kids_does_not_delay_the_removal_of_a_key(database_url, keys, tmp_path):
    """Tokens with a kid nobody knows are free to send: they must not push the periodic re-read
    of the JWK Set into the future, or an attacker could keep a revoked key alive."""
    jwks = tmp_path / "idp-jwks.json"
    write_jwks(jwks, {"a": A, "b": B})
    settings = eddsa_settings(jwks_file=str(jwks))
    user = new_id()
    token_a = user_metadata(settings, user, key=A, key_id="a")
    stranger = new_private_key()

    async with session_server_with(database_url, keys, jwt=settings) as server:
        probe = await UserProbe.create(server, token_a)
        for _ in range(60):
            assert not await probe.accepted(user_metadata(settings, user, key=stranger, key_id="nobody"))

        write_jwks(jwks, {"b": B})
        await refused_within(probe, token_a, "removed key A to be refused after a flood of unknown kids")


# --- JWT_JWKS_URL --------------------------------------------------------------------------------


class JwksEndpoint:
    """A local identity provider's JWK Set URL; `publish` replaces what it serves."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.fetches = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.fetches += 1
                body = endpoint.body
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, keys: dict[str, Any]) -> None:
        self.body = json.dumps({"keys": [public_jwk(key, kid) for kid, key in keys.items()]}).encode()


@pytest.fixture
def jwks_endpoint() -> Iterator[JwksEndpoint]:
    endpoint = JwksEndpoint()
    endpoint.thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()
    endpoint.thread.join(timeout=5)


async def test_a_jwks_url_gaining_key_b_accepts_b_and_losing_key_a_refuses_a(
    database_url, keys, jwks_endpoint
):
    jwks_endpoint.publish({"a": A})
    settings = eddsa_settings(jwks_url=jwks_endpoint.url, jwks_refresh_seconds=0.5)
    user = new_id()
    token_a = user_metadata(settings, user, key=A, key_id="a")
    token_b = user_metadata(settings, user, key=B, key_id="b")

    async with session_server_with(database_url, keys, jwt=settings) as server:
        probe = await UserProbe.create(server, token_a)
        assert await probe.accepted(token_a)
        assert jwks_endpoint.fetches >= 1

        jwks_endpoint.publish({"a": A, "b": B})

        async def b_accepted() -> bool:
            return await probe.accepted(token_b)

        await wait_for(b_accepted, within=REMOVAL_DEADLINE_SECONDS, what="key B from the URL to be accepted")

        jwks_endpoint.publish({"b": B})

        async def fresh_a_refused() -> bool:
            return not await probe.accepted(user_metadata(settings, user, key=A, key_id="a"))

        await wait_for(fresh_a_refused, within=REMOVAL_DEADLINE_SECONDS, what="a new token of removed key A")
        assert await probe.accepted(token_b)


async def test_a_jwks_url_losing_key_a_refuses_the_very_token_of_a_already_accepted(
    database_url, keys, jwks_endpoint
):
    """A caller reuses its token: the one already verified must stop working too, within the
    configured refresh, not only new tokens of the removed key."""
    jwks_endpoint.publish({"a": A, "b": B})
    settings = eddsa_settings(jwks_url=jwks_endpoint.url, jwks_refresh_seconds=0.5)
    user = new_id()
    token_a = user_metadata(settings, user, key=A, key_id="a")

    async with session_server_with(database_url, keys, jwt=settings) as server:
        probe = await UserProbe.create(server, token_a)
        assert await probe.accepted(token_a)

        jwks_endpoint.publish({"b": B})
        await refused_within(probe, token_a, "the already accepted token of removed key A")


async def test_a_jwks_url_is_not_fetched_again_for_each_unknown_kid(database_url, keys, jwks_endpoint):
    jwks_endpoint.publish({"a": A})
    settings = eddsa_settings(jwks_url=jwks_endpoint.url, jwks_refresh_seconds=60)
    user = new_id()
    token_a = user_metadata(settings, user, key=A, key_id="a")

    async with session_server_with(database_url, keys, jwt=settings) as server:
        probe = await UserProbe.create(server, token_a)
        fetched = jwks_endpoint.fetches
        stranger = new_private_key()
        for number in range(20):
            assert not await probe.accepted(
                user_metadata(settings, user, key=stranger, key_id=f"unknown-{number}")
            )
        # Within the cooldown, unknown kids are answered from the cached set.
        assert jwks_endpoint.fetches <= fetched + 1


# --- SERVICE_TOKEN_JWKS_FILE ---------------------------------------------------------------------


async def test_the_service_jwks_file_gaining_a_key_accepts_it_at_once_and_losing_one_refuses_it(
    database_url, keys, as_user, tmp_path
):
    jwks = tmp_path / "service-jwks.json"
    old, new = new_private_key(), new_private_key()
    write_jwks(jwks, {"caller-2024": old})
    token_old, token_new = rotator_token(old, "caller-2024"), rotator_token(new, "caller-2025")

    async with session_server_with(database_url, keys, service_jwks_file=str(jwks)) as server:
        probe = await ServiceProbe.create(server, as_user(new_id()))
        assert await probe.accepted(token_old)
        assert not await probe.accepted(token_new)

        write_jwks(jwks, {"caller-2024": old, "caller-2025": new})
        assert await probe.accepted(token_new)
        assert await probe.accepted(token_old)

        write_jwks(jwks, {"caller-2025": new})
        await refused_within(probe, token_old, "the service token of the removed key")
        assert not await probe.accepted(rotator_token(old, "caller-2024")), "a fresh token of the old key"
        assert await probe.accepted(token_new)


async def test_a_service_key_rotation_never_lets_a_user_key_in(database_url, keys, as_user, tmp_path):
    """A JWK Set rewritten with a key that can sign (a symmetric 'oct' key) is not a public key set:
    the reload is refused and the old keys stay."""
    jwks = tmp_path / "service-jwks.json"
    trusted = new_private_key()
    write_jwks(jwks, {"trusted": trusted})

    async with session_server_with(database_url, keys, service_jwks_file=str(jwks)) as server:
        probe = await ServiceProbe.create(server, as_user(new_id()))
        secret = keys.jwt.key.encode()
        oct_key = json.loads(jwt.algorithms.HMACAlgorithm.to_jwk(secret))
        jwks.write_text(json.dumps({"keys": [{**oct_key, "kid": "symmetric", "alg": "HS256"}]}))
        now = int(time.time())
        forged = jwt.encode(
            {
                "sub": "service:x",
                "iss": "service:x",
                "aud": "interview.internal",
                "iat": now,
                "exp": now + 60,
                "roles": ["sessions.internal"],
            },
            secret,
            algorithm="HS256",
            headers={"kid": "symmetric"},
        )
        await expect_error(
            server.internal.LookupSession(
                pb.LookupSessionRequest(session_id=probe.session_id),
                metadata=(("authorization", "Bearer " + forged),),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
        )
        assert await probe.accepted(rotator_token(trusted, "trusted"))


def test_the_jwks_files_written_here_hold_only_public_keys(tmp_path: Path) -> None:
    """The helper the tests rotate with publishes public halves only (so the tests model a real
    identity provider, not one that hands out signing keys)."""
    path = tmp_path / "jwks.json"
    write_jwks(path, {"a": A})
    (jwk,) = json.loads(path.read_text())["keys"]
    assert jwk["kty"] == "OKP" and "d" not in jwk and jwk["kid"] == "a"
