"""Every forgery that worked before the trust boundary is refused and changes nothing.

Tokens are crafted with `jwt.encode` directly, so each case differs from a genuine token in exactly
the way it names. The genuine tokens (the controls at the end of each section) are accepted by the
same servers, so a case that passes is refused for its own reason, not for a broken setup.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc as rpb_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc

from common.app import AppServer
from common.config import JwtSettings
from reputation_service import api as reputation_api
from session_service import api as session_api
from tests.helpers import StackKeys, bearer, create, expect_error, new_id, new_private_key
from tests.servers import reputation_config_for, session_config_for, wait_serving

Metadata = tuple[tuple[str, str], ...]
INTERNAL_ROLE = "sessions.internal"
SERVICE_AUDIENCE = "interview.internal"
UNAUTHENTICATED = (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
PERMISSION_DENIED = (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
# A trusted Ed25519 key of the test stack's SERVICE_TOKEN_JWKS_FILE, and one nobody trusts.
TRUSTED_KID = "tests-key"
OUTSIDER = new_private_key()


def service_claims(
    name: str = "anything", roles: list[str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Claims of a genuine service token; `overrides` set to None drop the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": f"service:{name}",
        "iss": f"service:{name}",
        "aud": SERVICE_AUDIENCE,
        "iat": now,
        "exp": now + 120,
        "roles": [INTERNAL_ROLE] if roles is None else roles,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def user_claims(settings: JwtSettings, subject: str, **overrides: Any) -> dict[str, Any]:
    """Claims of a genuine user token; `overrides` set to None drop the claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def service_signed(keys: StackKeys, claims: dict[str, Any], kid: str | None = TRUSTED_KID) -> str:
    """Signed like a genuine service token: the tests' trusted Ed25519 key, under `kid`."""
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, keys.service.tests_key, algorithm="EdDSA", headers=headers)


def user_key_signed(keys: StackKeys, claims: dict[str, Any], kid: str | None = None) -> str:
    """Signed with the user-token key (HS256): what anyone holding JWT_KEY could always make."""
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, keys.jwt.key, algorithm="HS256", headers=headers)


def trusted_public_bytes(keys: StackKeys) -> bytes:
    return keys.service.tests_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


# Each forged service token: what the forger did. All must be UNAUTHENTICATED on every internal RPC.
FORGED_SERVICE_TOKENS: dict[str, Callable[[StackKeys], str]] = {
    "HS256 with the user-token key claiming service:anything": lambda k: user_key_signed(k, service_claims()),
    "HS256 with the user-token key, user issuer and audience": lambda k: user_key_signed(
        k, service_claims(iss=k.jwt.issuer, aud=k.jwt.audience)
    ),
    "HS256 with the user-token key under the kid of a trusted service key": lambda k: user_key_signed(
        k, service_claims(), kid=TRUSTED_KID
    ),
    "HS256 with the user-token key under the reputation service's kid": lambda k: user_key_signed(
        k, service_claims(name="reputation"), kid=k.service.reputation.key_id
    ),
    "HS256 keyed with the trusted service key's public bytes": lambda k: jwt.encode(
        service_claims(), trusted_public_bytes(k), algorithm="HS256", headers={"kid": TRUSTED_KID}
    ),
    "Ed25519 key not in the JWK Set, under an unknown kid": lambda k: jwt.encode(
        service_claims(), OUTSIDER, algorithm="EdDSA", headers={"kid": "outsider"}
    ),
    "Ed25519 key not in the JWK Set, under the kid of a trusted key": lambda k: jwt.encode(
        service_claims(), OUTSIDER, algorithm="EdDSA", headers={"kid": TRUSTED_KID}
    ),
    "trusted key, audience is the user audience": lambda k: service_signed(
        k, service_claims(aud=k.jwt.audience)
    ),
    "trusted key, issuer differs from subject": lambda k: service_signed(
        k, service_claims(iss="service:someone-else")
    ),
    "trusted key, issuer is the user-token issuer": lambda k: service_signed(
        k, service_claims(iss=k.jwt.issuer)
    ),
    "trusted key, lifetime of 301 s": lambda k: service_signed(k, service_claims(exp=int(time.time()) + 301)),
    "trusted key, lifetime of a day": lambda k: service_signed(
        k, service_claims(exp=int(time.time()) + 86400)
    ),
    "trusted key, no iat": lambda k: service_signed(k, service_claims(iat=None)),
    "trusted key, expired a minute ago": lambda k: service_signed(
        k, service_claims(iat=int(time.time()) - 180, exp=int(time.time()) - 60)
    ),
    "trusted key, no kid": lambda k: service_signed(k, service_claims(), kid=None),
    "alg none under the kid of a trusted key": lambda k: jwt.encode(
        service_claims(), None, algorithm="none", headers={"kid": TRUSTED_KID}
    ),
    "trusted key, subject service: with no name": lambda k: service_signed(
        k, service_claims(sub="service:", iss="service:")
    ),
    "HS256 with the user-token key, Service: capitalised": lambda k: user_key_signed(
        k, service_claims(sub="Service:anything", iss="Service:anything")
    ),
}

