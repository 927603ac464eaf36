"""The SQL each benchmarked RPC runs on its success path, the services' own store statements,
run on plain asyncpg. The db floor calls these directly; the fused floor behind a bare handler."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, TypeAlias

import asyncpg

from common.db import Query
from common.fields import PageTokens
from reputation_service import domain as reputation_domain
from reputation_service import store as reputation_store
from reputation_service.api import LEADERBOARD_CURSOR
from reputation_service.domain import SessionFacts
from reputation_service.marks import DeliveryMarks
from session_service import domain
from session_service import store as session_store
from session_service.api import MESSAGES_CURSOR


class NotFound(Exception):
    """The row the call needs is missing or not the caller's (the RPC would answer NOT_FOUND)."""


class Invalid(Exception):
    """The request is not one the service would take (the RPC would answer INVALID_ARGUMENT)."""


GET = session_store._GET
LIST_SESSIONS = session_store._LIST_SESSIONS[(False, False)]
CREATE = session_store._CREATE
COMPLETE = session_store._TRANSITIONS[(domain.COMPLETE, True)]
COMPLETE_PAIRED = session_store._TRANSITIONS[(domain.COMPLETE_PAIRED, False)]
RETAKE = session_store._RETAKE
QUESTION = session_store._QUESTION
MESSAGES = session_store._MESSAGES
# The services' defaults: the floor decides awards with the same caps and window.
CAPS = reputation_domain.Caps()
CONFIRMATION_WINDOW = timedelta(days=7)
# The services' own defaults: a page is 50 rows, fetched as 51 to know whether another follows.
PAGE = 50
OUTBOX_LEASE_SECONDS = 10.0


@dataclass
class Pools:
    """One pool per service, even when both schemas live in one database."""

    sessions: asyncpg.Pool
    reputation: asyncpg.Pool
    tokens: PageTokens
    marks: DeliveryMarks  # the reputation service's deliveries are marked the same way


Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def _row(db: Db, statement: Query, **params: Any) -> asyncpg.Record:
    row = await db.fetchrow(statement.sql, *statement.args(params))
    if row is None:
        raise NotFound(statement.sql.split()[0])
    return row


async def _rows(db: Db, statement: Query, **params: Any) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(statement.sql, *statement.args(params))
    return rows


def _visible(row: asyncpg.Record, caller: str) -> asyncpg.Record:
    if caller not in (str(row["user_id"]), str(row["partner_user_id"])):
        raise NotFound("session")
    return row


async def get_session(db: Pools, caller: str, request: Any) -> asyncpg.Record:
    return _visible(await _row(db.sessions, GET, session_id=request.session_id), caller)


async def list_sessions(db: Pools, caller: str, request: Any) -> list[asyncpg.Record]:
    return await _rows(db.sessions, LIST_SESSIONS, caller=caller, limit=PAGE + 1)


async def create_session(db: Pools, caller: str, request: Any) -> asyncpg.Record:
    params = {
        "session_id": str(uuid.uuid4()),
        "caller": caller,
        "partner_user_id": request.partner_user_id or None,
        "job_posting_id": request.job_posting_id,
        "request_id": request.request_id or None,
    }
    return await _row(db.sessions, CREATE, **params)


async def complete_session(db: Pools, caller: str, request: Any) -> asyncpg.Record:
    return await _row(db.sessions, COMPLETE, session_id=request.session_id, caller=caller)


async def retake_session(db: Pools, caller: str, request: Any) -> asyncpg.Record:
    params = {"new_id": str(uuid.uuid4()), "session_id": request.session_id, "caller": caller}
    return await _row(db.sessions, RETAKE, request_id=request.request_id or None, **params)


async def append_message(db: Pools, caller: str, request: Any) -> asyncpg.Record:
    params = {"message_id": str(uuid.uuid4()), "session_id": request.session_id, "caller": caller}
    return await _row(db.sessions, QUESTION, content=request.content, request_id=None, **params)


