"""Who may call what: token verification, service versus user tokens, and hiding other users' sessions."""

import time
from dataclasses import dataclass
from typing import Any

import grpc
import jwt
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from common.auth import mint
from tests.helpers import expect_error, new_id, new_private_key, service_metadata

DOMAIN = "interview.sessions"
SERVICE_SUBJECT = "service:tests"
INTERNAL_ROLE = "sessions.internal"


@dataclass(frozen=True)
class Issuer:
    """How a valid token of one kind is made: user tokens by the identity provider (HS256 here),
    service tokens by the calling service's own Ed25519 key. `secret` is the user-token HS256 key,
    the one an attacker would try to sign anything with."""

    issuer: str | None
    audience: str
    key: Any
    algorithm: str
    secret: str
    other_key: Any
    kid: str | None = None


@pytest.fixture(scope="module")
def user_issuer(jwt_settings) -> Issuer:
    return Issuer(
        jwt_settings.issuer,
        jwt_settings.audience,
        jwt_settings.key,
        "HS256",
        jwt_settings.key,
        "another-key-that-is-long-enough-for-hs256-0123456789",
    )


@pytest.fixture(scope="module")
def service_issuer(jwt_settings, service_keys) -> Issuer:
    return Issuer(
        None,
        "interview.internal",
        service_keys.tests_key,
        "EdDSA",
        jwt_settings.key,
        new_private_key(),
        kid="tests-key",
    )


def claims_for(issuer, subject, roles=None, **overrides):
    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": issuer.issuer or subject,
        "aud": issuer.audience,
        "iat": now,
        "exp": now + 300,
    }
    if roles is not None:
        claims["roles"] = roles
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def signed(issuer, claims, key=None, algorithm=None):
    headers = {"kid": issuer.kid} if issuer.kid else None
    return jwt.encode(
        claims, issuer.key if key is None else key, algorithm=algorithm or issuer.algorithm, headers=headers
    )


def unsigned(claims):
    return jwt.encode(claims, None, algorithm="none")


# Each case: the authorization metadata value (None: no metadata at all), built from the settings,
# the subject the token would carry, and the roles a valid token for that service would hold.
BAD_AUTHORIZATION = {
    "no metadata": lambda s, sub, roles: None,
    "bearer with empty token": lambda s, sub, roles: "Bearer ",
    "bearer alone": lambda s, sub, roles: "Bearer",
    "basic scheme": lambda s, sub, roles: "Basic dXNlcjpwYXNzd29yZA==",
    "valid token under another scheme": lambda s, sub, roles: "Token " + signed(s, claims_for(s, sub, roles)),
    "bare valid token without scheme": lambda s, sub, roles: signed(s, claims_for(s, sub, roles)),
    "garbage token": lambda s, sub, roles: "Bearer not-a-jwt",
    "three garbage segments": lambda s, sub, roles: "Bearer aaa.bbb.ccc",
    "expired five minutes ago": lambda s, sub, roles: (
        "Bearer " + signed(s, claims_for(s, sub, roles, exp=int(time.time()) - 300))
    ),
    "signed with another key": lambda s, sub, roles: (
        "Bearer " + signed(s, claims_for(s, sub, roles), key=s.other_key)
    ),
    "wrong audience": lambda s, sub, roles: (
        "Bearer " + signed(s, claims_for(s, sub, roles, aud="someone-else"))
    ),
    "wrong issuer": lambda s, sub, roles: "Bearer " + signed(s, claims_for(s, sub, roles, iss="evil-issuer")),
    "missing exp": lambda s, sub, roles: "Bearer " + signed(s, claims_for(s, sub, roles, exp=None)),
    "missing iss": lambda s, sub, roles: "Bearer " + signed(s, claims_for(s, sub, roles, iss=None)),
    "missing aud": lambda s, sub, roles: "Bearer " + signed(s, claims_for(s, sub, roles, aud=None)),
    "alg none": lambda s, sub, roles: "Bearer " + unsigned(claims_for(s, sub, roles)),
    "alg none with a forged signature": lambda s, sub, roles: (
        "Bearer " + unsigned(claims_for(s, sub, roles)) + "c2lnbmF0dXJl"
    ),
    "HS512 with the user-token secret": lambda s, sub, roles: (
        "Bearer " + signed(s, claims_for(s, sub, roles), key=s.secret, algorithm="HS512")
    ),
    "subject is not a uuid": lambda s, sub, roles: "Bearer " + signed(s, claims_for(s, "alice", roles)),
    "subject is an empty service name": lambda s, sub, roles: (
        "Bearer " + signed(s, claims_for(s, "service:", roles))
    ),
    "subject missing": lambda s, sub, roles: "Bearer " + signed(s, claims_for(s, None, roles)),
}