# Tokens that authenticate but are not allowed on the internal service: PERMISSION_DENIED.
NOT_ALLOWED_ON_INTERNAL: dict[str, Callable[[StackKeys], str]] = {
    "a user token claiming role sessions.internal": lambda k: user_key_signed(
        k, user_claims(k.jwt, new_id(), roles=[INTERNAL_ROLE])
    ),
    "a plain user token": lambda k: user_key_signed(k, user_claims(k.jwt, new_id())),
    "a service token with no roles": lambda k: service_signed(k, service_claims(roles=[])),
    "a service token without a roles claim": lambda k: service_signed(
        k, {key: value for key, value in service_claims().items() if key != "roles"}
    ),
    "a service token with only reputation.moderate": lambda k: service_signed(
        k, service_claims(roles=["reputation.moderate"])
    ),
    "a service token with a near-miss role": lambda k: service_signed(
        k, service_claims(roles=["sessions.internal.admin", "SESSIONS.INTERNAL"])
    ),
}


async def session_row(db: asyncpg.Pool, session_id: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, job_posting_id, complete_time FROM sessions.sessions WHERE session_id = $1",
        session_id,
    )
    assert row is not None
    return row


async def assert_internal_call_refused(
    internal: pb_grpc.SessionInternalServiceStub,
    sessions: pb_grpc.SessionServiceStub,
    as_user: Any,
    db: asyncpg.Pool,
    rpc: str,
    metadata: Metadata,
    expected: tuple[grpc.StatusCode, str],
) -> None:
    """Calls `rpc` on a real paired ACTIVE session with `metadata`; the call must fail with
    `expected` and leave the session's row exactly as it was."""
    session = await create(sessions, as_user(new_id()), partner=new_id())
    before = await session_row(db, session.session_id)
    if rpc == "LookupSession":
        call = internal.LookupSession(
            pb.LookupSessionRequest(session_id=session.session_id), metadata=metadata
        )
    elif rpc == "CompletePairedSession":
        call = internal.CompletePairedSession(
            pb.CompletePairedSessionRequest(session_id=session.session_id), metadata=metadata
        )
    else:
        call = internal.ReleaseJobPosting(
            pb.ReleaseJobPostingRequest(job_posting_id=session.job_posting_id), metadata=metadata
        )
    error = await expect_error(call, *expected)
    assert error.domain == "interview.sessions"
    assert session.session_id not in error.message
    after = await session_row(db, session.session_id)
    assert after == before
    assert after["status"] == "active"
    assert str(after["job_posting_id"]) == session.job_posting_id


INTERNAL_RPCS = ["LookupSession", "CompletePairedSession", "ReleaseJobPosting"]


@pytest.mark.parametrize("rpc", INTERNAL_RPCS)
@pytest.mark.parametrize("forgery", list(FORGED_SERVICE_TOKENS))
async def test_a_forged_service_token_is_unauthenticated_on_each_internal_rpc_and_changes_nothing(
    internal, sessions, as_user, db, keys, forgery, rpc
):
    token = FORGED_SERVICE_TOKENS[forgery](keys)
    await assert_internal_call_refused(internal, sessions, as_user, db, rpc, bearer(token), UNAUTHENTICATED)


