"""The SQL each benchmarked RPC runs on its success path, taken verbatim from the services' stores
and run on plain asyncpg. The db floor calls these directly; the fused floor behind a bare handler."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from common.fields import PageTokens
from reputation_service import store as reputation_store
from session_service import domain
from session_service import store as session_store

# `:name` binds, but not the `::type` casts the statements also contain.
_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class NotFound(Exception):
    """The row the call needs is missing or not the caller's (the RPC would answer NOT_FOUND)."""


@dataclass(frozen=True)
class Statement:
    """A SQLAlchemy text() statement rewritten with asyncpg's $n placeholders."""

    sql: str
    names: tuple[str, ...]

    def args(self, **params: Any) -> list[Any]:
        return [params[name] for name in self.names]


def positional(clause: Any) -> Statement:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return Statement(_BIND.sub(number, clause.text), tuple(names))


GET = positional(session_store._GET)
LIST_SESSIONS = positional(session_store._LIST_SESSIONS[(False, False)])
CREATE = positional(session_store._CREATE)
COMPLETE = positional(session_store._TRANSITIONS[(domain.COMPLETE, True)])
COMPLETE_PAIRED = positional(session_store._TRANSITIONS[(domain.COMPLETE_PAIRED, False)])
RETAKE = positional(session_store._RETAKE)
QUESTION = positional(session_store._QUESTION)
MESSAGES_FIRST = positional(session_store._MESSAGES_FIRST)
MESSAGES_AFTER = positional(session_store._MESSAGES_AFTER)
STATE = positional(reputation_store._STATE)
LOCK_SESSION = positional(reputation_store._LOCK_SESSION)
CONFIRM = positional(reputation_store._CONFIRM)
AWARD = positional(reputation_store._AWARD)
DELIVERED = positional(reputation_store._DELIVERED)
# The services' own defaults: a page is 50 rows, fetched as 51 to know whether another follows.
PAGE = 50
OUTBOX_LEASE_SECONDS = 10.0


@dataclass
class Pools:
    """One pool per service, even when both schemas live in one database."""

    sessions: asyncpg.Pool
    reputation: asyncpg.Pool
    tokens: PageTokens


Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


async def _row(db: Db, statement: Statement, **params: Any) -> asyncpg.Record:
    row = await db.fetchrow(statement.sql, *statement.args(**params))
    if row is None:
        raise NotFound(statement.sql.split()[0])
    return row


async def _rows(db: Db, statement: Statement, **params: Any) -> list[asyncpg.Record]:
    return await db.fetch(statement.sql, *statement.args(**params))


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
    """The session read (visibility), then the page, on one connection as the service does."""
    session_id = request.session_id
    scope = f"messages:{caller}:{session_id}"
    cursor = db.tokens.decode(scope, request.page_token) if request.page_token else None
    async with db.sessions.acquire() as conn:
        _visible(await _row(conn, GET, session_id=session_id), caller)
        if cursor is None:
            return await _rows(conn, MESSAGES_FIRST, session_id=session_id, limit=PAGE + 1)
        return await _rows(conn, MESSAGES_AFTER, session_id=session_id, after=cursor[0], limit=PAGE + 1)


async def confirm_completion(db: Pools, caller: str, request: Any) -> asyncpg.Record:
    """The reputation service's statements in its order, the session service's (LookupSession,
    CompletePairedSession) inline where it would call that service."""
    session_id = request.session_id
    known = await _rows(db.reputation, STATE, session_id=session_id)
    # Not known here yet: the reputation service would ask the session service (LookupSession).
    session = _visible(known[0] if known else await _row(db.sessions, GET, session_id=session_id), caller)
    owner, partner = str(session["user_id"]), str(session["partner_user_id"])
    status = session["last_known_status"] if known else session["status"]
    queued = False
    async with db.reputation.acquire() as conn, conn.transaction():
        params = {"session_id": session_id, "user_id": owner, "partner_user_id": partner, "status": status}
        award_time = await conn.fetchval(LOCK_SESSION.sql, *LOCK_SESSION.args(**params))
        confirmed = {str(r[0]) for r in await _rows(conn, CONFIRM, session_id=session_id, caller=caller)}
        if award_time is None and len(confirmed) == 2:
            first, second = sorted(confirmed)
            award = {
                "session_id": session_id,
                "first_event": str(uuid.uuid4()),
                "first_user": first,
                "second_event": str(uuid.uuid4()),
                "second_user": second,
                "lease": OUTBOX_LEASE_SECONDS,
            }
            awarded = await conn.fetchrow(AWARD.sql, *AWARD.args(**award))
            queued = awarded is not None and awarded["queued"] == 1
    if queued:
        await _row(db.sessions, COMPLETE_PAIRED, session_id=session_id)
        await _rows(db.reputation, DELIVERED, session_id=session_id)
    return await _row(db.reputation, STATE, session_id=session_id)


PATHS: dict[str, Callable[[Pools, str, Any], Awaitable[Any]]] = {
    "GetSession": get_session,
    "ListSessions": list_sessions,
    "ListMessages": list_messages,
    "CreateSession": create_session,
    "AppendMessage": append_message,
    "CompleteSession": complete_session,
    "RetakeSession": retake_session,
    "ConfirmCompletion": confirm_completion,
}


async def open_pools(session_url: str, reputation_url: str, size: int, page_key: bytes) -> Pools:
    """A pool of `size` connections per service, as each service process holds one."""
    sessions = await asyncpg.create_pool(session_url, min_size=size, max_size=size)
    reputation = await asyncpg.create_pool(reputation_url, min_size=size, max_size=size)
    return Pools(sessions=sessions, reputation=reputation, tokens=PageTokens(page_key))


async def close_pools(pools: Pools) -> None:
    await pools.sessions.close()
    await pools.reputation.close()
