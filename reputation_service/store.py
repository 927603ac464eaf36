"""Queries on the `reputation` schema: confirmations, the ledger and scores, and the outbox. The
server-side functions some of them call are in sql/, one file each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg
from asyncpg import Record
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import Query, connection
from reputation_service import domain
from reputation_service.domain import SessionFacts

_STATE = Query("SELECT * FROM reputation.confirmation_states WHERE session_id = :session_id")
_LOCK_SESSION = Query(
    "SELECT * FROM reputation.confirmation_states WHERE session_id = :session_id FOR UPDATE"
)
# The confirmation, the decision and its writes in one server-side call (sql/confirm.sql).
_CONFIRM = Query(
    """
    SELECT (r.state).*, r.queued
      FROM reputation.confirm(:session_id, :caller, :request_id, :user_id, :partner_user_id, :status,
                              :pair_limit, :user_limit, :window, :lease, :traceparent) AS r
    """
)
_CLOSE_EXPIRED = Query("SELECT reputation.close_expired(:window, :limit, NULL) AS session_id")
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
_REVERSE = Query("SELECT * FROM reputation.reverse_awards(:session_id, :note)")
# Many rows at once (marks.DeliveryMarks), in one transaction that does not wait for the WAL
# flush: a mark lost in a crash only costs the relay one more delivery (sql/mark_delivered.sql).
_DELIVERED = Query("SELECT reputation.mark_delivered(:session_ids)")
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
    RETURNING session_id, attempts, traceparent
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
    "SELECT score, confirmed_sessions, update_time, rating_count, rating_sum "
    "FROM reputation.scores WHERE user_id = :user_id"
)
_RATING_COLUMNS = "session_id, rater_user_id, rated_user_id, rating, comment, create_time, seq"
_RATING_BY_REQUEST = Query(
    f"SELECT {_RATING_COLUMNS} FROM reputation.ratings "
    "WHERE rater_user_id = :rater AND request_id = :request_id"
)
# The rating and the rated user's count and sum, in one statement; nothing when the rater already
# rated the session (or used the request_id already, in a concurrent call).
_RATE = Query(
    f"""
    WITH added AS (
        INSERT INTO reputation.ratings (session_id, rater_user_id, rated_user_id, rating, comment, request_id)
        VALUES (:session_id, :rater, :rated, :rating, :comment, :request_id)
        ON CONFLICT DO NOTHING
        RETURNING {_RATING_COLUMNS}
    ), counted AS (
        INSERT INTO reputation.scores AS s
               (user_id, score, confirmed_sessions, update_time, rating_count, rating_sum)
        SELECT rated_user_id, 0, 0, now(), 1, rating FROM added
        ON CONFLICT (user_id) DO UPDATE
           SET rating_count = s.rating_count + 1, rating_sum = s.rating_sum + EXCLUDED.rating_sum
    )
    SELECT * FROM added
    """
)
_RECEIVED_FIRST = Query(
    f"SELECT {_RATING_COLUMNS} FROM reputation.ratings WHERE rated_user_id = :user_id "
    "ORDER BY seq DESC LIMIT :limit"
)
_RECEIVED_AFTER = Query(
    f"SELECT {_RATING_COLUMNS} FROM reputation.ratings WHERE rated_user_id = :user_id AND seq < :before "
    "ORDER BY seq DESC LIMIT :limit"
)
# A leaderboard page: the current period's (or the one a page token carries), from the ranking
# index in its order; after a previous page, from its last (score, user_id) on, as a range of that
# index (the row comparison is its bound, so deep pages cost what the first does). The period's
# start comes back even when the page is empty.
_BOARD_PAGE = """
    WITH period AS (
        SELECT coalesce(:period_start::date, reputation.period_start(:kind, now())) AS start
    )
    SELECT period.start AS period_start, b.user_id::text AS user_id, b.score
      FROM period
      LEFT JOIN LATERAL (
            SELECT l.user_id, l.score FROM reputation.leaderboard l
             WHERE l.kind = :kind AND l.period_start = period.start AND l.score > 0 {after}
             ORDER BY -l.score, l.user_id
             LIMIT :limit) b ON true
