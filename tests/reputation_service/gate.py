"""A stand-in for the session service, placed between the reputation service and the real one:
it sees every internal call (how many, with how much deadline left, when each began and ended)
and forwards it, or holds it until the test lets it go or the caller's deadline ends it."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
from grpc_status import rpc_status
from interview.sessions.v1 import sessions_pb2_grpc


class Gate(sessions_pb2_grpc.SessionInternalServiceServicer):
    def __init__(self, target: str) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = sessions_pb2_grpc.SessionInternalServiceStub(self._channel)
        # Methods whose calls are held until `opened` is set (then forwarded): until then the
        # caller's deadline (or its going away) is what ends them.
        self.holding: set[str] = set()
        self.opened = asyncio.Event()
        # Sent instead of the caller's authorization when set (a token the real service refuses).
        self.authorization: Sequence[tuple[str, str]] | None = None
        self.port = 0
        self.calls: Counter[tuple[str, str]] = Counter()  # (method, session_id) -> calls received
        self.forwarded: Counter[tuple[str, str]] = Counter()  # ... -> calls answered OK by the real one
        self.budgets: dict[str, list[float | None]] = defaultdict(list)  # method -> time_remaining()
        # (method, session_id) -> [(start, end)] in event-loop time, of every call received.
        self.spans: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)

    async def LookupSession(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._pass("LookupSession", request, context)

    async def CompletePairedSession(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._pass("CompletePairedSession", request, context)

    async def _pass(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> Any:
        key = (method, request.session_id)
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.calls[key] += 1
        self.budgets[method].append(context.time_remaining())
        try:
            if method in self.holding:
                await self.opened.wait()  # or cancelled when the caller's deadline passes
            metadata = self.authorization or [
                (k, v) for k, v in context.invocation_metadata() or () if k == "authorization"
            ]
            try:
                reply = await getattr(self._stub, method)(
                    request, metadata=metadata, timeout=context.time_remaining()
                )
            except grpc.aio.AioRpcError as error:
                status = rpc_status.from_call(error)  # type: ignore[arg-type]
                if status is not None:
                    await context.abort_with_status(rpc_status.to_status(status))
                await context.abort(error.code(), error.details() or "")
            self.forwarded[key] += 1
            return reply
        finally:
            self.spans[key].append((started, loop.time()))

    async def close(self) -> None:
        await self._channel.close()


@asynccontextmanager
async def running_gate(target: str) -> AsyncIterator[Gate]:
    """A Gate in front of the session service at `target`, listening on a port of its own."""
    gate = Gate(target)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    sessions_pb2_grpc.add_SessionInternalServiceServicer_to_server(gate, server)
    gate.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield gate
    finally:
        await server.stop(grace=None)
        await gate.close()


def overlapping(spans: list[tuple[float, float]]) -> bool:
    """True when two of the calls were under way at the same time."""
    ordered = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))
