"""Overload, for real: more calls than MAX_CONCURRENT_RPCS held on a row lock, floods of health
Watch streams and of idle connections against the service run as its own process (plaintext and
TLS), and more reflection streams than the per-process cap. The excess is refused at once with
RESOURCE_EXHAUSTED OVERLOADED, counted in the metrics and the call log, or, past the bounds of what
gRPC core holds (PENDING_CALLS, MAX_CONNECTIONS), shed by core; peak memory stays under
FLOOD_PEAK_RSS_MB and authenticated calls keep answering."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from common.app import MAX_CONNECTIONS, AppServer
from common.client import tls_credentials
from common.config import ConfigError, Limits
from common.devcerts import write_dev_certificates
from common.interceptor import CAPPED_STREAMS
from reputation_service import api as reputation_api
from reputation_service import config as reputation_config
from session_service import config as session_config
from tests.helpers import (
    FLOOD_PEAK_RSS_MB,
    call_lines,
    calls,
    equals,
    expect_error,
    holds,
    new_id,
    outcome,
    paired,
    rich_error,
    scrape,
    user_metadata,
    wait_for,
)
from tests.servers import ServiceProcess, reputation_config_for, start_session_server

PAUSE = "/interview.sessions.v1.SessionService/PauseSession"
WATCH = "/grpc.health.v1.Health/Watch"
REFLECTIONS = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]
ROOT = Path(__file__).resolve().parent.parent
# Separate connections: channels to one target share a subchannel (one connection) by default.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture
async def eight_at_once(database_url, keys) -> AsyncIterator[AppServer]:
    """A session server of its own that takes at most 8 calls at once."""
    app = await start_session_server(database_url, keys, limits=Limits(max_concurrent_rpcs=8))
    yield app
    await app.stop(grace=1)


def call_outcomes(caplog: pytest.LogCaptureFixture, method: str) -> Counter[tuple[str, str]]:
    """How many call log lines of `method` there are of each (code, reason)."""
    return Counter((line["code"], line.get("reason", "")) for line in call_lines(caplog, method))


# --- 2a: MAX_CONCURRENT_RPCS ------------------------------------------------------------------------


async def test_calls_past_max_concurrent_rpcs_are_refused_at_once_counted_and_logged(
    eight_at_once, database_url, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="rpc")
    app = eight_at_once
    user = user_metadata(jwt_settings, new_id())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = sessions_pb2_grpc.SessionServiceStub(channel)
        created = await stub.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user)
        holder = await asyncpg.connect(database_url)
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute(
            "SELECT 1 FROM sessions.sessions WHERE session_id = $1 FOR UPDATE", created.session_id
        )
        answers: list[tuple[str, str, float]] = []

        async def pause() -> None:
            began = time.perf_counter()
            try:
                reply = await stub.PauseSession(
                    pb.PauseSessionRequest(session_id=created.session_id), metadata=user, timeout=10
                )
                code, reason = "OK", pb.SessionStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                code, reason = outcome(error)
            answers.append((code, reason, time.perf_counter() - began))

        def refused() -> list[float]:
            return [
                took
                for code, reason, took in answers
                if (code, reason) == ("RESOURCE_EXHAUSTED", "OVERLOADED")
            ]

        async def waiting() -> int:
            # The first waits for the holder's transaction, the others for the row's tuple lock,
            # which the first holds: count every service backend waiting on a lock here.
            return await holder.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'session_service' "
                "AND datname = current_database() AND wait_event_type = 'Lock'"
            )

        tasks = [asyncio.create_task(pause()) for _ in range(100)]
        try:
            await wait_for(
                lambda: holds(len(refused()) == 92), within=10, what="92 calls to come back refused"
            )
            await wait_for(
                lambda: equals(waiting(), 8), within=10, what="8 statements waiting on the row lock"
            )
            # The 8 admitted calls are still waiting; every other call has been answered.
            assert sum(task.done() for task in tasks) == 92
            assert len(answers) == 92
        finally:
            await transaction.rollback()
            await holder.close()
            await asyncio.gather(*tasks)

    latencies = sorted(refused())
    # As the server measured them (from the interceptor's start to the refusal sent).
    server_ms = [
        record.msg["duration_ms"]
        for record in caplog.records
        if isinstance(record.msg, dict)
        and record.msg.get("method") == PAUSE
        and record.msg.get("code") == "RESOURCE_EXHAUSTED"
    ]
    print(
        f"refused {len(latencies)}: at the client min {latencies[0] * 1000:.1f} ms, "
        f"median {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms; "
        f"in the server max {max(server_ms):.2f} ms"
    )
    # "At once" is the server's figure: no refusal waited for anything. The client's figure also
    # holds its own event loop's turn among 100 tasks on a busy CI box, so its bound is loose.
    assert max(server_ms) < 50, server_ms
    assert latencies[-1] < 1.0, latencies
    admitted = Counter((code, reason) for code, reason, _ in answers if code != "RESOURCE_EXHAUSTED")
    assert admitted == {("OK", "SESSION_STATUS_PAUSED"): 1, ("FAILED_PRECONDITION", "SESSION_NOT_ACTIVE"): 7}

    samples = await scrape(app)
    assert calls(samples, PAUSE, "RESOURCE_EXHAUSTED") == 92
    assert calls(samples, PAUSE, "OK") == 1
    assert calls(samples, PAUSE, "FAILED_PRECONDITION") == 7
    logged = call_outcomes(caplog, PAUSE)
    assert logged == {
        ("RESOURCE_EXHAUSTED", "OVERLOADED"): 92,
        ("OK", ""): 1,
        ("FAILED_PRECONDITION", "SESSION_NOT_ACTIVE"): 7,
    }


# --- 2b: floods against the service run as its own process -------------------------------------
#
# Each flood comes from a process of its own (tests/flood.py) against a service process, while a
# sampler reads the server's RSS every 100 ms and times an authenticated call. What bounds the peak:
# at most PENDING_CALLS calls wait in gRPC core for the server to take them (past that core refuses
# them itself) and at most MAX_CONNECTIONS connections are open at once.

WATCH_CAP = CAPPED_STREAMS[WATCH]
FLOODS = {
    # 20,000 Watch streams over 400 connections, all opened at once.
    "watch": ["400", "50"],
    # 5,000 connections that connect and then do nothing.
    "idle": ["5000"],
}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


@dataclass
class Flooded:
    """What one flood did to a service process: its counts from the flooding side, the server's
    RSS, and the authenticated call's latency."""

    opened: dict[str, Any]
    cancelled_at_end: int
    baseline_rss: float
    peak_rss: float
    during_ms: list[float]
    after_ms: list[float]
    log: list[str]


