"""One load process: `slots` closed-loop callers (grpc.aio, or asyncpg for the db floor), each
sending its next call as soon as the previous one answers (or refuses it for overload: refusals
are counted and timed apart from the calls and the errors), on the timetable the Job carries
(CLOCK_MONOTONIC, shared by all processes): start, warm-up until `measure`, count until `end`.
gRPC goes plaintext, or mutual TLS when the Job carries client TlsSettings."""

from __future__ import annotations

import asyncio
import itertools
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import status_pb2
from google.rpc.error_details_pb2 import ErrorInfo

from bench import sqlpaths
from bench.workloads import SCENARIOS, Data, Requests
from common.auth import mint
from common.config import JwtSettings, TlsSettings
from common.tls import aio_channel

CHANNELS_PER_PROCESS = 4  # separate connections, so SO_REUSEPORT workers all get some
SIZE_SAMPLES = 200
OVERLOADED = "OVERLOADED"  # the ErrorInfo reason of a call refused at MAX_CONCURRENT_RPCS


@dataclass(frozen=True)
class Job:
    kind: str  # "grpc": a service or the fused floor; "raw": the echo floor; "db": asyncpg here
    scenario: str
    target: str
    slots: int
    data: Data
    jwt: JwtSettings
    page_secret: bytes  # the services' PAGE_TOKEN_SECRET, for the page tokens ListMessages sends
    tls: TlsSettings | None = None  # dial TLS: trust its ca_file, present its client certificate
    calls: tuple[int, int] = (0, 0)  # the call numbers this process may use, for consuming scenarios
    times: tuple[float, float, float] = (0.0, 0.0, 0.0)  # start, measure, end
    request_bytes: int = 0
    response_bytes: int = 0
    dsns: tuple[str, str] = ("", "")
    pool_size: int = 10
    seed: int = 0


@dataclass
class Result:
    calls: int = 0  # successful calls that finished inside the window
    errors: int = 0
    latencies: array[float] = field(default_factory=lambda: array("d"))
    # Calls the server refused at once (RESOURCE_EXHAUSTED OVERLOADED: at its MAX_CONCURRENT_RPCS)
    # inside the window, and how long each refusal took: not errors; the caller sends its next call.
    refused: int = 0
    refused_latencies: array[float] = field(default_factory=lambda: array("d"))
    exhausted: bool = False  # ran out of pre-created rows before the window ended
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (request, reply) bytes, sampled
    error: str = ""


def overloaded(error: Exception) -> bool:
    """Whether a call failed as refused for overload: RESOURCE_EXHAUSTED with ErrorInfo OVERLOADED."""
    if not isinstance(error, grpc.aio.AioRpcError) or error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return False
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = ErrorInfo()
                if detail.Unpack(info) and info.reason == OVERLOADED:
                    return True
    return False


def serve_jobs(conn: Any) -> None:
    """The process's loop: run each Job received on `conn` and send back its Result; None ends it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    while (job := conn.recv()) is not None:
        try:
            conn.send(loop.run_until_complete(_run(job)))
        except Exception as error:  # a broken case is reported, the process lives on
            conn.send(Result(error=f"{type(error).__name__}: {error}"))
    loop.close()


async def _run(job: Job) -> Result:
    spec = SCENARIOS[job.scenario]
    requests = Requests(job.scenario, job.data, job.page_secret, job.seed)
    result = Result()
    tokens: dict[str, tuple[tuple[str, str]]] = {}

    def metadata(user: str) -> tuple[tuple[str, str]]:
        if user not in tokens:
            tokens[user] = (("authorization", "Bearer " + mint(job.jwt, job.jwt.key, user, 3600)),)
        return tokens[user]

    channels: list[grpc.aio.Channel] = []
    methods: list[Any] = []
    pools = None
    if job.kind == "db":
        pools = await sqlpaths.open_pools(*job.dsns, job.pool_size, job.page_secret)
        path = sqlpaths.PATHS[job.scenario]

        async def send(slot: int, caller: str, request: Any) -> Any:
            return await path(pools, caller, request)

    else:
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            aio_channel(job.target, job.tls, options) for _ in range(min(job.slots, CHANNELS_PER_PROCESS))
        ]
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 15) for c in channels))
        if job.kind == "raw":
            payload = b"\x01" * job.request_bytes
            methods = [c.unary_unary(f"/bench.Echo/{job.response_bytes}") for c in channels]
        else:
            serialize, parse = spec.request.SerializeToString, spec.response.FromString
            methods = [
                c.unary_unary(spec.method, request_serializer=serialize, response_deserializer=parse)
                for c in channels
            ]

        async def send(slot: int, caller: str, request: Any) -> Any:
            message = payload if job.kind == "raw" else request
            return await methods[slot % len(methods)](message, metadata=metadata(caller))

    consuming = spec.consumes and job.kind != "raw"
    numbers = iter(range(*job.calls)) if consuming else itertools.count()
    start, measure, end = job.times

    async def slot(number: int) -> None:
        while time.monotonic() < end:
            k = next(numbers, None)
            if k is None:
                result.exhausted = True
                return
            caller, request = requests(k)
            began = time.monotonic()
            try:
                reply = await send(number, caller, request)
            except Exception as error:
                done = time.monotonic()
                if overloaded(error):  # closed loop: sent again at once, the worst case for the server
                    if measure <= done < end:
                        result.refused_latencies.append(done - began)
                    continue
                if measure <= done < end:
                    result.errors += 1
                    result.error = result.error or f"{type(error).__name__}: {error}"[:300]
                continue
            done = time.monotonic()
            if measure <= done < end:
                result.latencies.append(done - began)
                if job.kind == "grpc" and len(result.sizes) < SIZE_SAMPLES:
                    result.sizes.append((request.ByteSize(), reply.ByteSize()))

    await asyncio.sleep(max(0.0, start - time.monotonic()))
    try:
        await asyncio.gather(*(slot(n) for n in range(job.slots)))
    finally:
        for channel in channels:
            await channel.close()
        if pools is not None:
            await sqlpaths.close_pools(pools)
    result.calls = len(result.latencies)
    result.refused = len(result.refused_latencies)
    return result
