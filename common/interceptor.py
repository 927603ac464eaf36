"""The one interceptor of our services: authenticate, parse, call, map errors, log one line."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from common.auth import Access, Authenticator
from common.db import is_connection_error
from common.errors import DatabaseUnavailable, InvalidArgument, ServiceError
from common.metrics import Metrics
from common.status import rich_status

log = logging.getLogger("rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call to the listed services, then parses the request (so a body that does
    not parse is INVALID_ARGUMENT after authentication, never UNKNOWN), maps errors to rich
    statuses, logs one line and records it in the metrics.

    Health and reflection are not listed and pass through untouched.
    """

    def __init__(
        self, domain: str, authenticator: Authenticator, access: dict[str, Access], metrics: Metrics
    ) -> None:
        self._domain = domain
        self._authenticator = authenticator
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
        # The request arrives as bytes and is parsed inside the call, after authentication.
        wrapped = grpc.unary_unary_rpc_method_handler(
            self._wrap(method, access, handler.unary_unary, handler.request_deserializer),
            request_deserializer=None,
            response_serializer=handler.response_serializer,
        )
        self._wrapped[method] = wrapped
        return wrapped

    def _wrap(
        self, method: str, access: Access, behavior: Handler, parse: Callable[[bytes], Any] | None
    ) -> Handler:
        domain, authenticator, metrics = self._domain, self._authenticator, self._metrics
        message = method.rsplit("/", 1)[-1] + "Request"

        async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            reason = None
            correlation_id = None
            try:
                authorization = [
                    str(value) for key, value in context.invocation_metadata() or () if key == "authorization"
                ]
                token = access.enter(await authenticator.authenticate(authorization))
                try:
                    try:
                        request = parse(raw) if parse is not None else raw
                    except Exception:
                        raise InvalidArgument({"request": f"does not parse as {message}"}) from None
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