async def list_messages(db: Pools, caller: str, request: Any) -> list[asyncpg.Record]:
    """Visibility and the page in the one statement the service runs."""
    session_id = request.session_id
    scope = f"messages:{caller}:{session_id}"
    cursor = db.tokens.decode(scope, request.page_token, MESSAGES_CURSOR) if request.page_token else None
    if request.page_token and cursor is None:
        raise Invalid("page_token")
    after = cursor[0] if cursor else 0
    rows = await _rows(
        db.sessions, MESSAGES, session_id=session_id, caller=caller, after=after, limit=PAGE + 1
    )
    if not rows:
        raise NotFound("session")
    return rows


async def confirm_completion(db: Pools, caller: str, request: Any) -> reputation_store.ConfirmationState:
    """The reputation service's statements in its order, the session service's (LookupSession,
    CompletePairedSession) inline where it would call that service."""
    session_id = request.session_id

    async def record(facts: SessionFacts | None) -> tuple[reputation_store.ConfirmationState | None, bool]:
        async with db.reputation.acquire() as conn:
            return await reputation_store.confirm(
                conn, session_id, caller, None, facts, CAPS, CONFIRMATION_WINDOW, OUTBOX_LEASE_SECONDS
            )

    state, queued = await record(None)
    if state is None:
        # Not known here yet: the reputation service would ask the session service (LookupSession).
        found = _visible(await _row(db.sessions, GET, session_id=session_id), caller)
        state, queued = await record(
            SessionFacts(session_id, str(found["user_id"]), str(found["partner_user_id"]), found["status"])
        )
        assert state is not None
    if not state.session.has_participant(caller):
        raise NotFound("session")
    if queued:
        await _row(db.sessions, COMPLETE_PAIRED, session_id=session_id)
        db.marks.add(session_id)
        state = replace(state, delivered=True)
    return state


async def list_leaderboard(db: Pools, caller: str, request: Any) -> tuple[date, list[asyncpg.Record], int]:
    """The all-time board's page the service reads: its start, the rows and the rank before them."""
    scope = f"leaderboard:{caller}:all"
    cursor = db.tokens.decode(scope, request.page_token, LEADERBOARD_CURSOR) if request.page_token else None
    if request.page_token and cursor is None:
        raise Invalid("page_token")
    async with db.reputation.acquire() as conn:
        start, rows = await reputation_store.leaderboard(
            conn, "all", None, (cursor[2], cursor[3]) if cursor else None, PAGE + 1
        )
    return start, rows, cursor[1] if cursor else 0


PATHS: dict[str, Callable[[Pools, str, Any], Awaitable[Any]]] = {
    "GetSession": get_session,
    "ListSessions": list_sessions,
    "ListMessages": list_messages,
    "CreateSession": create_session,
    "AppendMessage": append_message,
    "CompleteSession": complete_session,
    "RetakeSession": retake_session,
    "ListLeaderboard": list_leaderboard,
    "ConfirmCompletion": confirm_completion,
}


async def _kept(conn: asyncpg.Connection) -> None:
    """A released connection goes back as it is (asyncpg still rolls back an open transaction)."""


async def open_pools(session_url: str, reputation_url: str, size: int, page_secret: bytes) -> Pools:
    """A pool of `size` connections per service, as each service process holds one; page tokens
    signed with the services' PAGE_TOKEN_SECRET.

    Released connections are not reset: asyncpg's default reset is one more round trip per
    release (advisory unlocks, CLOSE ALL, UNLISTEN, RESET ALL), which the services' SQLAlchemy
    pool does not make (it only rolls back an open transaction) and no statement here needs."""
    sessions = await asyncpg.create_pool(session_url, min_size=size, max_size=size, reset=_kept)
    reputation = await asyncpg.create_pool(reputation_url, min_size=size, max_size=size, reset=_kept)
    marks = DeliveryMarks(reputation.acquire)
    await marks.start()
    return Pools(sessions=sessions, reputation=reputation, tokens=PageTokens(page_secret), marks=marks)


async def close_pools(pools: Pools) -> None:
    await pools.marks.stop()
    await pools.sessions.close()
    await pools.reputation.close()
