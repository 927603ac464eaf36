"""Floods, run as a process of their own by tests/test_overload.py (so the flood's calls cost the
test process neither memory nor event-loop time):

    python -m tests.flood watch TARGET CHANNELS STREAMS_PER_CHANNEL [CA_FILE]
    python -m tests.flood idle TARGET CHANNELS [CA_FILE]

`watch` opens CHANNELS connections (each its own: no shared subchannel) and STREAMS_PER_CHANNEL
health Watch streams on each, all at once. `idle` opens CHANNELS connections and makes no call on
them. With CA_FILE the connections are TLS, trusting that CA.

Once every stream has answered (a first message, or an error), or every connection has become
ready or given up, it prints one JSON line of counts and keeps what it opened until stdin says
anything (or closes); then it closes it all and prints a last JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.client import tls_credentials
from tests.helpers import outcome

# How long an idle connection may take to become ready before it counts as refused.
CONNECT_SECONDS = 5.0
# One example of each kind of failure, for the report.
details: dict[str, str] = {}


def _channel(target: str, ca_file: str | None) -> grpc.aio.Channel:
    options = [("grpc.use_local_subchannel_pool", 1)]
    if ca_file is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls_credentials(ca_file), options=options)


async def _watch(stub: health_pb2_grpc.HealthStub, open_calls: list, counts: Counter[str]) -> None:
    call = stub.Watch(health_pb2.HealthCheckRequest())
    try:
        reply = await call.read()
    except grpc.aio.AioRpcError as error:
        key = " ".join(outcome(error)).strip()
        counts[key] += 1
        details.setdefault(key, f"{error.details()} | {error.debug_error_string()}"[:300])
        return
    if reply is grpc.aio.EOF:
        counts[f"EOF {(await call.code()).name}"] += 1
        return
    counts[health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)] += 1
    open_calls.append(call)


async def _connect(channel: grpc.aio.Channel, counts: Counter[str]) -> None:
    try:
        await asyncio.wait_for(channel.channel_ready(), CONNECT_SECONDS)
    except TimeoutError:
        counts["NOT_READY"] += 1
        return
    counts["READY"] += 1


async def main(mode: str, target: str, channels: int, per_channel: int, ca_file: str | None) -> None:
    began = time.monotonic()
    open_calls: list = []
    counts: Counter[str] = Counter()
    opened = [_channel(target, ca_file) for _ in range(channels)]
    if mode == "watch":
        stubs = [health_pb2_grpc.HealthStub(channel) for channel in opened]
        await asyncio.gather(
            *(_watch(stubs[n % channels], open_calls, counts) for n in range(channels * per_channel))
        )
    else:
        await asyncio.gather(*(_connect(channel, counts) for channel in opened))
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
    mode, target, count, *rest = sys.argv[1:]
    per = int(rest.pop(0)) if mode == "watch" else 0
    asyncio.run(main(mode, target, int(count), per, rest[0] if rest else None))
