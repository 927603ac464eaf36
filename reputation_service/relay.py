"""Delivering "complete session X" to the session service: inline after the award, and by the
relay, which retries whatever is still undelivered with backoff, on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import connection
from common.errors import ServiceError
from reputation_service import domain, store
from reputation_service.sessions_client import SessionsClient

log = logging.getLogger(__name__)
CLAIM_BATCH = 20


async def deliver(
    db: AsyncEngine, sessions: SessionsClient, session_id: str, attempts: int, max_delay: float
) -> bool:
    """One attempt to complete `session_id`; on failure the row waits for its next attempt.

    CompletePairedSession is idempotent, so a row delivered twice (a lease that ran out while
    its first delivery was still under way) completes the session once.
    """
    try:
        await sessions.complete_paired(session_id)
    except ServiceError as error:
        delay = domain.retry_delay(attempts, max_delay)
        log.warning(
            {"event": "delivery_failed", "session_id": session_id, "reason": error.reason, "retry_in": delay}
        )
        async with connection(db) as conn:
            await store.postpone(conn, session_id, f"{error.reason}: {error.message}", delay)
        return False
    except Exception as error:
        # Not the caller's concern and not a reason to lose the row: log it and retry later.
        delay = domain.retry_delay(attempts, max_delay)
        log.exception({"event": "delivery_error", "session_id": session_id, "retry_in": delay})
        async with connection(db) as conn:
            await store.postpone(conn, session_id, repr(error), delay)
        return False
    async with connection(db) as conn:
        await store.mark_delivered(conn, session_id)
    log.info({"event": "delivered", "session_id": session_id, "attempts": attempts + 1})
    return True


class Relay:
    """Claims due outbox rows and delivers them until stopped; stopping finishes the current row."""

    def __init__(
        self, db: AsyncEngine, sessions: SessionsClient, interval: float, lease: float, max_delay: float
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._interval = interval
        self._lease = lease
        self._max_delay = max_delay
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The whole outbox's undelivered rows and the oldest one's create_time, as of the end of
        # the last pass. Metrics read it at scrape time from another thread, so it is replaced
        # whole, never mutated.
        self.backlog: tuple[int, datetime | None] = (0, None)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                delivered_any = await self._pass()
            except Exception:
                log.exception({"event": "relay_pass_failed"})
                delivered_any = False
            if not delivered_any:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def _pass(self) -> bool:
        async with connection(self._db) as conn:
            claimed = await store.claim_due(conn, CLAIM_BATCH, self._lease)
        for session_id, attempts in claimed:
            if self._stopping.is_set():
                break  # unclaimed rows go back to due when their lease runs out
            await deliver(self._db, self._sessions, session_id, attempts, self._max_delay)
        # Here rather than in the metrics scrape: scrapes run on a thread, the database is async.
        async with connection(self._db) as conn:
            row = await store.outbox_backlog(conn)
        self.backlog = (row["rows"], row["oldest"])
        return bool(claimed)

    def oldest_age(self) -> float:
        """Seconds since the oldest undelivered row was written; 0 when there is none.

        The row's time comes from the database's clock, now from this host's: floored at 0 so
        a clock skew cannot make it negative.
        """
        oldest = self.backlog[1]
        return max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest else 0.0
