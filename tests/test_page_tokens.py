"""Page tokens: forged or malformed, on every list RPC, they are INVALID_ARGUMENT naming `page_token`,
never INTERNAL, and nothing is logged at ERROR.

Two kinds of attack. Tokens signed the way the old code did (an HMAC key derived from JWT_KEY,
which under RS256/EdDSA is a public key): anyone could make them. And tokens signed with the real
PAGE_TOKEN_SECRET for the right scope but holding a cursor of the wrong shape or range: the cursor
check is the last line of defence if the secret ever leaks, and a bad cursor once reached the caller
as INTERNAL with a traceback in the log.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.fields import MAX_PAGE_TOKEN_CHARS, PageTokens
from tests.helpers import (
    StackKeys,
    assert_nothing_at_error,
    expect_error,
    list_events,
    list_messages,
    list_sessions,
    new_id,
    the_one_call_line,
)

SAMPLE_UUID = "3f2b8c4e-9a1d-4e7b-8c2f-5d6a7b8c9d0e"
NOW_MICROS = 1_700_000_000_000_000


def sign_bytes(secret: bytes, scope: str, payload: bytes) -> str:
    """A page token around any payload bytes, signed as PageTokens signs a cursor's JSON."""
    tokens = PageTokens(secret)
    raw = tokens._mac(scope, payload) + payload
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class World:
    """One user's data on both services: three sessions (all paired with the same partner), three
    messages in the first, and two reputation events from two mutually confirmed sessions."""

    owner: str
    partner: str
    session_ids: list[str]
    metadata: tuple[tuple[str, str], ...]
    partner_metadata: tuple[tuple[str, str], ...]


@pytest.fixture(scope="module")
async def world(sessions, reputation, as_user) -> World:
    owner, partner = new_id(), new_id()
    mine, theirs = as_user(owner), as_user(partner)
    session_ids = []
    for _ in range(3):
        created = await sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=partner), metadata=mine
        )
        session_ids.append(created.session_id)
    for number in range(3):
        await sessions.AppendMessage(
            pb.AppendMessageRequest(
                session_id=session_ids[0], role=pb.MESSAGE_ROLE_QUESTION, content=f"question {number}"
            ),
            metadata=mine,
        )
    for session_id in session_ids[1:]:
        for who in (mine, theirs):
            await reputation.ConfirmCompletion(
                rpb.ConfirmCompletionRequest(session_id=session_id), metadata=who
            )
    return World(owner, partner, session_ids, mine, theirs)


@dataclass(frozen=True)
class ListRpc:
    """A list RPC: the scope its tokens are signed for, a well-shaped cursor, and how to call it."""

    scope: Callable[[World], str]
    good_cursor: list[Any]
    call: Callable[[Any, Any, World, str, tuple[tuple[str, str], ...]], Awaitable[Any]]
    domain: str


def _list_sessions(sessions: Any, reputation: Any, w: World, token: str, metadata: Any) -> Awaitable[Any]:
    return list_sessions(sessions, metadata, page_size=1, page_token=token)


def _list_messages(sessions: Any, reputation: Any, w: World, token: str, metadata: Any) -> Awaitable[Any]:
    return list_messages(sessions, metadata, w.session_ids[0], page_size=1, page_token=token)


def _list_events(sessions: Any, reputation: Any, w: World, token: str, metadata: Any) -> Awaitable[Any]:
    return list_events(reputation, metadata, page_size=1, page_token=token)


# Scopes as session_service/api.py and reputation_service/api.py build them.
LISTS = {
    "ListSessions": ListRpc(
        lambda w: f"sessions:{w.owner}:None", [NOW_MICROS, SAMPLE_UUID], _list_sessions, "interview.sessions"
    ),
    "ListMessages": ListRpc(
        lambda w: f"messages:{w.owner}:{w.session_ids[0]}", [1], _list_messages, "interview.sessions"
    ),
    "ListReputationEvents": ListRpc(
        lambda w: f"events:{w.owner}:{w.owner}", [1], _list_events, "interview.reputation"
    ),
}