@pytest.mark.parametrize("rpc", INTERNAL_RPCS)
@pytest.mark.parametrize("caller", list(NOT_ALLOWED_ON_INTERNAL))
async def test_a_caller_without_the_internal_role_is_permission_denied_on_each_internal_rpc(
    internal, sessions, as_user, db, keys, caller, rpc
):
    token = NOT_ALLOWED_ON_INTERNAL[caller](keys)
    await assert_internal_call_refused(internal, sessions, as_user, db, rpc, bearer(token), PERMISSION_DENIED)


async def test_a_genuine_service_token_does_what_the_forgeries_could_not(
    internal, sessions, as_user, db, keys
):
    """The control: the same calls with a token signed by a trusted service key do change the rows."""
    metadata = bearer(service_signed(keys, service_claims(name="tests")))
    session = await create(sessions, as_user(new_id()), partner=new_id())

    looked_up = await internal.LookupSession(
        pb.LookupSessionRequest(session_id=session.session_id), metadata=metadata
    )
    assert looked_up.session_id == session.session_id
    completed = await internal.CompletePairedSession(
        pb.CompletePairedSessionRequest(session_id=session.session_id), metadata=metadata
    )
    assert completed.status == pb.SESSION_STATUS_COMPLETED
    assert (await session_row(db, session.session_id))["status"] == "completed"

    released = await internal.ReleaseJobPosting(
        pb.ReleaseJobPostingRequest(job_posting_id=session.job_posting_id), metadata=metadata
    )
    assert released.sessions_updated == 1
    assert (await session_row(db, session.session_id))["job_posting_id"] is None


# --- Service tokens on the public APIs -----------------------------------------------------------


@pytest.fixture(scope="module")
async def reputation_trusting_services(
    database_url: str, keys: StackKeys, session_server: AppServer
) -> AsyncIterator[rpb_grpc.ReputationServiceStub]:
    """A reputation service that, like under `make run`, trusts the service keys (so a service token
    authenticates there and is refused for its kind, not for an unknown key)."""
    config = reputation_config_for(database_url, keys, f"127.0.0.1:{session_server.port}")
    app = reputation_api.create_server(replace(config, service_jwks_file=keys.service.jwks_file))
    await app.start()
    try:
        await wait_serving(f"127.0.0.1:{app.port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield rpb_grpc.ReputationServiceStub(channel)
    finally:
        await app.stop(grace=1)


# A service token on each public RPC: (service, rpc, request builder from a paired session).
PUBLIC_CALLS: dict[str, tuple[str, str, Callable[[pb.Session], Any]]] = {
    "SessionService.CreateSession": (
        "sessions",
        "CreateSession",
        lambda s: pb.CreateSessionRequest(job_posting_id=s.job_posting_id),
    ),
    "SessionService.GetSession": (
        "sessions",
        "GetSession",
        lambda s: pb.GetSessionRequest(session_id=s.session_id),
    ),
    "SessionService.ListSessions": ("sessions", "ListSessions", lambda s: pb.ListSessionsRequest()),
    "SessionService.PauseSession": (
        "sessions",
        "PauseSession",
        lambda s: pb.PauseSessionRequest(session_id=s.session_id),
    ),
    "SessionService.CompleteSession": (
        "sessions",
        "CompleteSession",
        lambda s: pb.CompleteSessionRequest(session_id=s.session_id),
    ),
    "SessionService.AppendMessage": (
        "sessions",
        "AppendMessage",
        lambda s: pb.AppendMessageRequest(
            session_id=s.session_id, role=pb.MESSAGE_ROLE_QUESTION, content="forged question"
        ),
    ),
    "ReputationService.ConfirmCompletion": (
        "reputation",
        "ConfirmCompletion",
        lambda s: rpb.ConfirmCompletionRequest(session_id=s.session_id),
    ),
    "ReputationService.GetConfirmation": (
        "reputation",
        "GetConfirmation",
        lambda s: rpb.GetConfirmationRequest(session_id=s.session_id),
    ),
    "ReputationService.GetReputation": (
        "reputation",
        "GetReputation",
        lambda s: rpb.GetReputationRequest(user_id=s.user_id),
    ),
    "ReputationService.ListReputationEvents": (
        "reputation",
        "ListReputationEvents",
        lambda s: rpb.ListReputationEventsRequest(),
    ),
}


@pytest.mark.parametrize("call", list(PUBLIC_CALLS))
async def test_a_service_token_with_every_role_on_a_public_rpc_is_permission_denied_and_changes_nothing(
    sessions, reputation_trusting_services, as_user, db, keys, call
):
    service, rpc, request = PUBLIC_CALLS[call]
    session = await create(sessions, as_user(new_id()), partner=new_id())
    before = await session_row(db, session.session_id)
    token = service_signed(keys, service_claims(name="tests", roles=[INTERNAL_ROLE, "reputation.moderate"]))
    stub = sessions if service == "sessions" else reputation_trusting_services

    error = await expect_error(
        getattr(stub, rpc)(request(session), metadata=bearer(token)), *PERMISSION_DENIED
    )
    assert error.domain == ("interview.sessions" if service == "sessions" else "interview.reputation")

    assert await session_row(db, session.session_id) == before
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sessions.sessions WHERE job_posting_id = $1", session.job_posting_id
        )
        == 1
    )
    assert (
        await db.fetchval("SELECT count(*) FROM sessions.messages WHERE session_id = $1", session.session_id)
        == 0
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM reputation.paired_sessions WHERE session_id = $1", session.session_id
        )
        == 0
    )


