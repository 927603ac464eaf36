"""A service's gRPC server: its services behind the interceptor, health tied to the database,
reflection, TLS, and graceful start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common import tracing
from common.auth import Access, Authenticator
from common.config import TlsSettings
from common.interceptor import CallInterceptor
from common.metrics import Metrics
from common.reflection import enable_documented_reflection
from common.tls import server_credentials

log = logging.getLogger("rpc")

# Bounds of what a flood can make gRPC core hold (see SERVER_OPTIONS); each is measured by a flood in
# tests/test_overload.py against the 200 MB peak a process is allowed.
PENDING_CALLS = 1000
MAX_CONNECTIONS = 1000
SERVER_OPTIONS = [
    # A second server on a busy port must fail, not silently share it (workers of one service
    # share theirs on purpose: see build_server's reuse_port).
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    # Long-lived client connections are closed (gracefully, GOAWAY) after five minutes, so callers
    # re-resolve and spread over replicas that came up since they connected.
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
    # Streams one connection may have open at once; the server refuses more (UNAVAILABLE, which
    # a channel with a retry policy sends again).
    ("grpc.max_concurrent_streams", 100),
    # Calls waiting in gRPC core for the Python server to take them. Each holds about 20 KB of
    # core memory, and a flood arrives faster than one event loop refuses: unbounded, 20,000 Watch
    # streams opened at once over 400 connections took the process to 290-360 MB. Past this bound
    # core refuses new calls itself (CANCELLED, before the interceptor sees them: not logged).
    ("grpc.server.max_pending_requests", PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", PENDING_CALLS),
    # Connections open at once; past it core closes new ones as they arrive. An idle TLS
    # connection holds about 55 KB (plaintext 20 KB): 5,000 of them took the process to 360 MB.
    ("grpc.max_allowed_incoming_connections", MAX_CONNECTIONS),
    # A connection with no call for this long is closed (GOAWAY; a client reconnects on its next
    # call), so connections opened and left idle do not hold the connection bound for good.
    ("grpc.max_connection_idle_ms", 600_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
]
HEALTH_INTERVAL_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 10.0


class ListenError(OSError):
    """The server could not bind its address (in use, or not a local address)."""


@dataclass
class ServiceBinding:
    """One gRPC service to serve: how to register it, its full name, and who may call it."""

    register: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    name: str
    access: Access


@dataclass
class AppServer:
    """A started server with its health state and metrics; `stop()` shuts it down gracefully."""

    server: grpc.aio.Server
    port: int
    health: Any
    service_names: list[str]
    probe: Callable[[], Awaitable[bool]]
    metrics: Metrics
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _monitor: asyncio.Task[None] | None = None

    async def _set_all(self, status: int) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def _watch_database(self) -> None:
        serving: bool | None = None
        while True:
            with tracing.untraced():  # once a second: a trace each time would bury the real ones
                ok = await self.probe()
            if ok != serving:
                serving = ok
                state = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ok
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                await self._set_all(state)
                log.info({"event": "health", "serving": ok})
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)

    @property
    def metrics_port(self) -> int:
        """Where /metrics is served once started (the real port when configured with port 0)."""
        return self.metrics.port

    async def start(self) -> None:
        # Metrics first: an unusable metrics address stops start-up before any call is taken.
        try:
            self.metrics.start()
        except OSError as error:
            raise ListenError(f"cannot serve metrics on {self.metrics.listen}: {error}") from None
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        self._monitor = asyncio.create_task(self._watch_database())
        for begin in self.on_start:
            await begin()

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """NOT_SERVING first, then let in-flight calls finish, then close what the service opened."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        for close in self.on_stop:
            await close()
        await self.metrics.stop()  # last, so a shutdown can be watched to the end


def build_server(
    listen: str,
    domain: str,
    authenticator: Authenticator,
    bindings: Iterable[ServiceBinding],
    probe: Callable[[], Awaitable[bool]],
    metrics: Metrics,
    tls: TlsSettings,
    max_concurrent_rpcs: int,
    reuse_port: bool = False,
) -> AppServer:
    """Creates (does not start) a grpc.aio server with the services, health, reflection and
    `metrics` (served on their own port from `start()`); TLS when `tls` has a certificate.
    `reuse_port` only for the workers of one service, which share their port on purpose."""
    bindings = list(bindings)
    options = [
        (key, int(reuse_port) if key == "grpc.so_reuseport" else value) for key, value in SERVER_OPTIONS
    ]
    access = {b.name: b.access for b in bindings}
    server = grpc.aio.server(
        interceptors=[CallInterceptor(domain, authenticator, access, metrics, max_concurrent_rpcs)],
        options=options,
    )
    for binding in bindings:
        binding.register(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.name for b in bindings]
    enable_documented_reflection([*names, health.SERVICE_NAME], server)
    try:
        if tls.serving:
            port = server.add_secure_port(listen, server_credentials(tls))
        else:
            port = server.add_insecure_port(listen)
    except RuntimeError as error:  # grpc reports a failed bind this way
        raise ListenError(f"cannot listen on {listen}: {error}") from None
    return AppServer(
        server=server, port=port, health=health_servicer, service_names=names, probe=probe, metrics=metrics
    )
