"""A flood of health Watch streams, run as a process of its own by tests/test_overload.py (so the
flood's calls cost the test process neither memory nor event-loop time):

    python -m tests.watch_flood TARGET CHANNELS STREAMS_PER_CHANNEL

Opens CHANNELS connections (each its own: no shared subchannel) and STREAMS_PER_CHANNEL Watch
streams on each, at most MAX_PENDING unanswered at once. Once every stream has answered (a first
message, or an error) it prints one JSON line of counts and keeps the accepted streams open until
stdin says anything (or closes); then it cancels them and prints a last JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers import outcome

MAX_PENDING = 2000
# One example of each kind of failure, for the report.
details: dict[str, str] = {}


async def _watch(
    stub: health_pb2_grpc.HealthStub, pending: asyncio.Semaphore, open_calls: list, counts: Counter[str]
) -> None:
    async with pending:
        call = stub.Watch(health_pb2.HealthCheckRequest())
        try:
            reply = await call.read()
        except grpc.aio.AioRpcError as error:
            key = " ".join(outcome(error)).strip()
            counts[key] += 1
            if key not in details:
                details[key] = f"{error.details()} | {error.debug_error_string()}"[:300]
            return
        if reply is grpc.aio.EOF:
            counts[f"EOF {(await call.code()).name}"] += 1
            return
        counts[health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)] += 1
        open_calls.append(call)


async def main(target: str, channels: int, per_channel: int) -> None:
    began = time.monotonic()
    pending = asyncio.Semaphore(MAX_PENDING)
    open_calls: list = []
    counts: Counter[str] = Counter()
    opened = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stubs = [health_pb2_grpc.HealthStub(channel) for channel in opened]
    await asyncio.gather(
        *(_watch(stubs[n % channels], pending, open_calls, counts) for n in range(channels * per_channel))
    )
    print(
        json.dumps(
            {
                "counts": counts,
                "details": details,
                "open": len(open_calls),
                "seconds": time.monotonic() - began,
            }
        ),
        flush=True,
    )

    await asyncio.to_thread(sys.stdin.readline)
    for call in open_calls:
        call.cancel()
    cancelled = sum([(await call.code()) == grpc.StatusCode.CANCELLED for call in open_calls])
    for channel in opened:
        await channel.close()
    print(json.dumps({"cancelled": cancelled}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
