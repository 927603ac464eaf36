"""Service-to-service auth: user tokens stay out of SessionInternalService, and the reputation
service's own short-lived token is what the session service accepts."""

from pathlib import Path

import grpc
import jwt
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from common.config import PLAINTEXT, ServiceSigning
from common.devcerts import write_private
from reputation_service import domain
from reputation_service.sessions_client import SessionsClient
from tests.helpers import create, expect_error, new_id, new_private_key, private_pem, user_metadata

SESSIONS_DOMAIN = "interview.sessions"


def trusted_key(jwks_file: str, kid: str):
    """The public key the session service trusts under `kid`."""
    return jwt.PyJWKSet.from_json(Path(jwks_file).read_text())[kid].key


INTERNAL_CALLS = {
    "LookupSession": lambda sid: pb.LookupSessionRequest(session_id=sid),
    "CompletePairedSession": lambda sid: pb.CompletePairedSessionRequest(session_id=sid),
    "ReleaseJobPosting": lambda sid: pb.ReleaseJobPostingRequest(job_posting_id=new_id()),
}


@pytest.mark.parametrize(
    "roles", [None, ["sessions.internal"], ["sessions.internal", "admin"]], ids=["no roles", "role", "roles"]
)
@pytest.mark.parametrize("rpc", list(INTERNAL_CALLS))
async def test_a_user_token_cannot_call_the_internal_service_even_claiming_the_role(
    sessions, internal, as_user, jwt_settings, db, rpc, roles
):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)

    error = await expect_error(
        getattr(internal, rpc)(
            INTERNAL_CALLS[rpc](created.session_id), metadata=user_metadata(jwt_settings, owner, roles=roles)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )

    assert error.domain == SESSIONS_DOMAIN
    row = await db.fetchrow("SELECT status FROM sessions.sessions WHERE session_id = $1", created.session_id)
    assert row["status"] == "active"


@pytest.fixture
async def sessions_client(session_server, service_keys):
    client = SessionsClient(f"127.0.0.1:{session_server.port}", service_keys.reputation, PLAINTEXT, 2.0)
    yield client
    await client.close()


async def test_the_reputation_services_token_is_a_short_lived_internal_service_token(
    sessions_client, service_keys
):
    ((key, value),) = sessions_client._metadata()
    assert key == "authorization"
    scheme, _, token = value.partition(" ")
    assert scheme == "Bearer"

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token,
        trusted_key(service_keys.jwks_file, service_keys.reputation.key_id),
        algorithms=["EdDSA"],
        audience="interview.internal",
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )

    assert header["alg"] == "EdDSA"
    assert header["kid"] == service_keys.reputation.key_id
    assert claims["sub"] == claims["iss"] == "service:reputation"
    assert claims["roles"] == ["sessions.internal"]
    assert claims["aud"] == "interview.internal"
    assert 0 < claims["exp"] - claims["iat"] <= 120


async def test_the_reputation_services_client_can_look_up_any_session(sessions_client, sessions, as_user):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)

    found = await sessions_client.lookup(created.session_id)

    assert found.session_id == created.session_id
    assert found.user_id == owner
    assert found.partner_user_id == partner
    assert found.status == domain.ACTIVE


async def test_the_reputation_services_client_gets_session_not_found_for_an_unknown_session(sessions_client):
    missing = new_id()

    with pytest.raises(domain.SessionNotFound) as raised:
        await sessions_client.lookup(missing)

    assert raised.value.metadata == {"session_id": missing}


@pytest.mark.parametrize("kid", ["reputation-key", "unknown-key"])
async def test_a_client_signing_with_a_key_the_session_service_does_not_trust_is_unauthenticated(
    session_server, sessions, as_user, db, tmp_path, kid
):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    write_private(tmp_path / "other.pem", private_pem(new_private_key()))
    other = ServiceSigning(key_file=str(tmp_path / "other.pem"), key_id=kid)
    client = SessionsClient(f"127.0.0.1:{session_server.port}", other, PLAINTEXT, 2.0)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as lookup:
            await client.lookup(created.session_id)
        with pytest.raises(grpc.aio.AioRpcError) as complete:
            await client.complete_paired(created.session_id)
    finally:
        await client.close()

    assert lookup.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert complete.value.code() == grpc.StatusCode.UNAUTHENTICATED
    row = await db.fetchrow("SELECT status FROM sessions.sessions WHERE session_id = $1", created.session_id)
    assert row["status"] == "active"
