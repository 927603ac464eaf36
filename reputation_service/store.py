"""Queries on the `reputation` schema: confirmations, the ledger and scores, and the outbox."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

import asyncpg
from asyncpg import Record
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import Query, connection
from reputation_service import domain
from reputation_service.domain import SessionFacts

_STATE_COLUMNS = """
    p.session_id, p.user_id, p.partner_user_id, p.last_known_status, p.award_time,
    p.awarded_user_ids::text[] AS awarded_user_ids, p.capped_user_ids::text[] AS capped_user_ids,
    p.first_confirm_time, p.close_time, p.reverse_time,
    (SELECT o.deliver_time FROM reputation.outbox o WHERE o.session_id = p.session_id) AS deliver_time,
    ARRAY(SELECT c.user_id::text FROM reputation.confirmations c
           WHERE c.session_id = p.session_id ORDER BY 1) AS confirmed_user_ids,
    now() AS now
"""
_STATE = Query(f"SELECT {_STATE_COLUMNS} FROM reputation.paired_sessions p WHERE p.session_id = :session_id")
_BY_REQUEST = Query(
    "SELECT session_id FROM reputation.confirmation_requests "
    "WHERE user_id = :caller AND request_id = :request_id"
)
_REMEMBER_REQUEST = Query(
    "INSERT INTO reputation.confirmation_requests (user_id, request_id, session_id) "
    "VALUES (:caller, :request_id, :session_id) ON CONFLICT (user_id, request_id) DO NOTHING"
)
# Inserts the session's row if new, then locks it: every confirmation of one session, the
# sweeper and a reversal run through this row lock, so each decision has one writer.
_ENSURE_SESSION = Query(
    """
    INSERT INTO reputation.paired_sessions (session_id, user_id, partner_user_id, last_known_status)
    VALUES (:session_id, :user_id, :partner_user_id, :status)
    ON CONFLICT (session_id) DO NOTHING
    """
)
_LOCK_SESSION = Query(
    f"SELECT {_STATE_COLUMNS} FROM reputation.paired_sessions p WHERE p.session_id = :session_id FOR UPDATE"
)
_CONFIRM = Query(
    """
    WITH added AS (
        INSERT INTO reputation.confirmations (session_id, user_id)
        VALUES (:session_id, :caller)
        ON CONFLICT (session_id, user_id) DO NOTHING
        RETURNING user_id
    ), first AS (
        UPDATE reputation.paired_sessions SET first_confirm_time = now()
         WHERE session_id = :session_id AND first_confirm_time IS NULL AND EXISTS (SELECT 1 FROM added)
        RETURNING first_confirm_time
    )
    SELECT ARRAY(SELECT user_id::text FROM reputation.confirmations WHERE session_id = :session_id
                 UNION SELECT user_id::text FROM added ORDER BY 1) AS confirmed_user_ids,
           (SELECT first_confirm_time FROM first) AS first_confirm_time
    """
)
# The caps' counters for the award's UTC day, locked in a fixed order: the pair's row, then
# each user's by id (the VALUES are sorted), so two concurrent awards never deadlock and never
# both read a count below a cap.
_LOCK_PAIR_DAY = Query(
    """
    INSERT INTO reputation.pair_day_awards (low_user, high_user, day) VALUES (:low, :high, :day)
    ON CONFLICT (low_user, high_user, day) DO UPDATE SET sessions = pair_day_awards.sessions
    RETURNING sessions
    """
)
_LOCK_USER_DAYS = Query(
    """
    INSERT INTO reputation.user_day_awards (user_id, day) VALUES (:low, :day), (:high, :day)
    ON CONFLICT (user_id, day) DO UPDATE SET points = user_day_awards.points
    RETURNING user_id::text, points
    """
)
# The decision, written in one statement: an event per participant (+1, or 0 naming the cap),
# scores for the points (upserted in user-id order), the day's counters, the outbox row and the
# session's award mark. Events are unique per session, user and reason, and scores move only
# with events really inserted.
_AWARD = Query(
    """
    WITH decided AS (
        SELECT * FROM unnest(:users::uuid[], :reasons::text[], :deltas::integer[])
                   AS d(user_id, reason, delta)
    ), events AS (
        INSERT INTO reputation.events (event_id, user_id, session_id, delta, reason)
        SELECT gen_random_uuid(), user_id, :session_id, delta, reason FROM decided
        ON CONFLICT (session_id, user_id, reason) DO NOTHING
        RETURNING user_id, delta
    ), scored AS (
        -- (Every data-modifying CTE runs to completion whether or not anything reads it.)
        INSERT INTO reputation.scores (user_id, score, confirmed_sessions, update_time)
        SELECT user_id, delta, 1, now() FROM events WHERE delta > 0 ORDER BY user_id
        ON CONFLICT (user_id) DO UPDATE
           SET score = scores.score + EXCLUDED.score,
               confirmed_sessions = scores.confirmed_sessions + 1,
               update_time = now()
        RETURNING 1
    ), pair AS (
        UPDATE reputation.pair_day_awards SET sessions = sessions + 1
         WHERE low_user = :low AND high_user = :high AND day = :day
           AND EXISTS (SELECT 1 FROM events WHERE delta > 0)
        RETURNING 1
    ), counted AS (
        UPDATE reputation.user_day_awards u SET points = u.points + e.delta
          FROM events e
         WHERE u.user_id = e.user_id AND u.day = :day AND e.delta > 0
        RETURNING 1
    ), queued AS (
        -- Born claimed, for the delivery the confirming call makes right after commit: that
        -- delivery is attempt 1, and the lease keeps the relays off the row meanwhile.
        INSERT INTO reputation.outbox (session_id, attempts, next_attempt_time)
        VALUES (:session_id, 1, now() + make_interval(secs => :lease))
        ON CONFLICT (session_id) DO NOTHING
        RETURNING 1
    )
    UPDATE reputation.paired_sessions
       SET award_time = now(),
           awarded_user_ids = ARRAY(SELECT user_id FROM decided WHERE delta > 0 ORDER BY 1),
           capped_user_ids = ARRAY(SELECT user_id FROM decided WHERE delta = 0 ORDER BY 1)
     WHERE session_id = :session_id AND award_time IS NULL
    RETURNING (SELECT count(*) FROM queued) AS queued
    """
)
# Closes half-confirmed sessions whose window passed (all due ones, or the one named): the mark,
# a 0-delta event for the one who confirmed, and an outbox row the relays deliver like any other.
# SKIP LOCKED keeps sweepers on several replicas apart; a confirmation holding the row decides it.
_CLOSE_EXPIRED = Query(
    f"""
    WITH due AS (
        SELECT session_id FROM reputation.paired_sessions
         WHERE award_time IS NULL AND close_time IS NULL AND first_confirm_time IS NOT NULL
           AND first_confirm_time <= now() - make_interval(secs => :window)
           AND (:only::uuid IS NULL OR session_id = :only::uuid)
         ORDER BY first_confirm_time
         LIMIT :limit
           FOR UPDATE SKIP LOCKED
    ), closed AS (
        UPDATE reputation.paired_sessions p SET close_time = now()
          FROM due WHERE p.session_id = due.session_id
        RETURNING p.session_id
    ), noted AS (
        INSERT INTO reputation.events (event_id, user_id, session_id, delta, reason)
        SELECT gen_random_uuid(), c.user_id, c.session_id, 0, '{domain.PARTNER_DID_NOT_CONFIRM}'
          FROM reputation.confirmations c JOIN closed USING (session_id)
        ON CONFLICT (session_id, user_id, reason) DO NOTHING
        RETURNING 1
    ), queued AS (
        INSERT INTO reputation.outbox (session_id, next_attempt_time)
        SELECT session_id, now() FROM closed
        ON CONFLICT (session_id) DO NOTHING
        RETURNING 1
    )
    SELECT session_id::text FROM closed
    """
)
_REVERSAL_BY_REQUEST = Query(
    "SELECT session_id FROM reputation.reversal_requests WHERE caller = :caller AND request_id = :request_id"
)
_REMEMBER_REVERSAL = Query(
    "INSERT INTO reputation.reversal_requests (caller, request_id, session_id) "
    "VALUES (:caller, :request_id, :session_id) ON CONFLICT (caller, request_id) DO NOTHING"
)
# A moderator's reversal of every positive award of a session, with the same lock as the award.
_REVERSALS = Query(
    "SELECT event_id, user_id, session_id, delta, reason, note, create_time, seq FROM reputation.events "
    f"WHERE session_id = :session_id AND reason = '{domain.REVERSAL}' ORDER BY user_id"
)
_REVERSE = Query(
    f"""
    WITH reversed AS (
        INSERT INTO reputation.events (event_id, user_id, session_id, delta, reason, note)
        SELECT gen_random_uuid(), e.user_id, e.session_id, -e.delta, '{domain.REVERSAL}', :note
          FROM reputation.events e
         WHERE e.session_id = :session_id AND e.delta > 0
         ORDER BY e.user_id
        ON CONFLICT (session_id, user_id, reason) DO NOTHING
        RETURNING event_id, user_id, session_id, delta, reason, note, create_time, seq
    ), scored AS (
        UPDATE reputation.scores s
           SET score = s.score + r.delta,
               confirmed_sessions = s.confirmed_sessions - 1,
               update_time = now()
          FROM reversed r WHERE s.user_id = r.user_id
        RETURNING 1
    ), marked AS (
        UPDATE reputation.paired_sessions SET reverse_time = now() WHERE session_id = :session_id
        RETURNING 1
    )
    SELECT * FROM reversed ORDER BY user_id
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
# Who was paired with whom is private: a session's id shows only to its participants.
_EVENT_COLUMNS = """
    e.event_id, e.user_id, e.delta, e.reason, e.note, e.create_time, e.seq,
    CASE WHEN :caller::uuid IN (p.user_id, p.partner_user_id) THEN e.session_id END AS session_id
"""
_EVENTS_FIRST = Query(
    f"SELECT {_EVENT_COLUMNS} FROM reputation.events e "
    "JOIN reputation.paired_sessions p ON p.session_id = e.session_id "
    "WHERE e.user_id = :user_id ORDER BY e.seq DESC LIMIT :limit"
)
_EVENTS_AFTER = Query(
    f"SELECT {_EVENT_COLUMNS} FROM reputation.events e "
    "JOIN reputation.paired_sessions p ON p.session_id = e.session_id "
    "WHERE e.user_id = :user_id AND e.seq < :before ORDER BY e.seq DESC LIMIT :limit"
)


