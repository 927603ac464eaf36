"""Prometheus metrics for one server process, served over HTTP on their own port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

# From a cached read (well under a millisecond) to a call that waited out the pool timeout.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One process's metrics in a registry of its own (tests run several servers in one process).

    Everything is either recorded as it happens (calls) or read when scraped (gauges): nothing
    polls. Scrapes run on the HTTP server's thread, so gauge readers must not touch the event loop.
    """

    def __init__(self, listen: str, engine: AsyncEngine) -> None:
        self.listen = listen
        self.registry = CollectorRegistry()
        self._calls = Counter(
            "rpc_calls",
            "Finished calls by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "rpc_duration_seconds",
            "Call latency by method, as the server measured it.",
            ["method"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        # engine.pool is looked up at each scrape: dispose() swaps the pool object. A QueuePool (the
        # AsyncAdaptedQueuePool common.db.create_engine's pool_size gets), which counts its checkouts.
        self.gauge(
            "db_pool_connections_in_use",
            "Database connections checked out of the pool.",
            lambda: cast(QueuePool, engine.pool).checkedout(),
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._http: tuple[WSGIServer, threading.Thread] | None = None

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is `read()` at scrape time (called on the HTTP server's thread)."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def observe(self, method: str, code: str, seconds: float) -> None:
        """Records one finished call; label children are cached, so this is two dict lookups."""
        children = self._children.get((method, code))
        if children is None:
            children = (self._calls.labels(method, code), self._duration.labels(method))
            self._children[(method, code)] = children
        children[0].inc()
        children[1].observe(seconds)

    @property
    def port(self) -> int:
        """The bound port once started (the real one when listening on port 0), else 0."""
        return self._http[0].server_port if self._http else 0

    def start(self) -> None:
        """Binds and serves /metrics on a daemon thread; raises OSError when the address is unusable."""
        host, _, port = self.listen.rpartition(":")
        self._http = start_http_server(int(port), host.strip("[]"), registry=self.registry)

    async def stop(self) -> None:
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        # shutdown() blocks until serve_forever notices (up to its 0.5 s poll): not on the loop.
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        await asyncio.to_thread(thread.join)
