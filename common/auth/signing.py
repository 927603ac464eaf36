"""Tokens we sign ourselves: each service's short-lived service tokens (its own private key), and
user tokens for development and tests (production user tokens come from the identity provider)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from common.auth.verify import SERVICE_AUDIENCE, SERVICE_PREFIX, SERVICE_TOKEN_MAX_LIFETIME_SECONDS

if TYPE_CHECKING:
    from common.config import JwtSettings

# The private keys a service token can be signed with (which of them algorithm_of accepts).
ServiceKey: TypeAlias = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

SERVICE_TOKEN_TTL_SECONDS = 120
# A token is replaced this long before it expires, so no call carries one about to lapse.
SERVICE_TOKEN_REFRESH_MARGIN_SECONDS = 30


def algorithm_of(private_key: object) -> str:
    """The JWS algorithm a private key signs with: Ed25519 -> EdDSA, RSA -> RS256, P-256 -> ES256."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(private_key.curve, ec.SECP256R1):
        return "ES256"
    raise ValueError("must be an Ed25519, RSA or P-256 private key")


def load_private_key(pem: bytes) -> ServiceKey:
    """A PEM private key usable for service tokens; ValueError says what is wrong with it."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"is not an unencrypted PEM private key ({error})") from None
    algorithm_of(key)  # ValueError for any other kind of key
    return cast(ServiceKey, key)


def public_jwk(private_key: ServiceKey, key_id: str) -> dict[str, Any]:
    """The public half of `private_key` as a JWK, for the receivers' SERVICE_TOKEN_JWKS_FILE."""
    algorithm = algorithm_of(private_key)
    jwk: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(algorithm).to_jwk(private_key.public_key()))
    return {**jwk, "kid": key_id, "alg": algorithm, "use": "sig"}


class ServiceTokenSigner:
    """This service's own short-lived tokens (`sub` = `iss` = `service:<name>`, `aud` =
    interview.internal), one per role set, reused until shortly before they expire."""

    def __init__(
        self,
        name: str,
        private_key: ServiceKey,
        key_id: str,
        ttl_seconds: int = SERVICE_TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        assert ttl_seconds <= SERVICE_TOKEN_MAX_LIFETIME_SECONDS
        self._subject = SERVICE_PREFIX + name
        self._key = private_key
        self._algorithm = algorithm_of(private_key)
        self._key_id = key_id
        self._ttl = ttl_seconds
        self._clock = clock
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}

    def token(self, roles: list[str]) -> str:
        now = self._clock()
        held = self._tokens.get(tuple(roles))
        if held is not None and now < held[1]:
            return held[0]
        issued = int(now)
        claims = {
            "sub": self._subject,
            "iss": self._subject,
            "aud": SERVICE_AUDIENCE,
            "iat": issued,
            "exp": issued + self._ttl,
            "roles": roles,
        }
        token = jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"kid": self._key_id})
        self._tokens[tuple(roles)] = (token, issued + self._ttl - SERVICE_TOKEN_REFRESH_MARGIN_SECONDS)
        return token


def mint(
    settings: JwtSettings,
    signing_key: Any,
    subject: str,
    ttl_seconds: int,
    roles: list[str] | None = None,
    key_id: str | None = None,
) -> str:
    """A user token as the identity provider would sign it (development and tests only)."""
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
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(claims, signing_key, algorithm=settings.algorithm, headers=headers)