@dataclass(frozen=True)
class ConfirmationState:
    """Everything this service holds about one session's confirmation."""

    # Its status here is the last one this service saw (at the first confirmation, or COMPLETED
    # once delivered): replies ask the session service for the current one.
    session: SessionFacts
    confirmed_user_ids: list[str]
    decided: bool  # both confirmed and the awards decided (whoever got a point)
    awarded_user_ids: list[str]
    capped_user_ids: list[str]
    delivered: bool
    first_confirm_time: datetime | None = None
    closed: bool = False  # the window closed with one confirmation
    reversed: bool = False

    @property
    def both_confirmed(self) -> bool:
        return len(self.confirmed_user_ids) == 2

    @property
    def awarded(self) -> bool:
        """At least one participant got the session's point."""
        return bool(self.awarded_user_ids)


def _state(row: Record) -> ConfirmationState:
    return ConfirmationState(
        session=SessionFacts(
            session_id=str(row["session_id"]),
            user_id=str(row["user_id"]),
            partner_user_id=str(row["partner_user_id"]),
            status=row["last_known_status"],
        ),
        confirmed_user_ids=list(row["confirmed_user_ids"]),
        decided=row["award_time"] is not None,
        awarded_user_ids=list(row["awarded_user_ids"]),
        capped_user_ids=list(row["capped_user_ids"]),
        delivered=row["deliver_time"] is not None,
        first_confirm_time=row["first_confirm_time"],
        closed=row["close_time"] is not None,
        reversed=row["reverse_time"] is not None,
    )


