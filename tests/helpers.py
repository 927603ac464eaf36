"""Test helpers: fresh ids, tokens as metadata, decoding rich errors, waiting on conditions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from common.auth import INTERNAL_ROLE, ServiceTokenSigner, mint
from common.auth.signing import public_jwk
from common.config import JwtSettings, ServiceSigning
from common.devcerts import write_private

SAMPLE_ID = "3f2b8c4e-9a1d-4e7b-8c2f-5d6a7b8c9d0e"
# Values that are not UUIDs, each one way a caller could get an id wrong.
MALFORMED_UUIDS = {
    "words": "not-a-uuid",
    "one char short": SAMPLE_ID[:-1],
    "one char long": SAMPLE_ID + "0",
    "non-hex digit": "g" + SAMPLE_ID[1:],
    "leading space": " " + SAMPLE_ID,
    "trailing newline": SAMPLE_ID + "\n",
    "sql": "'; DROP TABLE sessions.sessions; --",
    "nil-ish": "0",
}


def new_id() -> str:
    return str(uuid.uuid4())


def user_metadata(settings: JwtSettings, user_id: str, ttl: int = 300) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Bearer " + mint(settings, settings.key, user_id, ttl)),)


def new_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def private_pem(key: Any) -> bytes:
    return key.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_jwks(path: Path, keys: dict[str, Any]) -> None:
    """Writes (or replaces) a JWK Set file with the public halves of `keys` (kid -> private key)."""
    path.write_text(json.dumps({"keys": [public_jwk(key, kid) for kid, key in keys.items()]}))


@dataclass(frozen=True)
class ServiceKeys:
    """The service-token keys of a test stack: the receivers trust `jwks_file`, which holds the
    public keys of the tests ("tests-key") and of the reputation service ("reputation-key")."""

    jwks_file: str
    tests_key: Any
    reputation: ServiceSigning

    @staticmethod
    def make(directory: Path) -> ServiceKeys:
        tests_key, reputation_key = new_private_key(), new_private_key()
        write_private(directory / "reputation.pem", private_pem(reputation_key))
        write_jwks(
            directory / "service-jwks.json", {"tests-key": tests_key, "reputation-key": reputation_key}
        )
        return ServiceKeys(
            jwks_file=str(directory / "service-jwks.json"),
            tests_key=tests_key,
            reputation=ServiceSigning(key_file=str(directory / "reputation.pem"), key_id="reputation-key"),
        )


def service_token(keys: ServiceKeys, roles: list[str] | None = None, name: str = "tests") -> str:
    signer = ServiceTokenSigner(name, keys.tests_key, "tests-key")
    return signer.token([INTERNAL_ROLE] if roles is None else roles)


def service_metadata(
    keys: ServiceKeys, roles: list[str] | None = None, name: str = "tests"
) -> tuple[tuple[str, str], ...]:
    return (("authorization", "Bearer " + service_token(keys, roles, name)),)


@dataclass
class RichError:
    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: dict[str, str]
    message: str


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """The ErrorInfo and BadRequest inside a failed call's google.rpc.Status."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    fields: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
    return RichError(error.code(), info.reason, info.domain, dict(info.metadata), fields, status.message)


async def expect_error(call: Awaitable[object], code: grpc.StatusCode, reason: str) -> RichError:
    """Awaits a call that must fail with `code` and ErrorInfo `reason`; returns the decoded error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        decoded = rich_error(error)
        assert (decoded.code, decoded.reason) == (code, reason), decoded
        return decoded
    raise AssertionError(f"expected {code.name} {reason}, the call succeeded")


async def wait_for(
    condition: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.05
) -> None:
    """Polls `condition` until true; fails with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class StackKeys:
    """All key material of a test stack: user tokens (HS256, the identity provider's secret), service
    tokens, and the page-token secret."""

    jwt: JwtSettings
    service: ServiceKeys
    page_token_secret: bytes

    def env(self) -> dict[str, str]:
        """The same keys as environment variables, for a service run as its own process."""
        return {
            "JWT_ALGORITHM": self.jwt.algorithm,
            "JWT_KEY": self.jwt.key,
            "SERVICE_TOKEN_JWKS_FILE": self.service.jwks_file,
            "SERVICE_SIGNING_KEY_FILE": self.service.reputation.key_file,
            "SERVICE_SIGNING_KEY_ID": self.service.reputation.key_id,
            "PAGE_TOKEN_SECRET": self.page_token_secret.decode(),
        }
