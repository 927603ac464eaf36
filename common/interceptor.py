"""The one interceptor of our services: bound the work in progress, authenticate, parse, call
within the caller's deadline, map errors, log one line per call."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, cast

import grpc

from common import tracing
from common.auth import Access, Authenticator
from common.errors import InvalidArgument, Overloaded, ServiceError
from common.metrics import Metrics
from common.status import rich_status

log = logging.getLogger("rpc")

# What a grpc.aio server's handlers really are. grpc's stubs type RpcMethodHandler's behaviours for
# the sync server (a grpc.ServicerContext, a plain return or Iterator): under grpc.aio they are
# coroutine functions, or async generators for streams, given a grpc.aio.ServicerContext.
Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
# A stream's: an async generator that yields the replies, or a coroutine that writes them.
StreamHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any] | Awaitable[None]]
# The unauthenticated streams (health Watch, reflection) and how many of each a process keeps
# open: without a bound, a flood of them grows memory without end.
CAPPED_STREAMS = {
    "/grpc.health.v1.Health/Watch": 100,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": 100,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": 100,
}


class CallInterceptor(grpc.aio.ServerInterceptor):
    """For every call to the listed services: refuse it at once with RESOURCE_EXHAUSTED OVERLOADED
    when `max_in_flight` calls are already in progress; authenticate; parse the request (so a body
    that does not parse is INVALID_ARGUMENT after authentication, never UNKNOWN); run it within
    the caller's deadline (its database work is cancelled when the deadline passes); map errors to
    rich statuses; log one line and record it in the metrics, refusals and cancellations included.

    Health Watch and reflection streams, the unauthenticated surface, are capped per process
    (CAPPED_STREAMS); other health and reflection calls pass through untouched.

    With tracing on, OpenTelemetry's server interceptor runs outside this one: each call's line
    carries its trace id, which is also the correlation id of an INTERNAL error.
    """

    def __init__(
        self,
        domain: str,
        authenticator: Authenticator,
        access: dict[str, Access],
        metrics: Metrics,
        max_in_flight: int,
    ) -> None:
        self._domain = domain
        self._authenticator = authenticator
        self._access = access
        self._metrics = metrics
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._streams = dict.fromkeys(CAPPED_STREAMS, 0)
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if method in CAPPED_STREAMS:
            wrapped = self._capped_stream(method, handler)
        else:
            access = self._access.get(method.split("/")[1] if method.count("/") == 2 else "")
            if access is None or handler.unary_unary is None:
                return handler
            # The request arrives as bytes and is parsed inside the call, after authentication.
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap(method, access, cast(Handler, handler.unary_unary), handler.request_deserializer),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(
        self, method: str, access: Access, behavior: Handler, parse: Callable[[bytes], Any] | None
    ) -> Handler:
        message = method.rsplit("/", 1)[-1] + "Request"

        async def call(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = "OK"
            reason = None
            correlation_id = None
            admitted = self._in_flight < self._max_in_flight
            if admitted:
                self._in_flight += 1
            try:
                if not admitted:
                    raise Overloaded(self._max_in_flight)
                authorization = [
                    str(value) for key, value in context.invocation_metadata() or () if key == "authorization"
                ]
                token = access.enter(await self._authenticator.authenticate(authorization))
                try:
                    try:
                        request = parse(raw) if parse is not None else raw
                    except Exception:
                        raise InvalidArgument({"request": f"does not parse as {message}"}) from None
                    async with asyncio.timeout(context.time_remaining()):
                        return await behavior(request, context)
                finally:
                    access.leave(token)
            except ServiceError as error:
                code, reason = error.code, error.reason
                await _abort(context, rich_status(error, self._domain))
            except grpc.aio.AbortError:
                code = context.code().name if context.code() else "UNKNOWN"
                raise
            except TimeoutError:
                # The caller's deadline passed (or a statement outran DB_STATEMENT_TIMEOUT_SECONDS):
                # the call's database work was cancelled on the server.
                code = "DEADLINE_EXCEEDED"
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed; nothing was kept"
                )
            except asyncio.CancelledError:
                remaining = context.time_remaining()
                code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
                raise
            except Exception:
                # The trace's id when traced: the one id that finds both the log and the trace.
                correlation_id = tracing.trace_id() or uuid.uuid4().hex
                internal = ServiceError("internal error", correlation_id=correlation_id)
                log.exception("unhandled error in %s [%s]", method, correlation_id)
                code, reason = internal.code, internal.reason
                await _abort(context, rich_status(internal, self._domain))
            finally:
                if admitted:
                    self._in_flight -= 1
                self._log(method, code, reason, time.perf_counter() - started, correlation_id)

        return call

    def _capped_stream(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """The handler of an unauthenticated stream, refused with RESOURCE_EXHAUSTED OVERLOADED once
        its per-process cap is reached.

        It yields the replies, whether the library's handler yields or writes them (health Watch
        writes): OpenTelemetry's aio server interceptor iterates whatever it wraps, and fails a
        handler that only writes."""
        limit = CAPPED_STREAMS[method]
        # Built once: a flood of these is refused with the very same status.
        refusal = rich_status(Overloaded(limit), self._domain)
        unary_request = handler.unary_stream is not None
        behavior = cast(StreamHandler, handler.unary_stream if unary_request else handler.stream_stream)

        async def capped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if self._streams[method] >= limit:
                self._log(method, "RESOURCE_EXHAUSTED", Overloaded.reason, 0.0, None)
                await _abort(context, refusal)
            self._streams[method] += 1
            started = time.perf_counter()
            code = "OK"
            try:
                replies = behavior(request, context)
                if hasattr(replies, "__aiter__"):
                    async for reply in replies:
                        yield reply
                else:
                    await replies
            except asyncio.CancelledError:
                code = "CANCELLED"  # how a watcher normally leaves
                raise
            finally:
                self._streams[method] -= 1
                self._log(method, code, None, time.perf_counter() - started, None)

        factory = (
            grpc.unary_stream_rpc_method_handler if unary_request else grpc.stream_stream_rpc_method_handler
        )
        return factory(
            capped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _log(
        self, method: str, code: str, reason: str | None, elapsed: float, correlation_id: str | None
    ) -> None:
        self._metrics.observe(method, code, elapsed)
        line: dict[str, Any] = {"method": method, "code": code, "duration_ms": round(elapsed * 1000, 3)}
        if reason:
            line["reason"] = reason
        if correlation_id:
            line["correlation_id"] = correlation_id
        trace_id = tracing.trace_id()
        if trace_id:
            line["trace_id"] = trace_id
        log.info(line)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: grpc.Status) -> NoReturn:
    """Ends the call with `status` (its google.rpc.Status rides in the trailing metadata).

    What abort_with_status does, but through `abort` itself: with tracing on, `context` is
    OpenTelemetry's wrapper, which sees the code (and marks the server span) only there."""
    await context.abort(status.code, status.details, status.trailing_metadata)