"""
_BOARD_FIRST = Query(_BOARD_PAGE.format(after=""))
_BOARD_AFTER = Query(
    _BOARD_PAGE.format(after="AND (-l.score, l.user_id) > (-:after_score::bigint, :after_user::uuid)")
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


async def confirm(
    conn: asyncpg.Connection,
    session_id: str,
    caller: str,
    request_id: str | None,
    facts: SessionFacts | None,
    caps: domain.Caps,
    window: timedelta,
    lease: float,
    traceparent: str | None = None,
) -> tuple[ConfirmationState | None, bool]:
    """Records `caller`'s confirmation in one statement (`reputation.confirm`, sql/confirm.sql) and
    returns the session's state as of that statement (None for a session we hold no rows for and
    were given no `facts` about), and whether this call queued the completion (and so holds the
    outbox row's lease and should deliver it now). A repeated `request_id` of `caller` is about
    its first call's session. A caller who takes no part in the session writes nothing. The
    outbox row it queues keeps `traceparent`, the W3C context of the confirming call's trace."""
    row = await _CONFIRM.fetchrow(
        conn,
        {
            "session_id": session_id,
            "caller": caller,
            "request_id": request_id,
            "user_id": facts and facts.user_id,
            "partner_user_id": facts and facts.partner_user_id,
            "status": facts and facts.status,
            "pair_limit": caps.pair_daily,
            "user_limit": caps.user_daily,
            "window": window.total_seconds(),
            "lease": float(lease),
            "traceparent": traceparent,
        },
    )
    return (None, False) if row is None else (_state(row), row["queued"])


async def close_expired(conn: asyncpg.Connection, window: timedelta, limit: int) -> list[str]:
    """Closes up to `limit` half-confirmed sessions whose window passed, in one statement; returns
    their ids. The relays complete them through the outbox. (A confirmation that finds its own
    session's window passed closes it inside `reputation.confirm`.)"""
    params = {"window": window.total_seconds(), "limit": limit}
    return [str(row["session_id"]) for row in await _CLOSE_EXPIRED.fetch(conn, params)]


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


async def mark_delivered(conn: asyncpg.Connection, session_ids: list[str]) -> None:
    """Marks the rows delivered in the transaction this statement runs in, which commits without
    waiting for the WAL flush: run it alone, never inside another write's transaction."""
    await _DELIVERED.execute(conn, {"session_ids": session_ids})


async def postpone(conn: asyncpg.Connection, session_id: str, attempt: int, error: str, delay: float) -> None:
    params = {"session_id": session_id, "attempt": attempt, "error": error[:500], "delay": float(delay)}
    await _POSTPONE.execute(conn, params)


async def bury(conn: asyncpg.Connection, session_id: str, attempt: int, error: str) -> None:
    """Parks the row as dead: no relay claims it again until `replay` makes it due."""
    await _BURY.execute(conn, {"session_id": session_id, "attempt": attempt, "error": error[:500]})


async def release(conn: asyncpg.Connection, session_id: str, attempt: int) -> None:
    await _RELEASE.execute(conn, {"session_id": session_id, "attempt": attempt})


@dataclass(frozen=True)
class Claim:
    """A claimed outbox row: its session, this attempt's number, and the W3C traceparent of the
    confirmation that queued it (None when that was not traced, or the sweeper queued it)."""

    session_id: str
    attempt: int
    traceparent: str | None


async def claim_due(conn: asyncpg.Connection, limit: int, lease: float) -> list[Claim]:
    """Claims up to `limit` due rows for `lease` seconds."""
    rows = await _CLAIM.fetch(conn, {"limit": limit, "lease": float(lease)})
    return [Claim(str(row["session_id"]), row["attempts"], row["traceparent"]) for row in rows]


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


async def rating_by_request(conn: asyncpg.Connection, rater: str, request_id: str) -> Record | None:
    return await _RATING_BY_REQUEST.fetchrow(conn, {"rater": rater, "request_id": request_id})


async def rate(
    conn: asyncpg.Connection,
    session_id: str,
    rater: str,
    rated: str,
    rating: int,
    comment: str,
    request_id: str | None,
) -> Record | None:
    """Records the rating with the rated user's count and sum; None if `rater` had rated the
    session already (or a concurrent call took the request_id)."""
    params = {
        "session_id": session_id,
        "rater": rater,
        "rated": rated,
        "rating": rating,
        "comment": comment,
        "request_id": request_id,
    }
    return await _RATE.fetchrow(conn, params)


async def received_ratings(
    conn: asyncpg.Connection, user_id: str, before_seq: int | None, limit: int
) -> list[Record]:
    """The ratings `user_id` received, newest first."""
    params = {"user_id": user_id, "before": before_seq, "limit": limit}
    return await (_RECEIVED_FIRST if before_seq is None else _RECEIVED_AFTER).fetch(conn, params)


async def leaderboard(
    conn: asyncpg.Connection,
    kind: str,
    period_start: date | None,
    after: tuple[int, str] | None,
    limit: int,
) -> tuple[date, list[Record]]:
    """The period's start (the current period's unless `period_start` is given) and up to `limit`
    entries (user_id, score) after `after` (the previous page's last score and user_id)."""
    params = {"kind": kind, "period_start": period_start, "limit": limit}
    if after is None:
        rows = await _BOARD_FIRST.fetch(conn, params)
    else:
        rows = await _BOARD_AFTER.fetch(conn, {**params, "after_score": after[0], "after_user": after[1]})
    return rows[0]["period_start"], [row for row in rows if row["user_id"] is not None]