async def flood_a_service(
    package: str, mode: str, keys, database_url: str, jwt_settings, tmp_path: Path, tls: bool
) -> Flooded:
    prefix = "SESSION" if package == "session_service" else "REPUTATION"
    env = {
        **keys.env(),
        f"{prefix}_LISTEN": "127.0.0.1:0",
        f"{prefix}_METRICS_LISTEN": "127.0.0.1:0",
        f"{prefix}_DATABASE_URL": database_url,
    }
    ca_args: list[str] = []
    credentials = None
    if tls:
        certs = write_dev_certificates(tmp_path / "tls", ["localhost", "127.0.0.1"])
        env |= {"TLS_CERT_FILE": str(certs.server_cert), "TLS_KEY_FILE": str(certs.server_key)}
        ca_args = [str(certs.ca)]
        credentials = tls_credentials(str(certs.ca))
    service = await ServiceProcess(package, env).start()
    flood: asyncio.subprocess.Process | None = None
    user = user_metadata(jwt_settings, new_id())
    try:
        assert service.process is not None
        pid = service.process.pid
        channel = (
            grpc.aio.secure_channel(service.target, credentials)
            if credentials is not None
            else grpc.aio.insecure_channel(service.target)
        )
        async with channel:
            if package == "session_service":
                stub = sessions_pb2_grpc.SessionServiceStub(channel)
                created = await stub.CreateSession(
                    pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user
                )
                authenticated = functools.partial(
                    stub.GetSession, pb.GetSessionRequest(session_id=created.session_id)
                )
            else:
                authenticated = functools.partial(
                    reputation_pb2_grpc.ReputationServiceStub(channel).GetReputation,
                    rpb.GetReputationRequest(),
                )

            async def call_ms() -> float:
                began = time.perf_counter()
                await authenticated(metadata=user, timeout=5)
                return (time.perf_counter() - began) * 1000

            await call_ms()
            baseline_rss = rss_mb(pid)
            peak_rss = baseline_rss
            during_ms: list[float] = []
            sampling = True

            async def sample_rss() -> None:
                nonlocal peak_rss
                while sampling:
                    peak_rss = max(peak_rss, rss_mb(pid))
                    await asyncio.sleep(0.1)

            async def sample_calls() -> None:
                while sampling:
                    during_ms.append(await call_ms())
                    await asyncio.sleep(0.05)

            samplers = [asyncio.create_task(sample_rss()), asyncio.create_task(sample_calls())]
            flood = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.flood",
                mode,
                service.target,
                *FLOODS[mode],
                *ca_args,
                cwd=str(ROOT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert flood.stdout is not None and flood.stdin is not None
            first = await asyncio.wait_for(flood.stdout.readline(), 120)
            assert first, f"the flood process ended early with {await flood.wait()}"
            # Kept open a moment longer: what the flood holds open is sampled too.
            await asyncio.sleep(1)
            sampling = False
            await asyncio.gather(*samplers)
            after_ms = [await call_ms() for _ in range(3)]
            flood.stdin.write(b"stop\n")
            await flood.stdin.drain()
            last = json.loads(await asyncio.wait_for(flood.stdout.readline(), 60))
            assert await asyncio.wait_for(flood.wait(), 60) == 0
            flood = None
    finally:
        if flood is not None:
            flood.kill()
            await flood.wait()
        if service.process is not None and service.process.returncode is None:
            service.process.send_signal(signal.SIGTERM)
            await service.wait()
    return Flooded(
        json.loads(first), last["cancelled"], baseline_rss, peak_rss, during_ms, after_ms, service.log
    )


def within_100_ms(during_ms: list[float]) -> bool:
    """Nine in ten authenticated calls made during the flood took under 100 ms. On two cores the
    flooding process, the server and this test's sampler share the CPU: a sample now and then waits
    for the scheduler, not for the server (measured: the median stays near 3 ms)."""
    return len(during_ms) >= 10 and sorted(during_ms)[len(during_ms) * 9 // 10] < 100


def assert_bounded_and_answered(what: str, flooded: Flooded) -> Counter[str]:
    """Reports the flood, asserts what every flood must leave (peak RSS under the bound, the
    authenticated call answered during and after it) and returns the flooding side's counts."""
    ms = sorted(flooded.during_ms)
    print(
        f"{what}: {dict(flooded.opened['counts'])} in {flooded.opened['seconds']:.1f}s; "
        f"server RSS baseline {flooded.baseline_rss:.0f} MB, peak {flooded.peak_rss:.0f} MB; "
        f"authenticated call during the flood: {len(ms)} calls, median {ms[len(ms) // 2]:.1f} ms, "
        f"95th percentile {ms[len(ms) * 95 // 100]:.1f} ms, max {ms[-1]:.1f} ms, "
        f"{sum(m >= 100 for m in ms)} at 100 ms or more; "
        f"after {[round(m, 1) for m in flooded.after_ms]} ms; "
        f"failures seen {flooded.opened['details']}"
    )
    assert flooded.peak_rss < FLOOD_PEAK_RSS_MB, flooded.peak_rss
    assert within_100_ms(flooded.during_ms), ms
    assert min(flooded.after_ms) < 100, flooded.after_ms
    return Counter(flooded.opened["counts"])


FLOODED = [
    pytest.param("session_service", False, id="session"),
    pytest.param("reputation_service", True, id="reputation-over-tls"),
]


@pytest.mark.parametrize("package, tls", FLOODED)
async def test_a_flood_of_watch_streams_is_refused_past_the_cap_memory_stays_bounded_and_calls_answer(
    package, tls, keys, database_url, jwt_settings, tmp_path
):
    flooded = await flood_a_service(package, "watch", keys, database_url, jwt_settings, tmp_path, tls)
    counts = assert_bounded_and_answered(f"20,000 Watch streams over 400 connections at {package}", flooded)
    refused = counts["RESOURCE_EXHAUSTED OVERLOADED"]
    shed = counts["CANCELLED"]
    # Every stream came back: accepted up to the cap, refused by the service (logged) or, past the
    # pending-call bound, by gRPC core itself; none is lost some other way.
    assert sum(counts.values()) == 20_000
    assert set(counts) <= {"SERVING", "RESOURCE_EXHAUSTED OVERLOADED", "CANCELLED"}, counts
    assert counts["SERVING"] <= WATCH_CAP
    assert flooded.cancelled_at_end == flooded.opened["open"] == counts["SERVING"]
    assert refused + shed >= 20_000 - WATCH_CAP
    logged = sum(
        f'"method": "{WATCH}"' in line and '"code": "RESOURCE_EXHAUSTED"' in line for line in flooded.log
    )
    assert logged == refused


@pytest.mark.parametrize("package, tls", FLOODED)
async def test_a_flood_of_idle_connections_is_bounded_and_calls_answer(
    package, tls, keys, database_url, jwt_settings, tmp_path
):
    flooded = await flood_a_service(package, "idle", keys, database_url, jwt_settings, tmp_path, tls)
    counts = assert_bounded_and_answered(f"5,000 idle connections at {package}", flooded)
    assert sum(counts.values()) == 5_000
    # Up to the connection bound (less the sampler's own connection) they are served; past it they
    # are closed at once and never become ready.
    assert 0 < counts["READY"] <= MAX_CONNECTIONS, counts


# --- 2c: reflection streams ----------------------------------------------------------------------------


@pytest.fixture
async def plain_server(database_url, keys) -> AsyncIterator[AppServer]:
    app = await start_session_server(database_url, keys)
    yield app
    await app.stop(grace=1)


def reflection_stream(channel: grpc.aio.Channel, path: str) -> grpc.aio.StreamStreamCall:
    """A ServerReflectionInfo stream over `path` (v1 and v1alpha carry the same messages)."""
    return channel.stream_stream(
        path,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )()


def test_the_stream_caps_cover_exactly_the_unauthenticated_streams_served():
    assert set(CAPPED_STREAMS) == {WATCH, *REFLECTIONS}


@pytest.mark.parametrize("path", REFLECTIONS)
async def test_reflection_streams_past_the_per_process_cap_are_refused(plain_server, caplog, path):
    caplog.set_level(logging.INFO, logger="rpc")
    cap = CAPPED_STREAMS[path]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{plain_server.port}", options=OWN_CONNECTION) for _ in range(3)
    ]
    streams = []
    answers: Counter[str] = Counter()

    async def reflect(channel: grpc.aio.Channel) -> None:
        call = reflection_stream(channel, path)
        streams.append(call)
        try:
            await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            reply = await call.read()
        except grpc.aio.AioRpcError as error:
            decoded = rich_error(error)
            answers[f"{decoded.code.name} {decoded.reason}"] += 1
            return
        if reply is grpc.aio.EOF:
            answers[f"EOF {(await call.code()).name}"] += 1
            return
        names = {service.name for service in reply.list_services_response.service}
        answers["listed" if "interview.sessions.v1.SessionService" in names else "wrong"] += 1

    try:
        # 150 streams on 3 connections (50 each: under the 100 streams a connection may carry).
        await asyncio.wait_for(asyncio.gather(*(reflect(channels[n % 3]) for n in range(150))), 30)
        assert answers == {"listed": cap, "RESOURCE_EXHAUSTED OVERLOADED": 150 - cap}
        assert call_outcomes(caplog, path) == {("RESOURCE_EXHAUSTED", "OVERLOADED"): 150 - cap}
        samples = await scrape(plain_server)
        assert calls(samples, path, "RESOURCE_EXHAUSTED") == 150 - cap
    finally:
        for call in streams:
            call.cancel()
        for channel in channels:
            await channel.close()

    # Once they are closed, new ones are taken again.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{plain_server.port}") as channel:

        async def taken() -> bool:
            call = reflection_stream(channel, path)
            try:
                await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
                reply = await call.read()
            except grpc.aio.AioRpcError:
                return False
            finally:
                call.cancel()
            return reply is not grpc.aio.EOF

        await wait_for(taken, within=5, what="a reflection stream to be taken once the others closed")


# --- per connection: at most 100 streams ---------------------------------------------------------------


async def test_one_connection_carries_at_most_100_streams_the_next_waits_in_the_client(plain_server, caplog):
    caplog.set_level(logging.INFO, logger="rpc")
    target = f"127.0.0.1:{plain_server.port}"
    async with (
        grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as first,
        grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as second,
    ):
        stub = health_pb2_grpc.HealthStub(first)
        watches = [stub.Watch(health_pb2.HealthCheckRequest()) for _ in range(100)]
        try:
            replies = await asyncio.wait_for(asyncio.gather(*(watch.read() for watch in watches)), 30)
            assert {reply.status for reply in replies} == {health_pb2.HealthCheckResponse.SERVING}
            # The 101st stream on the same connection never reaches the server (it would be refused
            # there: the process cap is taken too); it waits in the client until its deadline.
            extra = stub.Watch(health_pb2.HealthCheckRequest(), timeout=1)
            with pytest.raises(grpc.aio.AioRpcError) as waited:
                await extra.read()
            assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # On another connection, the next one does reach the server, and is refused.
            other = health_pb2_grpc.HealthStub(second).Watch(health_pb2.HealthCheckRequest(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await other.read()
            decoded = rich_error(raised.value)
            assert (decoded.code, decoded.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED")
            assert call_outcomes(caplog, WATCH) == {("RESOURCE_EXHAUSTED", "OVERLOADED"): 1}
        finally:
            for watch in watches:
                watch.cancel()


# --- the limits come from the environment -----------------------------------------------------------


def test_limits_are_read_from_the_environment_by_both_services(keys, database_url):
    env = {**keys.env(), "SESSION_DATABASE_URL": database_url, "REPUTATION_DATABASE_URL": database_url}
    for load in (session_config.load, reputation_config.load):
        assert load(env).limits == Limits(max_concurrent_rpcs=512, statement_timeout=5.0)
        limited = load({**env, "MAX_CONCURRENT_RPCS": "8", "DB_STATEMENT_TIMEOUT_SECONDS": "0.25"})
        assert limited.limits == Limits(max_concurrent_rpcs=8, statement_timeout=0.25)
        for variable, value in (
            ("MAX_CONCURRENT_RPCS", "0"),
            ("MAX_CONCURRENT_RPCS", "many"),
            ("DB_STATEMENT_TIMEOUT_SECONDS", "0"),
            ("DB_STATEMENT_TIMEOUT_SECONDS", "-1"),
            ("DB_STATEMENT_TIMEOUT_SECONDS", "soon"),
        ):
            with pytest.raises(ConfigError) as raised:
                load({**env, variable: value})
            assert raised.value.variable == variable


# --- a burst: every call is answered; each one the service sees is counted and logged -------------

BURST_CHANNELS = 30
BURST = BURST_CHANNELS * 100


async def test_a_burst_of_3000_calls_is_answered_ok_overloaded_or_shed_and_every_call_seen_is_logged(
    plain_server, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="rpc")
    get = "/interview.sessions.v1.SessionService/GetSession"
    user = user_metadata(jwt_settings, new_id())
    target = f"127.0.0.1:{plain_server.port}"
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(BURST_CHANNELS)]
    try:
        stubs = [sessions_pb2_grpc.SessionServiceStub(channel) for channel in channels]
        created = await stubs[0].CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user
        )
        answers: Counter[tuple[str, str]] = Counter()

        async def get_session(stub: sessions_pb2_grpc.SessionServiceStub) -> None:
            try:
                await stub.GetSession(
                    pb.GetSessionRequest(session_id=created.session_id), metadata=user, timeout=30
                )
                answers[("OK", "")] += 1
            except grpc.aio.AioRpcError as error:
                answers[outcome(error)] += 1

        began = time.monotonic()
        await asyncio.gather(*(get_session(stubs[n % BURST_CHANNELS]) for n in range(BURST)))
        took = time.monotonic() - began
    finally:
        for channel in channels:
            await channel.close()
    samples = await scrape(plain_server)
    counted = {code: calls(samples, get, code) for code in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED")}
    print(f"burst of {BURST} GetSession in {took:.1f}s: {dict(answers)}; counted {counted}")
    # What reached the service is answered and logged; what found PENDING_CALLS already waiting in
    # gRPC core was shed there (CANCELLED, no reason), and never reached the log.
    assert set(answers) <= {("OK", ""), ("RESOURCE_EXHAUSTED", "OVERLOADED"), ("CANCELLED", "")}, answers
    assert answers[("OK", "")] > 0
    shed = answers.pop(("CANCELLED", ""), 0)
    assert call_outcomes(caplog, get) == answers
    assert sum(answers.values()) + shed == BURST
    assert counted["OK"] == answers[("OK", "")]
    assert counted["RESOURCE_EXHAUSTED"] == answers[("RESOURCE_EXHAUSTED", "OVERLOADED")]


# --- the reputation service's own bound ---------------------------------------------------------


async def test_the_reputation_service_refuses_past_its_limit_too(database_url, keys, sessions, as_user):
    """Its one admitted call waits on a session service that accepts connections and never answers;
    the next call is refused at once."""
    dialled = asyncio.Event()
    silent = await asyncio.start_server(lambda reader, writer: dialled.set(), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    app = reputation_api.create_server(
        reputation_config_for(database_url, keys, f"127.0.0.1:{port}", limits=Limits(max_concurrent_rpcs=1))
    )
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = reputation_pb2_grpc.ReputationServiceStub(channel)
            session_id, owner, _ = await paired(sessions, as_user)
            waiting = stub.ConfirmCompletion(
                rpb.ConfirmCompletionRequest(session_id=session_id), metadata=as_user(owner), timeout=5
            )
            # The admitted call is under way once it dials the session service.
            await asyncio.wait_for(dialled.wait(), 5)
            error = await expect_error(
                stub.GetReputation(rpb.GetReputationRequest(), metadata=as_user(owner)),
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "OVERLOADED",
            )
            assert error.domain == "interview.reputation"
            waiting.cancel()
    finally:
        await app.stop(grace=0)
        silent.close()