def as_metadata(authorization):
    return () if authorization is None else (("authorization", authorization),)


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
async def test_get_session_with_a_bad_token_is_unauthenticated(sessions, as_user, user_issuer, case):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    authorization = BAD_AUTHORIZATION[case](user_issuer, owner, None)

    error = await expect_error(
        sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session_id), metadata=as_metadata(authorization)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert error.domain == DOMAIN
    assert error.fields == {}
    assert created.session_id not in error.message


@pytest.mark.parametrize("case", list(BAD_AUTHORIZATION))
async def test_lookup_session_with_a_bad_token_is_unauthenticated(
    sessions, internal, as_user, service_issuer, case
):
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(new_id())
    )
    authorization = BAD_AUTHORIZATION[case](service_issuer, SERVICE_SUBJECT, [INTERNAL_ROLE])

    error = await expect_error(
        internal.LookupSession(
            pb.LookupSessionRequest(session_id=created.session_id), metadata=as_metadata(authorization)
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert error.domain == DOMAIN


@pytest.mark.parametrize("case", ["expired five minutes ago", "alg none", "no metadata"])
async def test_a_rejected_token_changes_nothing(sessions, as_user, user_issuer, db, case):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    authorization = as_metadata(BAD_AUTHORIZATION[case](user_issuer, owner, None))

    await expect_error(
        sessions.CompleteSession(
            pb.CompleteSessionRequest(session_id=created.session_id), metadata=authorization
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await expect_error(
        sessions.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=authorization),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 1
    assert (
        await db.fetchval("SELECT status FROM sessions.sessions WHERE session_id = $1", created.session_id)
        == "active"
    )


async def test_the_sanity_baseline_tokens_built_here_are_accepted(
    sessions, internal, as_user, user_issuer, service_issuer
):
    """The bad-token cases differ from these in one way each; these must pass."""
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    user = as_metadata("Bearer " + signed(user_issuer, claims_for(user_issuer, owner)))
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=user)
    assert got == created
    service = as_metadata(
        "Bearer " + signed(service_issuer, claims_for(service_issuer, SERVICE_SUBJECT, [INTERNAL_ROLE]))
    )
    looked_up = await internal.LookupSession(
        pb.LookupSessionRequest(session_id=created.session_id), metadata=service
    )
    assert looked_up == created
    lowercase_scheme = as_metadata("bearer " + signed(user_issuer, claims_for(user_issuer, owner)))
    got = await sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id), metadata=lowercase_scheme
    )
    assert got == created


async def test_a_token_expired_ten_seconds_ago_is_still_accepted(
    sessions, internal, as_user, jwt_settings, service_issuer
):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    user = (("authorization", "Bearer " + mint(jwt_settings, jwt_settings.key, owner, -10)),)
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=user)
    assert got == created

    now = int(time.time())
    service_token = signed(
        service_issuer,
        claims_for(service_issuer, SERVICE_SUBJECT, [INTERNAL_ROLE], iat=now - 100, exp=now - 10),
    )
    looked_up = await internal.LookupSession(
        pb.LookupSessionRequest(session_id=created.session_id),
        metadata=(("authorization", "Bearer " + service_token),),
    )
    assert looked_up == created


# --- Wrong kind of token ------------------------------------------------------------------------


