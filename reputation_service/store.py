"""Queries on the `reputation` schema: confirmations, the ledger and scores, and the outbox."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import asyncpg
from asyncpg import Record
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import Query, connection
from reputation_service import domain
from reputation_service.domain import SessionFacts

_STATE = Query(
    """
    SELECT p.session_id, p.user_id, p.partner_user_id, p.last_known_status, p.award_time,
           o.deliver_time,
           ARRAY(SELECT c.user_id::text FROM reputation.confirmations c
                  WHERE c.session_id = p.session_id ORDER BY 1) AS confirmed_user_ids
      FROM reputation.paired_sessions p
      LEFT JOIN reputation.outbox o ON o.session_id = p.session_id
     WHERE p.session_id = :session_id
    """
)
_BY_REQUEST = Query(
    "SELECT session_id FROM reputation.confirmation_requests "
    "WHERE user_id = :caller AND request_id = :request_id"
)
_REMEMBER_REQUEST = Query(
    "INSERT INTO reputation.confirmation_requests (user_id, request_id, session_id) "
    "VALUES (:caller, :request_id, :session_id) ON CONFLICT (user_id, request_id) DO NOTHING"
)
# Inserts the session's row or, if it exists, locks it: every confirmation of one session
# runs through this row lock, so "both confirmed and not yet awarded" is decided by one writer.
_LOCK_SESSION = Query(
    """
    INSERT INTO reputation.paired_sessions (session_id, user_id, partner_user_id, last_known_status)
    VALUES (:session_id, :user_id, :partner_user_id, :status)
    ON CONFLICT (session_id) DO UPDATE
       SET last_known_status = CASE WHEN paired_sessions.last_known_status = 'completed'
                                    THEN 'completed' ELSE EXCLUDED.last_known_status END
    RETURNING award_time, last_known_status,
              (SELECT o.deliver_time FROM reputation.outbox o
                WHERE o.session_id = paired_sessions.session_id) AS deliver_time
    """
)
_CONFIRM = Query(
    """
    WITH added AS (
        INSERT INTO reputation.confirmations (session_id, user_id)
        VALUES (:session_id, :caller)
        ON CONFLICT (session_id, user_id) DO NOTHING
        RETURNING user_id
    )
    SELECT user_id FROM reputation.confirmations WHERE session_id = :session_id
    UNION SELECT user_id FROM added
    """
)
# Ledger events are unique per (session, user) and scores move only with events that were
# really inserted; scores are upserted in user-id order so two awards never deadlock.
_AWARD = Query(
    f"""
    WITH events AS (
        INSERT INTO reputation.events (event_id, user_id, session_id, delta, reason)
        VALUES (:first_event, :first_user, :session_id, {domain.AWARD_DELTA}, '{domain.AWARD_REASON}'),
               (:second_event, :second_user, :session_id, {domain.AWARD_DELTA}, '{domain.AWARD_REASON}')
        ON CONFLICT (session_id, user_id) DO NOTHING
        RETURNING user_id, delta
    ), scored AS (
        INSERT INTO reputation.scores (user_id, score, confirmed_sessions, update_time)
        SELECT user_id, delta, 1, now() FROM events ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
           SET score = scores.score + EXCLUDED.score,
               confirmed_sessions = scores.confirmed_sessions + 1,
               update_time = now()
        RETURNING 1
    ), queued AS (
        -- Born claimed, for the delivery the confirming call makes right after commit: that
        -- delivery is attempt 1, and the lease keeps the relays off the row meanwhile.
        INSERT INTO reputation.outbox (session_id, attempts, next_attempt_time)
        VALUES (:session_id, 1, now() + make_interval(secs => :lease))
        ON CONFLICT (session_id) DO NOTHING
        RETURNING 1
    )
    UPDATE reputation.paired_sessions SET award_time = now()
     WHERE session_id = :session_id AND award_time IS NULL
    RETURNING (SELECT count(*) FROM scored) AS scored, (SELECT count(*) FROM queued) AS queued
    """
)
_DELIVERED = Query(
    """
    WITH done AS (
        UPDATE reputation.outbox SET deliver_time = now(), last_error = NULL
         WHERE session_id = :session_id AND deliver_time IS NULL
        RETURNING session_id
    )
    UPDATE reputation.paired_sessions SET last_known_status = 'completed'
     WHERE session_id IN (SELECT session_id FROM done)
    """
)
# Every write about one attempt names the attempt (`attempts` as its claim left it): a claimer
# whose lease ran out while it waited on the session service cannot overwrite what the next
# claimer decided. Delivery needs no such guard: a completion is a completion, whoever saw it.
_POSTPONE = Query(
    """
    UPDATE reputation.outbox
       SET last_error = :error, next_attempt_time = now() + make_interval(secs => :delay)
     WHERE session_id = :session_id AND attempts = :attempt
       AND deliver_time IS NULL AND dead_time IS NULL
    """
)
_BURY = Query(
    """
    UPDATE reputation.outbox SET dead_time = now(), last_error = :error
     WHERE session_id = :session_id AND attempts = :attempt
       AND deliver_time IS NULL AND dead_time IS NULL
    """
)
# A claim whose lease was spent before its attempt could start gives the attempt back.
_RELEASE = Query(
    """
    UPDATE reputation.outbox SET attempts = attempts - 1, next_attempt_time = now()
     WHERE session_id = :session_id AND attempts = :attempt
       AND deliver_time IS NULL AND dead_time IS NULL
    """
)
# Claims due rows by pushing their next attempt a lease into the future and committing at
# once: no transaction stays open across the remote call, SKIP LOCKED keeps replicas apart,
# and a replica that dies mid-delivery only delays the row until its lease runs out. The
# attempt is counted here, by whoever claims, so `attempts` is the number of attempts made
# whichever replicas made them (a replica dying mid-attempt still made it).
_CLAIM = Query(
    """
    UPDATE reputation.outbox
       SET next_attempt_time = now() + make_interval(secs => :lease), attempts = attempts + 1
     WHERE session_id IN (
           SELECT session_id FROM reputation.outbox
            WHERE deliver_time IS NULL AND dead_time IS NULL AND next_attempt_time <= now()
            ORDER BY next_attempt_time
            LIMIT :limit
              FOR UPDATE SKIP LOCKED)
    RETURNING session_id, attempts
    """
)
# Each count matches one partial index: the outbox keeps its delivered rows.
_BACKLOG = Query(
    """
    SELECT (SELECT count(*) FROM reputation.outbox
             WHERE deliver_time IS NULL AND dead_time IS NULL) AS rows,
           (SELECT min(create_time) FROM reputation.outbox
             WHERE deliver_time IS NULL AND dead_time IS NULL) AS oldest,
           (SELECT count(*) FROM reputation.outbox
             WHERE deliver_time IS NULL AND dead_time IS NOT NULL) AS dead
    """
)
# An operator's replay: dead rows are due again, with a fresh count of attempts.
_REPLAY_ALL = Query(
    """
    UPDATE reputation.outbox SET dead_time = NULL, attempts = 0, next_attempt_time = now()
     WHERE deliver_time IS NULL AND dead_time IS NOT NULL
    RETURNING session_id
    """
)
_OUTBOX_ROW = Query("SELECT deliver_time, dead_time FROM reputation.outbox WHERE session_id = :session_id")
_REPLAY_ONE = Query(
    """
    UPDATE reputation.outbox SET dead_time = NULL, attempts = 0, next_attempt_time = now()
     WHERE session_id = :session_id AND deliver_time IS NULL AND dead_time IS NOT NULL
    RETURNING session_id
    """
)
_REPUTATION = Query(
    "SELECT score, confirmed_sessions, update_time FROM reputation.scores WHERE user_id = :user_id"
)
_EVENT_COLUMNS = "event_id, user_id, session_id, delta, reason, create_time, seq"
_EVENTS_FIRST = Query(
    f"SELECT {_EVENT_COLUMNS} FROM reputation.events WHERE user_id = :user_id ORDER BY seq DESC LIMIT :limit"
)
_EVENTS_AFTER = Query(
    f"SELECT {_EVENT_COLUMNS} FROM reputation.events WHERE user_id = :user_id AND seq < :before "
    "ORDER BY seq DESC LIMIT :limit"
)


@dataclass(frozen=True)
class ConfirmationState:
    """Everything this service holds about one session's confirmation."""

    # Its status here is the last one this service saw (at the first confirmation, or COMPLETED
    # once delivered): replies ask the session service for the current one.
    session: SessionFacts
    confirmed_user_ids: list[str]
    awarded: bool
    delivered: bool

    @property
    def both_confirmed(self) -> bool:
        return len(self.confirmed_user_ids) == 2


