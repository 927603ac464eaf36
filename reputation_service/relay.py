"""Delivering "complete session X" to the session service: inline after the award, and by the
relay, which retries whatever is still undelivered with backoff, on every replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from common import tracing
from common.db import connection
from common.errors import DatabaseUnavailable, ServiceError
from reputation_service import domain, store
from reputation_service.marks import DeliveryMarks
from reputation_service.sessions_client import TRANSIENT, SessionsClient, SessionsUnavailable

log = logging.getLogger(__name__)
CLAIM_BATCH = 20
# Kept between the end of an attempt's deadline and the end of the lease that covers it.
LEASE_MARGIN = 0.1
tracer = trace.get_tracer(__name__)


def verdict(error: Exception) -> tuple[str, bool]:
    """The gRPC code a delivery failed with, and whether a later attempt could succeed.

    Transient codes (the session service down, slow, overloaded, the call cut) are retried
    forever; any other code is the session service's answer, and asking again changes nothing.
    An exception that is no answer at all (a bug on this side) is retried, loudly.
    """
    if isinstance(error, SessionsUnavailable):
        return error.status_code, True
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code().name, error.code() in TRANSIENT
    if isinstance(error, ServiceError):  # SessionNotFound, or a FAILED_PRECONDITION passed on
        return error.code, False
    return type(error).__name__, True


def _described(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return error.details() or ""
    if isinstance(error, ServiceError):
        return f"{error.reason}: {error.message}"
    return repr(error)


async def deliver(
    db: AsyncEngine,
    sessions: SessionsClient,
    marks: DeliveryMarks,
    session_id: str,
    attempt: int,
    budget: float,
    lease_end: float,
    max_delay: float,
    queued_by: str | None = None,
) -> bool:
    """Attempt number `attempt` to complete `session_id`, under a claim whose lease ends at
    `lease_end` (event-loop time). Once the session service has completed it, the row's mark goes
    to `marks` and the attempt returns without waiting for it. On a transient failure the row
    waits for its next attempt; on a refusal it is parked as dead.

    The attempt is one span: inside the confirming call's trace when that call delivers, else
    (the relay's) a trace of its own linked to `queued_by`, the traceparent of the confirmation
    that queued the row.

    The attempt's deadline is `budget` seconds, cut to end before the lease does, so no other
    claimer can start an attempt while this one may still be under way. CompletePairedSession is
    idempotent all the same: a row delivered twice completes the session once.
    """
    with tracer.start_as_current_span(
        "outbox.deliver",
        links=tracing.links(queued_by),
        attributes={"interview.session_id": session_id, "interview.outbox.attempt": attempt},
    ):
        budget = min(budget, lease_end - LEASE_MARGIN - asyncio.get_running_loop().time())
        if budget <= 0:
            # The claim took the whole lease (a database that slow): no attempt, so none counted.
            async with connection(db) as conn:
                await store.release(conn, session_id, attempt)
            return False
        try:
            await sessions.complete_paired(session_id, budget)
        except Exception as error:
            code, transient = verdict(error)
            detail = f"{code}: {_described(error)}"
            event = {"session_id": session_id, "code": code, "attempts": attempt}
            if not transient:
                # Parked, not dropped: the metric shows it and replay-outbox makes it due again.
                log.error({"event": "delivery_refused", **event, "error": detail[:500]})
                async with connection(db) as conn:
                    await store.bury(conn, session_id, attempt, detail)
                return False
            delay = domain.retry_delay(attempt - 1, max_delay)
            if isinstance(error, ServiceError | grpc.aio.AioRpcError):
                log.warning({"event": "delivery_failed", **event, "retry_in": delay})
            else:
                log.exception({"event": "delivery_error", **event, "retry_in": delay})
            async with connection(db) as conn:
                await store.postpone(conn, session_id, attempt, detail, delay)
            return False
        marks.add(session_id)
        log.info({"event": "delivered", "session_id": session_id, "attempts": attempt})
        return True


class Relay:
    """Claims due outbox rows and delivers them until stopped; stopping finishes the current batch."""

    def __init__(
        self,
        db: AsyncEngine,
        sessions: SessionsClient,
        marks: DeliveryMarks,
        interval: float,
        lease: float,
        max_delay: float,
        timeout: float,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._marks = marks
        self._interval = interval
        self._lease = lease
        self._max_delay = max_delay
        self._timeout = timeout
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The whole outbox's live undelivered rows and the oldest one's create_time, and its dead
        # rows, as of the end of the last pass. Metrics read them at scrape time from another
        # thread, so each is replaced whole, never mutated.
        self.backlog: tuple[int, datetime | None] = (0, None)
        self.dead_rows = 0

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
            except DatabaseUnavailable:
                # Expected during an outage (health says so too): the next pass tries again.
                log.warning({"event": "relay_pass_skipped", "reason": DatabaseUnavailable.reason})
                delivered_any = False
            except Exception:
                log.exception({"event": "relay_pass_failed"})
                delivered_any = False
            if not delivered_any:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def _pass(self) -> bool:
        # Taken before the claim: the lease runs from the claim statement's now(), later still.
        lease_end = asyncio.get_running_loop().time() + self._lease
        with tracing.untraced():  # polled every interval: the deliveries are what is worth a trace
            async with connection(self._db) as conn:
                claimed = await store.claim_due(conn, CLAIM_BATCH, self._lease)
        # All at once: one by one, the last rows of a batch facing a black-holed session service
        # would be attempted after the lease that covers them had run out.
        outcomes = await asyncio.gather(
            *(
                deliver(
                    self._db,
                    self._sessions,
                    self._marks,
                    claim.session_id,
                    claim.attempt,
                    self._timeout,
                    lease_end,
                    self._max_delay,
                    claim.traceparent,
                )
                for claim in claimed
            ),
            return_exceptions=True,
        )
        for claim, outcome in zip(claimed, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Recording the outcome failed (the database went away): the lease runs out and
                # the row is claimed again.
                log.error(
                    {
                        "event": "delivery_unrecorded",
                        "session_id": claim.session_id,
                        "attempts": claim.attempt,
                    },
                    exc_info=outcome,
                )
        # Here rather than in the metrics scrape: scrapes run on a thread, the database is async.
        with tracing.untraced():
            async with connection(self._db) as conn:
                row = await store.outbox_backlog(conn)
        self.backlog = (row["rows"], row["oldest"])
        self.dead_rows = row["dead"]
        return bool(claimed)

    def oldest_age(self) -> float:
        """Seconds since the oldest undelivered row was written; 0 when there is none.

        The row's time comes from the database's clock, now from this host's: floored at 0 so
        a clock skew cannot make it negative.
        """
        oldest = self.backlog[1]
        return max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest else 0.0
