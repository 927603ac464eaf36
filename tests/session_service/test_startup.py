"""The session service as a process: graceful shutdown with a call in flight, and a busy port."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from tests.helpers import new_id, user_metadata, wait_for
from tests.servers import ServiceProcess


def _env(database_url: str, keys, **overrides: str) -> dict[str, str]:
    env = {
        **keys.env(),
        "SESSION_LISTEN": "127.0.0.1:0",
        "SESSION_METRICS_LISTEN": "127.0.0.1:0",
        "SESSION_DATABASE_URL": database_url,
    }
    env.update(overrides)
    return {key: value for key, value in env.items() if value != "<unset>"}


async def test_sigterm_lets_the_in_flight_call_finish_reports_not_serving_and_exits_zero(
    database_url, keys, db
):
    owner = new_id()
    env = _env(database_url, keys)
    server = await ServiceProcess("session_service", env).start()
    settings = keys.jwt
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await wait_for(
                lambda: _is_serving(health), within=15, what="the service process to report SERVING"
            )
            watch = health.Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            md = user_metadata(settings, owner)
            created = await stub.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=md)

            # Hold the session's row lock so PauseSession is still in flight when SIGTERM arrives.
            async with db.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT 1 FROM sessions.sessions WHERE session_id = $1 FOR UPDATE", created.session_id
                )
                pausing = asyncio.ensure_future(
                    stub.PauseSession(pb.PauseSessionRequest(session_id=created.session_id), metadata=md)
                )
                await wait_for(
                    lambda: _waiting_on_lock(db), within=10, what="PauseSession to wait on the row lock"
                )
                assert server.process is not None
                server.process.send_signal(signal.SIGTERM)
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            paused = await pausing
            assert paused.status == pb.SESSION_STATUS_PAUSED
        assert await server.wait() == 0
    finally:
        server.kill()


async def _is_serving(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.aio.AioRpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


async def _waiting_on_lock(db) -> bool:
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return waiting > 0


def test_a_second_server_on_a_busy_port_fails_instead_of_sharing_it(session_server, database_url, keys):
    result = subprocess.run(
        [sys.executable, "-m", "session_service"],
        env={
            "PATH": "/usr/bin:/bin",
            **_env(database_url, keys, SESSION_LISTEN=f"127.0.0.1:{session_server.port}"),
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
