"""Request bytes that do not parse (or a string field that is not UTF-8) are INVALID_ARGUMENT naming
`request`, after authentication: UNAUTHENTICATED without a token, PERMISSION_DENIED for the wrong
kind of caller. Never UNKNOWN, never an internal class name, and one call-log line like any call.

The bytes go out untouched: a channel method with no serializer sends exactly what it is given.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from common.app import AppServer
from tests.helpers import assert_nothing_at_error, expect_error, new_id, the_one_call_line

SESSIONS = "/interview.sessions.v1.SessionService"
INTERNAL = "/interview.sessions.v1.SessionInternalService"
REPUTATION = "/interview.reputation.v1.ReputationService"


@dataclass(frozen=True)
class Rpc:
    service: str  # which server: "session" or "reputation"
    caller: str  # the kind of token it takes: "user" or "service"
    string_tag: int  # the tag byte of one of its string fields (field number << 3 | 2)


RPCS = {
    f"{SESSIONS}/CreateSession": Rpc("session", "user", 0x0A),
    f"{SESSIONS}/GetSession": Rpc("session", "user", 0x0A),
    f"{SESSIONS}/ListSessions": Rpc("session", "user", 0x1A),
    f"{SESSIONS}/AppendMessage": Rpc("session", "user", 0x1A),
    f"{SESSIONS}/ListMessages": Rpc("session", "user", 0x0A),
    f"{INTERNAL}/LookupSession": Rpc("session", "service", 0x0A),
    f"{INTERNAL}/ReleaseJobPosting": Rpc("session", "service", 0x0A),
    f"{REPUTATION}/ConfirmCompletion": Rpc("reputation", "user", 0x0A),
    f"{REPUTATION}/GetReputation": Rpc("reputation", "user", 0x0A),
    f"{REPUTATION}/ListReputationEvents": Rpc("reputation", "user", 0x0A),
}

# Each malformed body, from the RPC it is sent to.
BODIES = {
    "three 0xff bytes": lambda rpc: b"\xff\xff\xff",
    "a string field that is not UTF-8": lambda rpc: bytes([rpc.string_tag]) + b"\x02\xc3\x28",
    "a string field with a lone surrogate": lambda rpc: bytes([rpc.string_tag]) + b"\x03\xed\xa0\x80",
    "a length running past the end": lambda rpc: bytes([rpc.string_tag]) + b"\x05ab",
    "a truncated varint": lambda rpc: b"\x10\xff",
    "field number zero": lambda rpc: b"\x00\x01",
}
# Words that would mean an internal exception reached the caller.
INTERNAL_WORDS = ["DecodeError", "Traceback", "google.protobuf", "Exception", "UnicodeDecodeError"]


@pytest.fixture(scope="module")
async def channels(
    session_server: AppServer, reputation_server: AppServer
) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{session_server.port}") as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{reputation_server.port}") as reputation,
    ):
        yield {"session": session, "reputation": reputation}


def raw_call(channels: dict[str, grpc.aio.Channel], method: str, body: bytes, metadata: Any) -> Any:
    send = channels[RPCS[method].service].unary_unary(
        method, request_serializer=None, response_deserializer=None
    )
    return send(body, metadata=metadata, timeout=10)


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("method", list(RPCS))
async def test_bytes_that_do_not_parse_with_a_valid_token_are_invalid_argument_naming_request(
    channels, as_user, as_service, caplog, method, body
):
    rpc = RPCS[method]
    metadata = as_user(new_id()) if rpc.caller == "user" else as_service
    caplog.set_level(logging.INFO)
    caplog.clear()

    error = await expect_error(
        raw_call(channels, method, BODIES[body](rpc), metadata),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert set(error.fields) == {"request"}, error
    assert error.domain == ("interview.reputation" if rpc.service == "reputation" else "interview.sessions")
    for word in INTERNAL_WORDS:
        assert word not in error.message
        assert word not in error.fields["request"]

    line = await the_one_call_line(caplog, method)
    assert (line["code"], line.get("reason")) == ("INVALID_ARGUMENT", "INVALID_ARGUMENT")
    assert_nothing_at_error(caplog)


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("method", list(RPCS))
async def test_bytes_that_do_not_parse_without_a_token_are_unauthenticated(channels, caplog, method, body):
    caplog.set_level(logging.INFO)
    caplog.clear()

    error = await expect_error(
        raw_call(channels, method, BODIES[body](RPCS[method]), ()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert error.fields == {}

    line = await the_one_call_line(caplog, method)
    assert line["code"] == "UNAUTHENTICATED"
    assert_nothing_at_error(caplog)


@pytest.mark.parametrize("method", [f"{INTERNAL}/LookupSession", f"{INTERNAL}/ReleaseJobPosting"])
async def test_bytes_that_do_not_parse_from_a_user_on_the_internal_service_are_permission_denied(
    channels, as_user, caplog, method
):
    """The caller's kind is checked right after authentication, before the request is looked at."""
    caplog.set_level(logging.INFO)
    caplog.clear()
    await expect_error(
        raw_call(channels, method, b"\xff\xff\xff", as_user(new_id())),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert (await the_one_call_line(caplog, method))["code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("method", [f"{SESSIONS}/GetSession", f"{REPUTATION}/ConfirmCompletion"])
async def test_well_formed_raw_bytes_reach_the_argument_checks(channels, as_user, caplog, method):
    """The control: the same raw path with a body that parses gets the ordinary field checks, so
    `request` above means the bytes, not the way they were sent."""
    caplog.set_level(logging.INFO)
    caplog.clear()
    not_a_uuid = b"\x0a\x03abc"  # session_id = "abc"
    error = await expect_error(
        raw_call(channels, method, not_a_uuid, as_user(new_id())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert set(error.fields) == {"session_id"}
    assert (await the_one_call_line(caplog, method))["code"] == "INVALID_ARGUMENT"