# Cursor payloads (the JSON inside the token), signed with the real secret for the right scope.
MALFORMED_PAYLOADS: dict[str, bytes] = {
    "two strings": b'["x","y"]',
    "a huge float and an id": f'[1e300,"{SAMPLE_UUID}"]'.encode(),
    "a huge float": b"[1e300]",
    "negative": b"[-1]",
    "2**64": str([2**64]).encode(),
    "2**63, past bigint": str([2**63]).encode(),
    "true": b"[true]",
    "a fraction": b"[1.5]",
    "NaN": b"[NaN]",
    "Infinity": b"[Infinity]",
    "null inside": b"[null]",
    "a number as a string": b'["1"]',
    "empty list": b"[]",
    "three values": f'[1,"{SAMPLE_UUID}",3]'.encode(),
    "a dict": b'{"seq":1}',
    "a string": b'"cursor"',
    "null": b"null",
    "a bare number": b"7",
    "nested lists 10000 deep": b"[" * 10000 + b"]" * 10000,
    "nested lists as deep as fits in a token": b"[" * 150 + b"]" * 150,
    "not JSON": b"[1,",
    "not UTF-8": b"[\xff\xfe]",
    "a negative moment and an id": f'[-1,"{SAMPLE_UUID}"]'.encode(),
    "a moment past year 9999 and an id": f'[253402300800000000,"{SAMPLE_UUID}"]'.encode(),
    "a moment and an uppercase id": f'[{NOW_MICROS},"{SAMPLE_UUID.upper()}"]'.encode(),
    "a moment and a non-id": f'[{NOW_MICROS},"not-a-uuid"]'.encode(),
    "a moment and a number": f"[{NOW_MICROS},5]".encode(),
    "a 10 kB cursor": json.dumps([1, "x" * 10_000]).encode(),
}


def forged_tokens(keys: StackKeys, rpc: ListRpc, w: World) -> dict[str, str]:
    """Tokens not signed by this stack for this caller and list."""
    scope = rpc.scope(w)
    genuine = PageTokens(keys.page_token_secret).encode(scope, rpc.good_cursor)
    flipped = ("A" if genuine[0] != "A" else "B") + genuine[1:]
    return {
        "old scheme: HMAC key derived from JWT_KEY": PageTokens(keys.jwt.key.encode()).encode(
            scope, rpc.good_cursor
        ),
        "old scheme, far-away cursor": PageTokens(keys.jwt.key.encode()).encode(
            scope, [0] if len(rpc.good_cursor) == 1 else [0, SAMPLE_UUID]
        ),
        "real secret, another caller's scope": PageTokens(keys.page_token_secret).encode(
            scope.replace(w.owner, w.partner, 1), rpc.good_cursor
        ),
        "real secret, another list's scope": PageTokens(keys.page_token_secret).encode(
            "other:" + scope, rpc.good_cursor
        ),
        "a genuine token with its MAC altered": flipped,
        "the cursor without any MAC": base64.urlsafe_b64encode(json.dumps(rpc.good_cursor).encode())
        .rstrip(b"=")
        .decode(),
        "not base64": "!!!not base64!!!",
        "one character": "A",
        "a 10 kB token": "A" * 10_000,
        "a 500 kB token": "QUFB" * 125_000,
        "just over the length limit": "A" * (MAX_PAGE_TOKEN_CHARS + 1),
    }