async def test_the_public_rpcs_accept_the_owner_user_token_on_the_same_servers(
    sessions, reputation_trusting_services, as_user
):
    """The control for the public-API cases: a user token gets through on both services."""
    owner, partner = new_id(), new_id()
    session = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=partner), metadata=as_user(owner)
    )
    confirmation = await reputation_trusting_services.ConfirmCompletion(
        rpb.ConfirmCompletionRequest(session_id=session.session_id), metadata=as_user(owner)
    )
    assert list(confirmation.confirmed_user_ids) == [owner]


# --- User-token hygiene --------------------------------------------------------------------------


# Each refused user token: its claims from (settings, the owner's canonical id).
REFUSED_USER_TOKENS: dict[str, Callable[[JwtSettings, str], dict[str, Any]]] = {
    "lifetime one second over JWT_MAX_LIFETIME_SECONDS": lambda s, owner: user_claims(
        s, owner, exp=int(time.time()) + s.max_lifetime_seconds + 1
    ),
    "lifetime of a year": lambda s, owner: user_claims(s, owner, exp=int(time.time()) + 365 * 86400),
    "issued long ago, not yet expired, lifetime over the maximum": lambda s, owner: user_claims(
        s, owner, iat=int(time.time()) - s.max_lifetime_seconds, exp=int(time.time()) + 120
    ),
    "no iat and exp two days ahead": lambda s, owner: user_claims(
        s, owner, iat=None, exp=int(time.time()) + 2 * 86400
    ),
    "no iat and exp a century ahead": lambda s, owner: user_claims(
        s, owner, iat=None, exp=int(time.time()) + 100 * 365 * 86400
    ),
    "sub in uppercase": lambda s, owner: user_claims(s, owner.upper()),
    "sub without hyphens": lambda s, owner: user_claims(s, owner.replace("-", "")),
    "sub in braces": lambda s, owner: user_claims(s, "{" + owner + "}"),
    "sub as a urn": lambda s, owner: user_claims(s, "urn:uuid:" + owner),
    "sub with a trailing newline": lambda s, owner: user_claims(s, owner + "\n"),
    "sub as a number": lambda s, owner: user_claims(s, 12345),
    "no sub": lambda s, owner: user_claims(s, owner, sub=None),
    "audience of service tokens": lambda s, owner: user_claims(s, owner, aud=SERVICE_AUDIENCE),
}

# Tokens at the edge of the rules that must still be accepted.
ACCEPTED_USER_TOKENS: dict[str, Callable[[JwtSettings, str], dict[str, Any]]] = {
    "lifetime exactly JWT_MAX_LIFETIME_SECONDS": lambda s, owner: user_claims(
        s, owner, exp=int(time.time()) + s.max_lifetime_seconds
    ),
    "no iat and exp within the maximum": lambda s, owner: user_claims(
        s, owner, iat=None, exp=int(time.time()) + 3600
    ),
}


async def own_session(sessions: pb_grpc.SessionServiceStub, as_user: Any) -> tuple[str, pb.Session]:
    owner = new_id()
    return owner, await create(sessions, as_user(owner))


