"""JWT verification with PyJWT, the caller's identity, and who may call which service."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jwt

from common.config import JwtSettings
from common.errors import PermissionDenied, Unauthenticated

LEEWAY_SECONDS = 30
# Verified tokens kept per process. A token's verdict cannot change before it expires, and
# callers reuse one token for many calls: decoding it again cost more CPU than the query.
TOKEN_CACHE_SIZE = 4096
SERVICE_PREFIX = "service:"
INTERNAL_ROLE = "sessions.internal"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (user_id set) or a service (service set, with its roles)."""

    user_id: str | None = None
    service: str | None = None
    roles: frozenset[str] = frozenset()


_current: ContextVar[Principal] = ContextVar("principal")


def current_user_id() -> str:
    """The calling user's id; the interceptor guarantees a user token on public services."""
    user_id = _current.get().user_id
    assert user_id is not None, "public RPC reached without a user token"
    return user_id


def _prepared_key(algorithm: str, key: str) -> Any:
    # Parse the key once at start-up instead of on every call.
    return jwt.get_algorithm_by_name(algorithm).prepare_key(key)


class TokenVerifier:
    """Verifies `authorization: Bearer <JWT>` values against one pinned algorithm and key."""

    def __init__(self, settings: JwtSettings, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._key = _prepared_key(settings.algorithm, settings.key)
        self._clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}

    def verify(self, authorization: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("missing bearer token in the authorization metadata")
        cached = self._verified.get(token)
        if cached is not None and self._clock() <= cached[1]:
            return cached[0]
        principal, valid_until = self._decode(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            # The oldest entry goes (dicts keep insertion order): O(1) however many callers churn
            # through, and an expired entry is never served anyway (checked on every hit).
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, valid_until)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        """The token's principal and the last moment a fresh decode would still accept it."""
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._settings.algorithm],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        return _principal(claims), float(claims["exp"]) + LEEWAY_SECONDS


def _principal(claims: dict[str, Any]) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str):
        raise Unauthenticated("invalid token subject")
    if subject.startswith(SERVICE_PREFIX) and len(subject) > len(SERVICE_PREFIX):
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
            raise Unauthenticated("invalid roles claim")
        return Principal(service=subject[len(SERVICE_PREFIX) :], roles=frozenset(roles))
    try:
        return Principal(user_id=str(uuid.UUID(subject)))
    except ValueError:
        raise Unauthenticated("token subject is neither a user id nor a service") from None


@dataclass(frozen=True)
class Access:
    """Who may call a service: end users (role None) or services holding `role`."""

    role: str | None = None

    def check(self, principal: Principal) -> None:
        if self.role is None and principal.user_id is None:
            raise PermissionDenied("this service is for user tokens")
        if self.role is not None and self.role not in principal.roles:
            raise PermissionDenied(f"this service needs a service token with role {self.role}")

    def enter(self, principal: Principal) -> object:
        self.check(principal)
        return _current.set(principal)

    @staticmethod
    def leave(token: object) -> None:
        _current.reset(token)  # type: ignore[arg-type]


USERS = Access()
INTERNAL = Access(role=INTERNAL_ROLE)


def mint(
    settings: JwtSettings,
    signing_key: str,
    subject: str,
    ttl_seconds: int,
    roles: list[str] | None = None,
) -> str:
    """A signed token in the shape TokenVerifier accepts (dev CLI, service-to-service calls)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": subject,
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    if roles is not None:
        claims["roles"] = roles
    return jwt.encode(claims, signing_key, algorithm=settings.algorithm)