def _state(row: Record) -> ConfirmationState:
    return ConfirmationState(
        session=SessionFacts(
            session_id=str(row["session_id"]),
            user_id=str(row["user_id"]),
            partner_user_id=str(row["partner_user_id"]),
            status=row["last_known_status"],
        ),
        confirmed_user_ids=list(row["confirmed_user_ids"]),
        awarded=row["award_time"] is not None,
        delivered=row["deliver_time"] is not None,
    )


async def confirmation_state(conn: asyncpg.Connection, session_id: str) -> ConfirmationState | None:
    row = await _STATE.fetchrow(conn, {"session_id": session_id})
    return _state(row) if row is not None else None


async def session_of_request(conn: asyncpg.Connection, caller: str, request_id: str) -> str | None:
    row = await _BY_REQUEST.fetchrow(conn, {"caller": caller, "request_id": request_id})
    return str(row["session_id"]) if row is not None else None


async def confirm(
    engine: AsyncEngine, session: SessionFacts, caller: str, request_id: str | None, lease: float
) -> tuple[ConfirmationState, bool]:
    """Records `caller`'s confirmation in one transaction; on the second participant's, writes
    both awards and the outbox row. Returns the state as of that transaction, and whether this
    call queued the completion (and so holds the outbox row's lease and should deliver it now)."""
    async with connection(engine) as conn, conn.transaction():
        params = {
            "session_id": session.session_id,
            "user_id": session.user_id,
            "partner_user_id": session.partner_user_id,
            "status": session.status,
            "caller": caller,
            "request_id": request_id,
        }
        locked = await _LOCK_SESSION.fetchrow(conn, params)
        assert locked is not None
        if request_id is not None:
            await _REMEMBER_REQUEST.execute(conn, params)
        confirmed = sorted({str(row["user_id"]) for row in await _CONFIRM.fetch(conn, params)})
        state = ConfirmationState(
            session=replace(session, status=locked["last_known_status"]),
            confirmed_user_ids=confirmed,
            awarded=locked["award_time"] is not None,
            delivered=locked["deliver_time"] is not None,
        )
        if state.awarded or len(confirmed) < 2:
            return state, False
        first, second = confirmed
        awarded = await _AWARD.fetchrow(
            conn,
            {
                "session_id": session.session_id,
                "first_event": str(uuid.uuid4()),
                "first_user": first,
                "second_event": str(uuid.uuid4()),
                "second_user": second,
                "lease": lease,
            },
        )
        return replace(state, awarded=True), awarded is not None and awarded["queued"] == 1


