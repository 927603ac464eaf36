"""Running a service for a test: its databases (made and migrated), its configuration, waiting for
it to serve, and the server itself, in this process on a port of its own or as its own process, as
`make run` and deployments do."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2_grpc

from common.app import AppServer
from common.migrations import migrate
from reputation_service import api as reputation_api
from reputation_service import config as reputation_config
from session_service import api as session_api
from session_service import config as session_config
from tests.helpers import StackKeys, wait_for


async def new_database(postgres_url: str, prefix: str) -> str:
    """Creates an empty database on the server at `postgres_url`; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, query = postgres_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def sqlalchemy_url(url: str) -> str:
    """A postgresql:// URL as the services' configuration takes it (SQLAlchemy with asyncpg)."""
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


async def wait_serving(target: str, credentials: grpc.ChannelCredentials | None = None) -> None:
    """Waits until the server at `target` reports SERVING on its health service: over TLS with
    `credentials` when they are given, else in plaintext."""
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        over = "" if credentials is None else " over TLS"
        await wait_for(serving, within=15, what=f"{target} to report SERVING{over}")


def session_config_for(
    database_url: str, keys: StackKeys, listen: str = "127.0.0.1:0", **overrides: Any
) -> session_config.Config:
    """A session service configured for tests on the database at `database_url`, with `keys`;
    `overrides` replace any setting."""
    settings: dict[str, Any] = {
        "listen": listen,
        "database_url": sqlalchemy_url(database_url),
        "jwt": keys.jwt,
        "service_jwks_file": keys.service.jwks_file,
        "page_token_secret": keys.page_token_secret,
        "pool_size": 10,
        "metrics_listen": "127.0.0.1:0",
    }
    return session_config.Config(**{**settings, **overrides})


async def start_session_server(
    database_url: str, keys: StackKeys, listen: str = "127.0.0.1:0", **overrides: Any
) -> AppServer:
    """A session server (session_config_for with `overrides`), started and serving; the caller
    stops it."""
    app = session_api.create_server(session_config_for(database_url, keys, listen, **overrides))
    await app.start()
    await wait_serving(f"127.0.0.1:{app.port}")
    return app


def reputation_config_for(
    database_url: str, keys: StackKeys, session_target: str, **overrides: Any
) -> reputation_config.Config:
    """A reputation service configured for tests: a fast relay with short leases and backoff."""
    settings: dict[str, Any] = {
        # Caps off: most tests award one user many points in a day; the cap tests turn them on.
        "pair_daily_award_limit": 0,
        "user_daily_award_limit": 0,
        "relay_interval": 0.1,
        "outbox_lease": 2.0,
        "relay_max_backoff": 0.5,
        "session_service_timeout": 2.0,
    }
    settings.update(overrides)
    return reputation_config.Config(
        listen="127.0.0.1:0",
        database_url=sqlalchemy_url(database_url),
        jwt=keys.jwt,
        session_service_target=session_target,
        signing=keys.service.reputation,
        page_token_secret=keys.page_token_secret,
        service_jwks_file=keys.service.jwks_file,
        pool_size=10,
        metrics_listen="127.0.0.1:0",
        **settings,
    )


@asynccontextmanager
async def running_reputation(
    config: reputation_config.Config,
) -> AsyncIterator[tuple[AppServer, reputation_pb2_grpc.ReputationServiceStub]]:
    """A reputation server of the test's own, serving, and a stub on it; stopped on the way out."""
    app = reputation_api.create_server(config)
    await app.start()
    try:
        await wait_serving(f"127.0.0.1:{app.port}")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            yield app, reputation_pb2_grpc.ReputationServiceStub(channel)
    finally:
        await app.stop(grace=1)


class ServiceProcess:
    """`python -m <package>` with the given environment (from `cwd`, which `python -m` puts first
    on sys.path); learns its port from the ready log line."""

    def __init__(self, package: str, env: Mapping[str, str], cwd: str | None = None) -> None:
        self.package = package
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> ServiceProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.package, env=self.env, cwd=self.cwd, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read())

        async def listening() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                raise AssertionError(f"{self.package} exited: {self.log[-5:]}")
            return self.port != 0

        await wait_for(listening, within=20, what=f"{self.package} to listen")
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "listening":
                self.port = int(event["port"])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait(self, within: float = 30) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), within)
        if self._reader is not None:
            await self._reader
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()


@asynccontextmanager
async def own_database(postgres_url: str, prefix: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A migrated database of the test's own (no other test's relay or sweeper reaches its rows),
    and a pool on it; dropped afterwards."""
    url = await new_database(postgres_url, prefix)
    for package in ("session_service", "reputation_service"):
        await migrate(sqlalchemy_url(url), package)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield url, pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE "{url.partition("?")[0].rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass
class Stack:
    """A database of the test's own, with a session service on it."""

    url: str
    db: asyncpg.Pool
    session_app: AppServer
    sessions: sessions_pb2_grpc.SessionServiceStub

    @property
    def session_target(self) -> str:
        return f"127.0.0.1:{self.session_app.port}"


@asynccontextmanager
async def own_stack(url: str, pool: asyncpg.Pool, keys: StackKeys) -> AsyncIterator[Stack]:
    """A session service on the database at `url`, and a stub to it."""
    session_app = await start_session_server(url, keys, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{session_app.port}") as channel:
            yield Stack(url, pool, session_app, sessions_pb2_grpc.SessionServiceStub(channel))
    finally:
        await session_app.stop(grace=1)
