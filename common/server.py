"""Server bootstrap shared by both services: one interceptor (auth, errors, call log),
health tied to the database, reflection, and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from common.auth import Access, TokenVerifier
from common.config import ConfigError, database_url, positive_int
from common.db import is_connection_error, migrate
from common.errors import DatabaseUnavailable, InvalidArgument, ServiceError
from common.metrics import Metrics

log = logging.getLogger("rpc")

SERVER_OPTIONS = [
    # A second server on a busy port must fail, not silently share it.
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
]
HEALTH_INTERVAL_SECONDS = 1.0
SHUTDOWN_GRACE_SECONDS = 10.0
# Set by main() in each worker of a multi-worker service; build_server's default for reuse_port.
_SHARED_PORT: contextvars.ContextVar[bool] = contextvars.ContextVar("shared_port", default=False)


def rich_status(error: ServiceError, domain: str) -> grpc.Status:
    """The gRPC status for `error`: code, message, ErrorInfo and, for bad fields, BadRequest."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    details = [info]
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=name, description=problem)
                    for name, problem in error.fields.items()
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    return rpc_status.to_status(
        status_pb2.Status(code=getattr(code_pb2, error.code), message=error.message, details=packed)
    )


class ListenError(OSError):
    """The server could not bind its address (in use, or not a local address)."""


Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call to the listed services, maps errors to rich statuses, logs one line
    and records it in the metrics.

    Health and reflection are not listed and pass through untouched.
    """

    def __init__(
        self, domain: str, verifier: TokenVerifier, access: dict[str, Access], metrics: Metrics
    ) -> None:
        self._domain = domain
        self._verifier = verifier
        self._access = access
        self._metrics = metrics
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        access = self._access.get(method.split("/")[1] if method.count("/") == 2 else "")
        if handler is None or access is None or handler.unary_unary is None:
            return handler
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, access, handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(self, method: str, access: Access, behavior: Handler) -> Handler:
        domain, verifier, metrics = self._domain, self._verifier, self._metrics

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            reason = None
            correlation_id = None
            try:
                authorization = None
                for key, value in context.invocation_metadata() or ():
                    if key == "authorization":
                        authorization = value
                token = access.enter(verifier.verify(str(authorization or "")))
                try:
                    return await behavior(request, context)
                finally:
                    access.leave(token)
            except ServiceError as error:
                code, reason = error.code, error.reason
                await context.abort_with_status(rich_status(error, domain))
            except grpc.aio.AbortError:
                code = context.code().name if context.code() else "UNKNOWN"
                raise
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                if is_connection_error(exc):
                    error = DatabaseUnavailable()
                    log.warning("database unreachable during %s: %r", method, exc)
                else:
                    correlation_id = uuid.uuid4().hex
                    error = ServiceError("internal error", correlation_id=correlation_id)
                    log.exception("unhandled error in %s [%s]", method, correlation_id)
                code, reason = error.code, error.reason
                await context.abort_with_status(rich_status(error, domain))
            finally:
                elapsed = time.perf_counter() - started
                metrics.observe(method, code, elapsed)
                line: dict[str, Any] = {
                    "method": method,
                    "code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                }
                if reason:
                    line["reason"] = reason
                if correlation_id:
                    line["correlation_id"] = correlation_id
                log.info(line)

        return call


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
    verifier: TokenVerifier,
    bindings: Iterable[ServiceBinding],
    probe: Callable[[], Awaitable[bool]],
    metrics: Metrics,
    reuse_port: bool | None = None,
) -> AppServer:
    """Creates (does not start) a grpc.aio server with the services, health, reflection and
    `metrics` (served on their own port from `start()`)."""
    bindings = list(bindings)
    # SO_REUSEPORT only for the workers of one service (reuse_port None: as main() decided).
    shared = _SHARED_PORT.get() if reuse_port is None else reuse_port
    options = [(key, int(shared) if key == "grpc.so_reuseport" else value) for key, value in SERVER_OPTIONS]
    server = grpc.aio.server(
        interceptors=[CallInterceptor(domain, verifier, {b.name: b.access for b in bindings}, metrics)],
        options=options,
    )
    for binding in bindings:
        binding.register(binding.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.name for b in bindings]
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as error:  # grpc reports a failed bind this way
        raise ListenError(f"cannot listen on {listen}: {error}") from None
    return AppServer(
        server=server, port=port, health=health_servicer, service_names=names, probe=probe, metrics=metrics
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a dict passed as the message becomes top-level fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            line.update(record.msg)
        else:
            line["msg"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


async def serve_until_signal(app: AppServer) -> None:
    """Runs `app` until SIGTERM or SIGINT, then stops it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    log.info(
        {
            "event": "listening",
            "port": app.port,
            "metrics_port": app.metrics_port,
            "services": app.service_names,
        }
    )
    await stop.wait()
    log.info({"event": "stopping"})
    await app.stop()


def main(
    package: str,
    database_variable: str,
    load: Callable[[Mapping[str, str]], Any],
    create: Callable[[Any], AppServer],
    argv: list[str],
) -> int:
    """A service's command line: `serve` (default) or `migrate`; bad settings print one line."""
    command = argv[0] if argv else "serve"
    if command not in ("serve", "migrate"):
        print(f"usage: python -m {package} [serve|migrate]", file=sys.stderr)
        return 2
    try:
        if command == "migrate":
            url = database_url(os.environ, database_variable)
            configure_logging()
            asyncio.run(migrate(url, package))
            return 0
        settings = load(os.environ)
        workers_variable = database_variable.replace("DATABASE_URL", "WORKERS")
        workers = positive_int(os.environ, workers_variable, 1)
        if workers > 1 and settings.listen.endswith(":0"):
            raise ConfigError(workers_variable, "needs a fixed port to listen on: port 0 cannot be shared")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging()

    async def serve() -> None:
        _SHARED_PORT.set(workers > 1)
        # The grpc.aio server must be created inside the running event loop.
        await serve_until_signal(create(settings))

    def run() -> int:
        try:
            asyncio.run(serve())
        except ListenError as error:
            print(f"{package}: {error}", file=sys.stderr)
            return 1
        return 0

    # Workers are forked before any event loop or gRPC object exists (gRPC does not survive a
    # fork); each then serves on the shared port and the kernel spreads connections among them.
    children = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run()
            except Exception:
                log.exception({"event": "worker_failed"})
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    code = run()
    # This process served until SIGTERM/SIGINT (or could not start): the workers stop with it.
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in children:
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            code = code or 1
    return code
