"""Test helpers: fresh ids, tokens as metadata, decoding rich errors, waiting on conditions."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from common.auth import INTERNAL_ROLE, mint
from common.config import JwtSettings

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


def service_metadata(
    settings: JwtSettings, roles: list[str] | None = None, name: str = "tests"
) -> tuple[tuple[str, str], ...]:
    token = mint(settings, settings.key, f"service:{name}", 60, [INTERNAL_ROLE] if roles is None else roles)
    return (("authorization", "Bearer " + token),)


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
