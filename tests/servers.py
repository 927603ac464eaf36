"""Running a service for a test: in this process on a port of its own, or as its own process, as
`make run` and deployments do."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2_grpc

from common.app import AppServer
from common.migrations import migrate
from reputation_service import api as reputation_api
from reputation_service import config as reputation_config
from tests.conftest import new_database, sqlalchemy_url, start_session_server, wait_serving
from tests.helpers import StackKeys, wait_for


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