async def test_a_user_token_on_the_internal_service_is_permission_denied(sessions, internal, as_user, db):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=new_id()), metadata=as_user(owner)
    )
    calls = [
        internal.LookupSession(
            pb.LookupSessionRequest(session_id=created.session_id), metadata=as_user(owner)
        ),
        internal.CompletePairedSession(
            pb.CompletePairedSessionRequest(session_id=created.session_id), metadata=as_user(owner)
        ),
        internal.ReleaseJobPosting(
            pb.ReleaseJobPostingRequest(job_posting_id=created.job_posting_id), metadata=as_user(owner)
        ),
    ]
    for call in calls:
        error = await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert error.domain == DOMAIN
    row = await db.fetchrow("SELECT * FROM sessions.sessions WHERE session_id = $1", created.session_id)
    assert row["status"] == "active"
    assert str(row["job_posting_id"]) == created.job_posting_id


async def test_a_user_token_claiming_the_internal_role_is_still_permission_denied(
    sessions, internal, as_user, jwt_settings
):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    token = mint(jwt_settings, jwt_settings.key, owner, 300, [INTERNAL_ROLE])
    error = await expect_error(
        internal.LookupSession(
            pb.LookupSessionRequest(session_id=created.session_id),
            metadata=(("authorization", "Bearer " + token),),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert error.domain == DOMAIN


@pytest.mark.parametrize("roles", [[], ["sessions.reader"], ["SESSIONS.INTERNAL"]], ids=str)
async def test_a_service_token_without_the_internal_role_is_permission_denied(
    sessions, internal, as_user, service_keys, roles
):
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(new_id())
    )
    error = await expect_error(
        internal.LookupSession(
            pb.LookupSessionRequest(session_id=created.session_id),
            metadata=service_metadata(service_keys, roles=roles),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert error.domain == DOMAIN


async def test_a_service_token_without_any_roles_claim_is_permission_denied(
    sessions, internal, as_user, service_issuer
):
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(new_id())
    )
    token = signed(service_issuer, claims_for(service_issuer, SERVICE_SUBJECT))
    await expect_error(
        internal.LookupSession(
            pb.LookupSessionRequest(session_id=created.session_id),
            metadata=(("authorization", "Bearer " + token),),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


async def test_a_service_token_on_the_public_service_is_permission_denied(sessions, as_user, as_service, db):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    calls = [
        sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=as_service),
        sessions.CompleteSession(
            pb.CompleteSessionRequest(session_id=created.session_id), metadata=as_service
        ),
        sessions.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_service),
        sessions.ListSessions(pb.ListSessionsRequest(), metadata=as_service),
    ]
    for call in calls:
        error = await expect_error(call, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
        assert error.domain == DOMAIN
    assert (
        await db.fetchval("SELECT status FROM sessions.sessions WHERE session_id = $1", created.session_id)
        == "active"
    )


# --- Other users' sessions ----------------------------------------------------------------------


def call_for(rpc, sessions, session_id, caller_metadata):
    """The RPC on `session_id`, as a request that would succeed for the owner in the prepared state."""
    if rpc == "GetSession":
        return sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=caller_metadata)
    if rpc == "PauseSession":
        return sessions.PauseSession(pb.PauseSessionRequest(session_id=session_id), metadata=caller_metadata)
    if rpc == "ResumeSession":
        return sessions.ResumeSession(
            pb.ResumeSessionRequest(session_id=session_id), metadata=caller_metadata
        )
    if rpc == "CompleteSession":
        return sessions.CompleteSession(
            pb.CompleteSessionRequest(session_id=session_id), metadata=caller_metadata
        )
    if rpc == "RetakeSession":
        return sessions.RetakeSession(
            pb.RetakeSessionRequest(session_id=session_id, request_id=new_id()), metadata=caller_metadata
        )
    if rpc == "ListRetakes":
        return sessions.ListRetakes(pb.ListRetakesRequest(session_id=session_id), metadata=caller_metadata)
    if rpc == "AppendMessage":
        return sessions.AppendMessage(
            pb.AppendMessageRequest(session_id=session_id, role=pb.MESSAGE_ROLE_QUESTION, content="Hi?"),
            metadata=caller_metadata,
        )
    if rpc == "ListMessages":
        return sessions.ListMessages(pb.ListMessagesRequest(session_id=session_id), metadata=caller_metadata)
    raise AssertionError(rpc)


# The state in which the owner's call would succeed, so only visibility can refuse it.
PREPARED_STATE = {
    "GetSession": "active",
    "PauseSession": "active",
    "ResumeSession": "paused",
    "CompleteSession": "active",
    "RetakeSession": "completed",
    "ListRetakes": "completed",
    "AppendMessage": "active",
    "ListMessages": "active",
}


@pytest.mark.parametrize("rpc", list(PREPARED_STATE))
async def test_another_users_session_is_not_found(sessions, as_user, db, rpc):
    owner, stranger = new_id(), new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    sid = created.session_id
    await sessions.AppendMessage(
        pb.AppendMessageRequest(session_id=sid, role=pb.MESSAGE_ROLE_QUESTION, content="First?"),
        metadata=as_user(owner),
    )
    if PREPARED_STATE[rpc] == "paused":
        await sessions.PauseSession(pb.PauseSessionRequest(session_id=sid), metadata=as_user(owner))
    if PREPARED_STATE[rpc] == "completed":
        await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=sid), metadata=as_user(owner))
    before = await db.fetchrow("SELECT * FROM sessions.sessions WHERE session_id = $1", sid)

    error = await expect_error(
        call_for(rpc, sessions, sid, as_user(stranger)), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )
    assert error.domain == DOMAIN
    assert error.metadata == {"session_id": sid}

    missing_id = new_id()
    missing = await expect_error(
        call_for(rpc, sessions, missing_id, as_user(stranger)), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )
    assert missing.message == error.message
    assert missing.metadata == {"session_id": missing_id}

    assert await db.fetchrow("SELECT * FROM sessions.sessions WHERE session_id = $1", sid) == before
    assert await db.fetchval("SELECT count(*) FROM sessions.messages WHERE session_id = $1", sid) == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sessions.sessions WHERE user_id = $1 OR original_session_id = $2",
            stranger,
            sid,
        )
        == 0
    )

    # The owner, in the same state, is served: the refusal above was about who asked.
    await call_for(rpc, sessions, sid, as_user(owner))


