"""Recording deliveries: the outbox rows whose completion the session service acknowledged are
marked delivered by one task, off the delivering call's path, many rows per statement."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import asyncpg

from common import tracing
from common.errors import DatabaseUnavailable
from reputation_service import store

log = logging.getLogger(__name__)


class DeliveryMarks:
    """Marks outbox rows delivered, one statement for every mark gathered since the last one.

    Marks are batched the way PostgreSQL batches commits into WAL flushes. When deliveries are rare,
    each one gets its own statement at once. Under load, the marks that arrive while one statement
    runs all go into the next. No delivering call waits for its mark.

    A mark that never lands costs a repeat, not a loss. That happens when the database went away
    or the process died first. The row stays claimed until its lease ends. Then a relay delivers
    it again, and CompletePairedSession completes a session once however often it is asked.
    """

    def __init__(self, connect: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def add(self, session_id: str) -> None:
        """`session_id`'s completion was acknowledged: its row is marked in the next statement."""
        self._pending.append(session_id)
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Writes what is pending, then stops; marks added after this are left to the relay."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not (self._stopping and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._write(batch)

    async def _write(self, session_ids: list[str]) -> None:
        try:
            # Bookkeeping after the fact: the deliveries' spans are the ones worth a trace.
            with tracing.untraced():
                async with self._connect() as conn:
                    await store.mark_delivered(conn, session_ids)
        except DatabaseUnavailable:
            log.warning({"event": "delivery_marks_unrecorded", "rows": len(session_ids)})
        except Exception:
            log.exception({"event": "delivery_marks_failed", "rows": len(session_ids)})