async def confirmation_state(conn: asyncpg.Connection, session_id: str) -> ConfirmationState | None:
    row = await _STATE.fetchrow(conn, {"session_id": session_id})
    return _state(row) if row is not None else None


async def session_of_request(conn: asyncpg.Connection, caller: str, request_id: str) -> str | None:
    row = await _BY_REQUEST.fetchrow(conn, {"caller": caller, "request_id": request_id})
    return str(row["session_id"]) if row is not None else None


async def confirm(
    engine: AsyncEngine,
    session: SessionFacts,
    caller: str,
    request_id: str | None,
    caps: domain.Caps,
    window: timedelta,
    lease: float,
) -> tuple[ConfirmationState, bool]:
    """`record_confirmation` in a transaction of its own."""
    async with connection(engine) as conn, conn.transaction():
        return await record_confirmation(conn, session, caller, request_id, caps, window, lease)


async def record_confirmation(
    conn: asyncpg.Connection,
    session: SessionFacts,
    caller: str,
    request_id: str | None,
    caps: domain.Caps,
    window: timedelta,
    lease: float,
) -> tuple[ConfirmationState, bool]:
    """Records `caller`'s confirmation within the caller's transaction, under the session row's
    lock: a window that passed closes the session first (as the sweeper would); the second
    participant's confirmation decides the awards against the day's caps and writes them with the
    outbox row. Returns the state as of that transaction, and whether this call queued the
    completion (and so holds the outbox row's lease and should deliver it now)."""
    params = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "partner_user_id": session.partner_user_id,
        "status": session.status,
        "caller": caller,
        "request_id": request_id,
    }
    await _ENSURE_SESSION.execute(conn, params)
    row = await _LOCK_SESSION.fetchrow(conn, params)
    assert row is not None
    state = _state(row)
    if (
        not state.decided
        and not state.closed
        and domain.window_passed(state.first_confirm_time, window, row["now"])
    ):
        await close_expired(conn, window, only=session.session_id)
        state = replace(state, closed=True)
    if state.closed:
        return state, False
    if request_id is not None:
        await _REMEMBER_REQUEST.execute(conn, params)
    confirmed = await _CONFIRM.fetchrow(conn, params)
    assert confirmed is not None
    state = replace(
        state,
        confirmed_user_ids=list(confirmed["confirmed_user_ids"]),
        first_confirm_time=state.first_confirm_time or confirmed["first_confirm_time"],
    )
    if state.decided or not state.both_confirmed:
        return state, False
    return await _award(conn, state, caps, domain.award_day(row["now"]), lease)


