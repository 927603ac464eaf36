"""From the `authorization` header to a verified Principal: user tokens against the identity
provider's keys, service tokens against the keys of the services allowed to call us."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from common.auth.access import Principal
from common.auth.keys import JwksFile, JwksUrl, StaticKey

if TYPE_CHECKING:
    from common.config import JwtSettings
from common.errors import Unauthenticated

LEEWAY_SECONDS = 30
# Verified tokens kept per process. Callers reuse one token for many calls: decoding it again cost
# more CPU than the query. An entry is re-checked at least this often (and at least as often as
# a JWK Set URL is fetched again), so a key removed from the set stops being accepted within that
# time even for a token already seen.
TOKEN_CACHE_SIZE = 4096
RECHECK_SECONDS = 60.0
SERVICE_PREFIX = "service:"
SERVICE_AUDIENCE = "interview.internal"
SERVICE_TOKEN_MAX_LIFETIME_SECONDS = 300
# "Bearer" in any case, exactly one space, then the token (no spaces inside a JWT).
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] ([^\s]+)")
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SERVICE_SUBJECT = re.compile(r"service:[a-z0-9][a-z0-9._-]{0,62}")


def user_keys(settings: JwtSettings) -> StaticKey | JwksFile | JwksUrl:
    if settings.jwks_url:
        return JwksUrl(settings.jwks_url, settings.jwks_refresh_seconds)
    if settings.jwks_file:
        return JwksFile(Path(settings.jwks_file), public_only=settings.algorithm != "HS256")
    return StaticKey(settings.algorithm, settings.key)


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"token claim {name} is not a number")
    return float(value)


class Authenticator:
    """Verifies `authorization: Bearer <JWT>`: a token whose subject is `service:<name>` only
    against the service keys (`service_jwks_file`), any other only against the user-token keys."""

    def __init__(
        self, user: JwtSettings, service_jwks_file: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._user = user
        self._user_keys = user_keys(user)
        self._service_keys = (
            JwksFile(Path(service_jwks_file), public_only=True) if service_jwks_file else None
        )
        self._clock = clock
        self._recheck = min(RECHECK_SECONDS, user.jwks_refresh_seconds)
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, authorization: Sequence[str]) -> Principal:
        """The caller behind the call's `authorization` values (there must be exactly one)."""
        if len(authorization) != 1:
            raise Unauthenticated(
                "missing bearer token in the authorization metadata"
                if not authorization
                else "more than one authorization header"
            )
        match = _BEARER.fullmatch(authorization[0])
        if match is None:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        token = match.group(1)
        if self._user_keys.changed() | (self._service_keys is not None and self._service_keys.changed()):
            self._verified.clear()  # a rotation: every token is judged again by the new keys
        now = self._clock()
        cached = self._verified.get(token)
        if cached is not None and now <= cached[1]:
            return cached[0]
        principal, expires = await self._decode(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            # The oldest entry goes (dicts keep insertion order): O(1) however many callers churn
            # through, and an expired entry is never served anyway (checked on every hit).
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, min(expires, now + self._recheck))
        return principal

    async def _decode(self, token: str) -> tuple[Principal, float]:
        """The token's principal and the last moment a fresh decode would still accept it."""
        try:
            unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token") from None
        subject = unverified["payload"].get("sub")
        kid = unverified["header"].get("kid")
        if isinstance(subject, str) and subject.startswith(SERVICE_PREFIX):
            claims = self._service_claims(token, kid)
            principal = Principal(service=claims["sub"][len(SERVICE_PREFIX) :], roles=_roles(claims))
        else:
            claims = await self._user_claims(token, kid)
            principal = Principal(user_id=claims["sub"])
        return principal, _number(claims, "exp") + LEEWAY_SECONDS

    async def _user_claims(self, token: str, kid: Any) -> dict[str, Any]:
        key = await self._user_keys.key(kid)
        if getattr(key, "algorithm_name", self._user.algorithm) != self._user.algorithm:
            raise Unauthenticated("token key does not match the pinned algorithm")
        claims = _decode(
            token,
            getattr(key, "key", key),
            self._user.algorithm,
            audience=self._user.audience,
            issuer=self._user.issuer,
            required=["exp", "iss", "aud", "sub"],
        )
        exp = _number(claims, "exp")
        start = _number(claims, "iat") if "iat" in claims else self._clock()
        if exp - start > self._user.max_lifetime_seconds:
            raise Unauthenticated(f"token lives longer than {self._user.max_lifetime_seconds} s")
        if not isinstance(claims["sub"], str) or not _CANONICAL_UUID.fullmatch(claims["sub"]):
            raise Unauthenticated("token subject is not a user id in canonical UUID form")
        return claims

    def _service_claims(self, token: str, kid: Any) -> dict[str, Any]:
        if self._service_keys is None:
            raise Unauthenticated("this service accepts no service tokens")
        key = self._service_keys.get(kid)
        claims = _decode(
            token,
            key.key,
            key.algorithm_name,
            audience=SERVICE_AUDIENCE,
            issuer=None,
            required=["exp", "iat", "iss", "aud", "sub"],
        )
        if not _SERVICE_SUBJECT.fullmatch(claims["sub"]) or claims["iss"] != claims["sub"]:
            raise Unauthenticated("service token subject and issuer must both be service:<name>")
        if _number(claims, "exp") - _number(claims, "iat") > SERVICE_TOKEN_MAX_LIFETIME_SECONDS:
            raise Unauthenticated(f"service token lives longer than {SERVICE_TOKEN_MAX_LIFETIME_SECONDS} s")
        return claims


def _decode(
    token: str, key: Any, algorithm: str, audience: str, issuer: str | None, required: list[str]
) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": required},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthenticated("invalid token") from None
    return claims


def _roles(claims: dict[str, Any]) -> frozenset[str]:
    roles = claims.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise Unauthenticated("invalid roles claim")
    return frozenset(roles)
