"""The confirmation window's sweeper: closes half-confirmed sessions whose window passed, on every
replica (rows are taken with SKIP LOCKED, so each is closed once), with nobody having to call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from common import tracing
from common.db import connection
from common.errors import DatabaseUnavailable
from reputation_service import store

log = logging.getLogger(__name__)
BATCH = 100


class Sweeper:
    """Every `interval` seconds, closes what is due (the relay then completes those sessions)."""

    def __init__(self, db: AsyncEngine, window: timedelta, interval: float) -> None:
        self._db = db
        self._window = window
        self._interval = interval
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def sweep(self) -> list[str]:
        """One pass: the ids of the sessions it closed (a batch per statement, `close_expired`)."""
        closed: list[str] = []
        while not self._stopping.is_set():
            with tracing.untraced():  # polled every interval, like the relay's claims
                async with connection(self._db) as conn:
                    batch = await store.close_expired(conn, self._window, BATCH)
            closed += batch
            if len(batch) < BATCH:
                break
        if closed:
            log.info({"event": "confirmation_windows_closed", "sessions": len(closed)})
        return closed

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except DatabaseUnavailable:
                log.warning({"event": "sweep_skipped", "reason": DatabaseUnavailable.reason})
            except Exception:
                log.exception({"event": "sweep_failed"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
