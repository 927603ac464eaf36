"""Queries on the `sessions` schema. Each use case is one statement where it can be;
a read only follows when a conditional statement matched nothing, to pick the error."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asyncpg import Record

from common.db import Query
from session_service import domain
from session_service.domain import SessionFacts, Transition

SESSION_COLUMNS = (
    "session_id, user_id, partner_user_id, job_posting_id, status, current_question_number, "
    "retake_number, original_session_id, create_time, update_time, complete_time"
)
MESSAGE_COLUMNS = "message_id, session_id, role, content, question_number, create_time, seq"
PARTICIPANT = "(user_id = :caller OR partner_user_id = :caller)"
# Content bytes in one ListMessages page: the reply stays under gRPC's 4 MB message limit.
MESSAGE_PAGE_BYTES = 3 * 1024 * 1024
# A retake loses at most once per concurrent winner; this bound is never reached in practice.
MAX_RETAKE_ATTEMPTS = 100

_CREATE = Query(
    f"""
    INSERT INTO sessions.sessions (session_id, user_id, partner_user_id, job_posting_id, status,
                                   request_id)
    VALUES (:session_id, :caller, :partner_user_id, :job_posting_id, 'active', :request_id)
    ON CONFLICT (user_id, request_id) WHERE request_id IS NOT NULL AND original_session_id IS NULL
    DO NOTHING
    RETURNING {SESSION_COLUMNS}
    """
)
# A request_id is scoped to the caller and the RPC: CreateSession makes originals, RetakeSession
# retakes, each kind with its own unique index (migration 0002).
_CREATED_BY_REQUEST = Query(
    f"SELECT {SESSION_COLUMNS} FROM sessions.sessions "
    "WHERE user_id = :caller AND request_id = :request_id AND original_session_id IS NULL"
)
_RETAKEN_BY_REQUEST = Query(
    f"SELECT {SESSION_COLUMNS} FROM sessions.sessions "
    "WHERE user_id = :caller AND request_id = :request_id AND original_session_id IS NOT NULL"
)
_GET = Query(f"SELECT {SESSION_COLUMNS} FROM sessions.sessions WHERE session_id = :session_id")
_RETAKE = Query(
    f"""
    INSERT INTO sessions.sessions (session_id, user_id, job_posting_id, status, retake_number,
                                   original_session_id, request_id)
    SELECT :new_id, src.user_id, src.job_posting_id, 'active',
           (SELECT max(c.retake_number) + 1 FROM sessions.sessions c
             WHERE COALESCE(c.original_session_id, c.session_id)
                 = COALESCE(src.original_session_id, src.session_id)),
           COALESCE(src.original_session_id, src.session_id), :request_id
      FROM sessions.sessions src
     WHERE src.session_id = :session_id AND src.user_id = :caller
       AND src.status = 'completed' AND src.job_posting_id IS NOT NULL
    ON CONFLICT (user_id, request_id) WHERE request_id IS NOT NULL AND original_session_id IS NOT NULL
    DO NOTHING
    RETURNING {SESSION_COLUMNS}
    """
)
_CHAIN_OF = Query(
    "SELECT COALESCE(original_session_id, session_id) AS chain, user_id FROM sessions.sessions "
    f"WHERE session_id = :session_id AND {PARTICIPANT}"
)
# Every retake is a solo session of the chain's owner, so the owner sees the whole chain (a range
# of the chain-number index) and a partner of the root sees the root alone.
_CHAIN_PAGE = Query(
    f"""
    SELECT {SESSION_COLUMNS} FROM sessions.sessions
     WHERE COALESCE(original_session_id, session_id) = :chain AND retake_number > :after
     ORDER BY COALESCE(original_session_id, session_id), retake_number
     LIMIT :limit
    """
)
_ROOT_PAGE = Query(
    f"SELECT {SESSION_COLUMNS} FROM sessions.sessions WHERE session_id = :chain AND :after < 1"
)
_RELEASE = Query(
    "UPDATE sessions.sessions SET job_posting_id = NULL, update_time = now() "
    "WHERE job_posting_id = :job_posting_id"
)
_QUESTION = Query(
    f"""
    WITH opened AS (
        UPDATE sessions.sessions
           SET current_question_number = current_question_number + 1, update_time = now()
         WHERE session_id = :session_id AND status = 'active' AND {PARTICIPANT}
        RETURNING current_question_number
    )
    INSERT INTO sessions.messages (message_id, session_id, author_user_id, role, content,
                                   question_number, request_id)
    SELECT :message_id, :session_id, :caller, 'question', :content, current_question_number,
           :request_id
      FROM opened
    RETURNING {MESSAGE_COLUMNS}
    """
)
# The UPDATE takes the session's row lock, so an answer cannot slip past a concurrent completion.
_ANSWER = Query(
    f"""
    WITH current AS (
        UPDATE sessions.sessions SET update_time = now()
         WHERE session_id = :session_id AND status = 'active' AND current_question_number > 0
           AND {PARTICIPANT}
        RETURNING current_question_number
    )
    INSERT INTO sessions.messages (message_id, session_id, author_user_id, role, content,
                                   question_number, request_id)
    SELECT :message_id, :session_id, :caller, 'answer', :content, current_question_number,
           :request_id
      FROM current
    RETURNING {MESSAGE_COLUMNS}
    """
)
_MESSAGE_BY_REQUEST = Query(
    f"SELECT {MESSAGE_COLUMNS} FROM sessions.messages "
    "WHERE author_user_id = :caller AND request_id = :request_id"
)
# Visibility and the page in one round trip: no row means no such session for this caller;
# a row with NULL message columns means a visible session with no (more) messages.
_MESSAGES = Query(
    f"""
    SELECT m.* FROM sessions.sessions s
      LEFT JOIN LATERAL (
          SELECT page.*, sum(octet_length(content)) OVER (ORDER BY seq ROWS UNBOUNDED PRECEDING)
                 AS running_bytes
            FROM (SELECT {MESSAGE_COLUMNS} FROM sessions.messages
                   WHERE session_id = s.session_id AND seq > :after
                   ORDER BY seq LIMIT :limit) AS page
           ORDER BY seq
      ) AS m ON true
     WHERE s.session_id = :session_id AND (s.user_id = :caller OR s.partner_user_id = :caller)
    """
)


def _list_sessions_sql(with_status: bool, with_cursor: bool) -> Query:
    """Newest first over "owner or partner": each side is its own index range scan, merged."""
    conditions = ""
    if with_status:
        conditions += " AND status = :status"
    if with_cursor:
        conditions += " AND (create_time, session_id) < (:after_time, :after_id)"
    order = "ORDER BY create_time DESC, session_id DESC LIMIT :limit"
    return Query(
        f"""
        SELECT {SESSION_COLUMNS} FROM (
            (SELECT {SESSION_COLUMNS} FROM sessions.sessions
              WHERE user_id = :caller{conditions} {order})
            UNION ALL
            (SELECT {SESSION_COLUMNS} FROM sessions.sessions
              WHERE partner_user_id = :caller{conditions} {order})
        ) AS mine {order}
        """
    )


_LIST_SESSIONS = {(s, c): _list_sessions_sql(s, c) for s in (False, True) for c in (False, True)}


def _transition_sql(transition: Transition, caller_scoped: bool) -> Query:
    sources = ", ".join(f"'{status}'" for status in sorted(transition.sources))
    conditions = f"status IN ({sources})"
    if caller_scoped:
        conditions += f" AND {PARTICIPANT}"
    if transition.owner_only:
        conditions += " AND user_id = :caller"
    if transition.solo_only:
        conditions += " AND partner_user_id IS NULL"
    if transition.paired_only:
        conditions += " AND partner_user_id IS NOT NULL"
    completed = ", complete_time = now()" if transition.target == domain.COMPLETED else ""
    return Query(
        f"UPDATE sessions.sessions SET status = '{transition.target}', update_time = now(){completed} "
        f"WHERE session_id = :session_id AND {conditions} RETURNING {SESSION_COLUMNS}"
    )


_TRANSITIONS = {
    (t, scoped): _transition_sql(t, scoped)
    for t in (domain.PAUSE, domain.RESUME, domain.COMPLETE, domain.COMPLETE_PAIRED)
    for scoped in (False, True)
}


def facts(row: Record | None) -> SessionFacts | None:
    if row is None:
        return None
    return SessionFacts(
        session_id=str(row["session_id"]),
        user_id=str(row["user_id"]),
        partner_user_id=str(row["partner_user_id"]) if row["partner_user_id"] else None,
        status=row["status"],
        job_posting_id=str(row["job_posting_id"]) if row["job_posting_id"] else None,
        current_question_number=row["current_question_number"],
    )


async def create_session(
    conn: asyncpg.Connection,
    caller: str,
    job_posting_id: str,
    partner_user_id: str | None,
    request_id: str | None,
) -> Record:
    params = {
        "session_id": str(uuid.uuid4()),
        "caller": caller,
        "partner_user_id": partner_user_id,
        "job_posting_id": job_posting_id,
        "request_id": request_id,
    }
    row = await _CREATE.fetchrow(conn, params)
    if row is None:  # the request_id was used before: return what that call created
        row = await _CREATED_BY_REQUEST.fetchrow(conn, params)
    assert row is not None
    return row


async def get_session(conn: asyncpg.Connection, session_id: str, caller: str | None) -> Record:
    """The session, if `caller` participates in it (None: a trusted service, sees all)."""
    row = await _GET.fetchrow(conn, {"session_id": session_id})
    found = facts(row)
    if row is None or found is None or not found.visible_to(caller):
        raise domain.SessionNotFound(session_id)
    return row


async def transition(
    conn: asyncpg.Connection, transition: Transition, session_id: str, caller: str | None
) -> Record:
    """Applies `transition` in one conditional UPDATE; only if it matches nothing, a read
    decides the error. `caller` None is a trusted service acting on any session."""
    statement = _TRANSITIONS[(transition, caller is not None)]
    while True:
        row = await statement.fetchrow(conn, {"session_id": session_id, "caller": caller})
        if row is not None:
            return row
        current = await _GET.fetchrow(conn, {"session_id": session_id})
        refusal = domain.transition_refusal(transition, facts(current), session_id, caller)
        if refusal is not None:
            raise refusal
        if current is not None and current["status"] == transition.target:
            return current
        # The status moved between the update and the read: try the update again.


async def retake_session(
    conn: asyncpg.Connection, session_id: str, caller: str, request_id: str | None
) -> Record:
    params = {"session_id": session_id, "caller": caller, "request_id": request_id}
    for _ in range(MAX_RETAKE_ATTEMPTS):
        try:
            row = await _RETAKE.fetchrow(conn, {**params, "new_id": str(uuid.uuid4())})
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name == "sessions_chain_number":
                continue  # a concurrent retake took this number; the next try sees it
            raise
        if row is not None:
            return row
        if request_id is not None:
            earlier = await _RETAKEN_BY_REQUEST.fetchrow(conn, params)
            if earlier is not None:
                return earlier
        source = await _GET.fetchrow(conn, params)
        refusal = domain.retake_refusal(facts(source), session_id, caller)
        if refusal is not None:
            raise refusal
    raise RuntimeError(f"retake of {session_id} lost {MAX_RETAKE_ATTEMPTS} races in a row")


async def list_retakes(
    conn: asyncpg.Connection, session_id: str, caller: str, after: int, limit: int
) -> list[Record]:
    """The chain of `session_id` as `caller` may see it: up to `limit` sessions numbered after
    `after`, in order."""
    found = await _CHAIN_OF.fetchrow(conn, {"session_id": session_id, "caller": caller})
    if found is None:
        raise domain.SessionNotFound(session_id)
    page = _CHAIN_PAGE if str(found["user_id"]) == caller else _ROOT_PAGE
    return await page.fetch(conn, {"chain": found["chain"], "after": after, "limit": limit})


async def list_sessions(
    conn: asyncpg.Connection,
    caller: str,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    params: dict[str, Any] = {"caller": caller, "status": status, "limit": limit}
    if after is not None:
        params["after_time"], params["after_id"] = after
    return await _LIST_SESSIONS[(status is not None, after is not None)].fetch(conn, params)


async def release_job_posting(conn: asyncpg.Connection, job_posting_id: str) -> int:
    status = await _RELEASE.execute(conn, {"job_posting_id": job_posting_id})
    return int(status.rsplit(" ", 1)[1])  # "UPDATE <count>"


async def append_message(
    conn: asyncpg.Connection,
    session_id: str,
    caller: str,
    role: str,
    content: str,
    request_id: str | None,
) -> Record:
    params = {
        "message_id": str(uuid.uuid4()),
        "session_id": session_id,
        "caller": caller,
        "content": content,
        "request_id": request_id,
    }
    statement = _QUESTION if role == domain.QUESTION else _ANSWER
    while True:
        try:
            row = await statement.fetchrow(conn, params)
        except asyncpg.UniqueViolationError as error:
            # The whole statement, question counter included, rolled back: return the first call's.
            if error.constraint_name != "messages_request":
                raise
            row = await _MESSAGE_BY_REQUEST.fetchrow(conn, params)
            assert row is not None
            return row
        if row is not None:
            return row
        if request_id is not None:
            earlier = await _MESSAGE_BY_REQUEST.fetchrow(conn, params)
            if earlier is not None:
                return earlier
        current = await _GET.fetchrow(conn, params)
        refusal = domain.append_refusal(facts(current), session_id, caller, role)
        if refusal is not None:
            raise refusal


async def list_messages(
    conn: asyncpg.Connection, session_id: str, caller: str, after_seq: int, limit: int
) -> list[Record]:
    """Up to `limit` messages after `after_seq` (0 = from the start) of a session `caller` sees."""
    params = {"session_id": session_id, "caller": caller, "after": after_seq, "limit": limit}
    rows = await _MESSAGES.fetch(conn, params)
    if not rows:
        raise domain.SessionNotFound(session_id)
    return [row for row in rows if row["message_id"] is not None]


def messages_that_fit(rows: list[Record], limit: int) -> int:
    """How many of `rows` make the page: at most `limit`, and no more content than
    MESSAGE_PAGE_BYTES (200 messages of 16384 characters would not fit in one gRPC message), but
    always one."""
    count = 0
    for row in rows[:limit]:
        if count and row["running_bytes"] > MESSAGE_PAGE_BYTES:
            break
        count += 1
    return count


def micros(moment: datetime) -> int:
    """A timestamp as whole microseconds since the epoch, exact, for page cursors."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    seconds, micro = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micro)