# --- Order of checks ----------------------------------------------------------------------------


async def test_authentication_is_checked_before_the_arguments(sessions, internal, jwt_settings):
    expired = (("authorization", "Bearer " + mint(jwt_settings, jwt_settings.key, new_id(), -300)),)
    for call in [
        sessions.GetSession(pb.GetSessionRequest(session_id="not-a-uuid"), metadata=expired),
        sessions.AppendMessage(
            pb.AppendMessageRequest(session_id="not-a-uuid", role=0, content=""), metadata=expired
        ),
        sessions.CreateSession(pb.CreateSessionRequest(job_posting_id="nope"), metadata=()),
        internal.LookupSession(pb.LookupSessionRequest(session_id="not-a-uuid"), metadata=()),
    ]:
        error = await expect_error(call, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        assert error.fields == {}


async def test_permission_for_the_service_is_checked_before_the_arguments(internal, as_user):
    error = await expect_error(
        internal.LookupSession(pb.LookupSessionRequest(session_id="not-a-uuid"), metadata=as_user(new_id())),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert error.fields == {}


async def test_arguments_are_checked_before_visibility(sessions, as_user, db):
    owner, stranger = new_id(), new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    sid = created.session_id
    await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=sid), metadata=as_user(owner))
    malformed = sid[:-1] + "x"

    cases = [
        (
            sessions.GetSession(pb.GetSessionRequest(session_id=malformed), metadata=as_user(stranger)),
            "session_id",
        ),
        (
            sessions.AppendMessage(
                pb.AppendMessageRequest(session_id=sid, role=pb.MESSAGE_ROLE_UNSPECIFIED, content="x"),
                metadata=as_user(stranger),
            ),
            "role",
        ),
        (
            sessions.RetakeSession(
                pb.RetakeSessionRequest(session_id=sid, request_id="not-a-uuid"), metadata=as_user(stranger)
            ),
            "request_id",
        ),
        (
            sessions.ListMessages(
                pb.ListMessagesRequest(session_id=sid, page_size=-1), metadata=as_user(stranger)
            ),
            "page_size",
        ),
    ]
    for call, field in cases:
        error = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert error.domain == DOMAIN
        assert set(error.fields) == {field}
    assert (
        await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE original_session_id = $1", sid) == 0
    )