async def expect_bad_page_token(
    call: Awaitable[Any], rpc: ListRpc, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    """`call` (created but not yet awaited) fails with INVALID_ARGUMENT naming only page_token,
    logs one call line, and nothing at ERROR."""
    caplog.clear()
    error = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert set(error.fields) == {"page_token"}, error
    assert error.domain == rpc.domain
    assert (await the_one_call_line(caplog, method))["code"] == "INVALID_ARGUMENT"
    assert_nothing_at_error(caplog)


def method_of(name: str) -> str:
    service = (
        "interview.reputation.v1.ReputationService"
        if name == "ListReputationEvents"
        else ("interview.sessions.v1.SessionService")
    )
    return f"/{service}/{name}"


@pytest.mark.parametrize("payload", list(MALFORMED_PAYLOADS))
@pytest.mark.parametrize("list_rpc", list(LISTS))
async def test_a_malformed_cursor_signed_with_the_real_secret_is_invalid_argument_page_token(
    sessions, reputation, world, keys, caplog, list_rpc, payload
):
    caplog.set_level(logging.INFO)
    rpc = LISTS[list_rpc]
    token = sign_bytes(keys.page_token_secret, rpc.scope(world), MALFORMED_PAYLOADS[payload])
    await expect_bad_page_token(
        rpc.call(sessions, reputation, world, token, world.metadata), rpc, caplog, method_of(list_rpc)
    )


FORGERY_NAMES = [
    "old scheme: HMAC key derived from JWT_KEY",
    "old scheme, far-away cursor",
    "real secret, another caller's scope",
    "real secret, another list's scope",
    "a genuine token with its MAC altered",
    "the cursor without any MAC",
    "not base64",
    "one character",
    "a 10 kB token",
    "a 500 kB token",
    "just over the length limit",
]


@pytest.mark.parametrize("forgery", FORGERY_NAMES)
@pytest.mark.parametrize("list_rpc", list(LISTS))
async def test_a_page_token_this_stack_did_not_sign_for_the_caller_is_invalid_argument_page_token(
    sessions, reputation, world, keys, caplog, list_rpc, forgery
):
    caplog.set_level(logging.INFO)
    rpc = LISTS[list_rpc]
    token = forged_tokens(keys, rpc, world)[forgery]
    await expect_bad_page_token(
        rpc.call(sessions, reputation, world, token, world.metadata), rpc, caplog, method_of(list_rpc)
    )


def test_every_forgery_case_is_in_the_table(keys):
    """The parametrised names above and the builder agree (a renamed case must not vanish)."""
    fake = World(new_id(), new_id(), [new_id()], (), ())
    for rpc in LISTS.values():
        assert set(forged_tokens(keys, rpc, fake)) == set(FORGERY_NAMES)


@pytest.mark.parametrize("list_rpc", list(LISTS))
async def test_a_genuine_token_pages_on_and_the_same_token_from_another_caller_is_refused(
    sessions, reputation, world, caplog, list_rpc
):
    """The control: the stack's own tokens work, so the refusals above are about the tokens."""
    caplog.set_level(logging.INFO)
    rpc = LISTS[list_rpc]
    first = await rpc.call(sessions, reputation, world, "", world.metadata)
    assert first.next_page_token
    second = await rpc.call(sessions, reputation, world, first.next_page_token, world.metadata)
    items = (
        "events"
        if list_rpc == "ListReputationEvents"
        else ("sessions" if list_rpc == "ListSessions" else "messages")
    )
    assert len(getattr(second, items)) == 1
    assert getattr(second, items)[0] != getattr(first, items)[0]

    await expect_bad_page_token(
        rpc.call(sessions, reputation, world, first.next_page_token, world.partner_metadata),
        rpc,
        caplog,
        method_of(list_rpc),
    )


# Cursors at the very edges of their range: well-shaped, so the list answers (maybe empty).
EDGE_CURSORS = {
    "ListSessions": {
        "epoch": [0, SAMPLE_UUID],
        "last moment of year 9999": [253402300799999999, SAMPLE_UUID],
    },
    "ListMessages": {"zero": [0], "largest bigint": [2**63 - 1]},
    "ListReputationEvents": {"zero": [0], "largest bigint": [2**63 - 1]},
}
EDGE_CASES = [(name, edge) for name, edges in EDGE_CURSORS.items() for edge in edges]


@pytest.mark.parametrize(("list_rpc", "edge"), EDGE_CASES)
async def test_a_cursor_at_the_edge_of_its_range_is_served_not_an_internal_error(
    sessions, reputation, world, keys, caplog, list_rpc, edge
):
    caplog.set_level(logging.INFO)
    rpc = LISTS[list_rpc]
    token = PageTokens(keys.page_token_secret).encode(rpc.scope(world), EDGE_CURSORS[list_rpc][edge])
    caplog.clear()
    await rpc.call(sessions, reputation, world, token, world.metadata)
    assert (await the_one_call_line(caplog, method_of(list_rpc)))["code"] == "OK"
    assert_nothing_at_error(caplog)