@pytest.mark.parametrize("case", list(REFUSED_USER_TOKENS))
async def test_a_user_token_breaking_a_hygiene_rule_is_unauthenticated(sessions, as_user, keys, case):
    owner, created = await own_session(sessions, as_user)
    token = user_key_signed(keys, REFUSED_USER_TOKENS[case](keys.jwt, owner))
    await expect_error(
        sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=bearer(token)),
        *UNAUTHENTICATED,
    )


@pytest.mark.parametrize("case", list(ACCEPTED_USER_TOKENS))
async def test_a_user_token_at_the_edge_of_the_hygiene_rules_is_accepted(sessions, as_user, keys, case):
    owner, created = await own_session(sessions, as_user)
    token = user_key_signed(keys, ACCEPTED_USER_TOKENS[case](keys.jwt, owner))
    got = await sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id), metadata=bearer(token)
    )
    assert got == created


async def test_a_configured_jwt_max_lifetime_is_the_limit_instead_of_the_default(database_url, keys, as_user):
    settings = JwtSettings(
        algorithm=keys.jwt.algorithm,
        key=keys.jwt.key,
        issuer=keys.jwt.issuer,
        audience=keys.jwt.audience,
        max_lifetime_seconds=600,
    )
    app = session_api.create_server(session_config_for(database_url, keys, jwt=settings))
    await app.start()
    try:
        await wait_serving(f"127.0.0.1:{app.port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.SessionServiceStub(channel)
            owner, created = await own_session(stub, as_user)
            request = pb.GetSessionRequest(session_id=created.session_id)
            now = int(time.time())
            fits = user_key_signed(keys, user_claims(settings, owner, iat=now, exp=now + 600))
            assert await stub.GetSession(request, metadata=bearer(fits)) == created
            too_long = user_key_signed(keys, user_claims(settings, owner, iat=now, exp=now + 601))
            await expect_error(stub.GetSession(request, metadata=bearer(too_long)), *UNAUTHENTICATED)
    finally:
        await app.stop(grace=1)


# --- The authorization header ----------------------------------------------------------------------


# Each refused header set, from a valid token of the session's owner.
REFUSED_HEADERS: dict[str, Callable[[str], Metadata]] = {
    "two authorization headers, both valid": lambda t: (
        ("authorization", "Bearer " + t),
        ("authorization", "Bearer " + t),
    ),
    "two spaces after Bearer": lambda t: (("authorization", "Bearer  " + t),),
    "no space after Bearer": lambda t: (("authorization", "Bearer" + t),),
    "Basic scheme": lambda t: (("authorization", "Basic x"),),
    "Basic scheme with the token": lambda t: (("authorization", "Basic " + t),),
    "the bare token": lambda t: (("authorization", t),),
    "something after the token": lambda t: (("authorization", "Bearer " + t + " extra"),),
    "Bearer misspelt": lambda t: (("authorization", "Beare " + t),),
    "no authorization header": lambda t: (),
}

ACCEPTED_SCHEMES = ["Bearer", "bearer", "BEARER", "bEaReR"]


@pytest.mark.parametrize("case", list(REFUSED_HEADERS))
async def test_an_authorization_header_not_exactly_one_bearer_token_is_unauthenticated(
    sessions, as_user, keys, case
):
    owner, created = await own_session(sessions, as_user)
    token = user_key_signed(keys, user_claims(keys.jwt, owner))
    await expect_error(
        sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session_id), metadata=REFUSED_HEADERS[case](token)
        ),
        *UNAUTHENTICATED,
    )


@pytest.mark.parametrize("scheme", ACCEPTED_SCHEMES)
async def test_the_bearer_scheme_is_accepted_in_any_case(sessions, as_user, keys, scheme):
    owner, created = await own_session(sessions, as_user)
    token = user_key_signed(keys, user_claims(keys.jwt, owner))
    got = await sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id),
        metadata=(("authorization", f"{scheme} {token}"),),
    )
    assert got == created


async def test_two_authorization_headers_are_refused_on_the_internal_service_too(
    internal, sessions, as_user, db, keys
):
    token = service_signed(keys, service_claims(name="tests"))
    metadata = (("authorization", "Bearer " + token), ("authorization", "Bearer " + token))
    await assert_internal_call_refused(
        internal, sessions, as_user, db, "CompletePairedSession", metadata, UNAUTHENTICATED
    )