async def mark_delivered(conn: asyncpg.Connection, session_id: str) -> None:
    await _DELIVERED.execute(conn, {"session_id": session_id})


async def postpone(conn: asyncpg.Connection, session_id: str, attempt: int, error: str, delay: float) -> None:
    params = {"session_id": session_id, "attempt": attempt, "error": error[:500], "delay": float(delay)}
    await _POSTPONE.execute(conn, params)


async def bury(conn: asyncpg.Connection, session_id: str, attempt: int, error: str) -> None:
    """Parks the row as dead: no relay claims it again until `replay` makes it due."""
    await _BURY.execute(conn, {"session_id": session_id, "attempt": attempt, "error": error[:500]})


async def release(conn: asyncpg.Connection, session_id: str, attempt: int) -> None:
    await _RELEASE.execute(conn, {"session_id": session_id, "attempt": attempt})


async def claim_due(conn: asyncpg.Connection, limit: int, lease: float) -> list[tuple[str, int]]:
    """Claims up to `limit` due rows for `lease` seconds: (session_id, this attempt's number)."""
    rows = await _CLAIM.fetch(conn, {"limit": limit, "lease": float(lease)})
    return [(str(row["session_id"]), row["attempts"]) for row in rows]


async def outbox_backlog(conn: asyncpg.Connection) -> Record:
    """Live undelivered rows (`rows`, `oldest` create_time) and dead ones (`dead`)."""
    row = await _BACKLOG.fetchrow(conn, {})
    assert row is not None
    return row


async def replay(conn: asyncpg.Connection, session_id: str | None) -> list[str]:
    """Makes dead rows (all, or the one of `session_id`) due again; returns their session ids."""
    if session_id is None:
        rows = await _REPLAY_ALL.fetch(conn, {})
    else:
        rows = await _REPLAY_ONE.fetch(conn, {"session_id": session_id})
    return [str(row["session_id"]) for row in rows]


async def outbox_row(conn: asyncpg.Connection, session_id: str) -> Record | None:
    return await _OUTBOX_ROW.fetchrow(conn, {"session_id": session_id})


async def reputation(conn: asyncpg.Connection, user_id: str) -> Record | None:
    return await _REPUTATION.fetchrow(conn, {"user_id": user_id})


async def events(conn: asyncpg.Connection, user_id: str, before_seq: int | None, limit: int) -> list[Record]:
    params = {"user_id": user_id, "before": before_seq, "limit": limit}
    return await (_EVENTS_FIRST if before_seq is None else _EVENTS_AFTER).fetch(conn, params)