async def _award(
    conn: asyncpg.Connection, state: ConfirmationState, caps: domain.Caps, day: date, lease: float
) -> tuple[ConfirmationState, bool]:
    low, high = state.confirmed_user_ids  # sorted
    keys = {"low": low, "high": high, "day": day}
    pair = await _LOCK_PAIR_DAY.fetchrow(conn, keys)
    assert pair is not None
    points = {row["user_id"]: row["points"] for row in await _LOCK_USER_DAYS.fetch(conn, keys)}
    reasons = domain.award_decision(caps, pair["sessions"], points)
    users = sorted(reasons)
    written = await _AWARD.fetchrow(
        conn,
        {
            **keys,
            "session_id": state.session.session_id,
            "users": users,
            "reasons": [reasons[user] for user in users],
            "deltas": [domain.delta_of(reasons[user]) for user in users],
            "lease": lease,
        },
    )
    decided = replace(
        state,
        decided=True,
        awarded_user_ids=[user for user in users if reasons[user] == domain.AWARD_REASON],
        capped_user_ids=[user for user in users if reasons[user] != domain.AWARD_REASON],
    )
    return decided, written is not None and written["queued"] == 1


async def close_expired(
    conn: asyncpg.Connection, window: timedelta, limit: int = 100, only: str | None = None
) -> list[str]:
    """Closes half-confirmed sessions whose window passed (up to `limit`, or just `only`);
    returns their ids. The relays complete them through the outbox."""
    params = {"window": window.total_seconds(), "limit": limit, "only": only}
    return [row["session_id"] for row in await _CLOSE_EXPIRED.fetch(conn, params)]


async def reverse(
    engine: AsyncEngine, session_id: str, note: str, caller: str, request_id: str | None
) -> list[Record]:
    """Reverses every positive award of the session in one transaction, under the session row's
    lock; a repeat returns the first reversal's events and writes nothing. A repeated
    `request_id` of the same `caller` answers for its first call's session."""
    async with connection(engine) as conn, conn.transaction():
        if request_id is not None:
            earlier_session = await _REVERSAL_BY_REQUEST.fetchval(
                conn, {"caller": caller, "request_id": request_id}
            )
            session_id = str(earlier_session) if earlier_session is not None else session_id
        row = await _LOCK_SESSION.fetchrow(conn, {"session_id": session_id})
        if row is None:
            raise domain.SessionNotFound(session_id)
        params = {"session_id": session_id, "note": note, "caller": caller, "request_id": request_id}
        if request_id is not None:
            await _REMEMBER_REVERSAL.execute(conn, params)
        earlier = await _REVERSALS.fetch(conn, params)
        if earlier:
            return earlier
        if not _state(row).awarded:
            raise domain.NotAwarded(session_id)
        return await _REVERSE.fetch(conn, params)


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


async def events(
    conn: asyncpg.Connection, user_id: str, caller: str, before_seq: int | None, limit: int
) -> list[Record]:
    """`user_id`'s ledger, newest first, as `caller` may see it (session ids of their own sessions)."""
    params = {"user_id": user_id, "caller": caller, "before": before_seq, "limit": limit}
    return await (_EVENTS_FIRST if before_seq is None else _EVENTS_AFTER).fetch(conn, params)
