"""Running a service for a test: in this process on a port of its own, or as its own process, as
`make run` and deployments do."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import grpc
from interview.reputation.v1 import reputation_pb2_grpc

from common.app import AppServer
from reputation_service import api as reputation_api
from reputation_service import config as reputation_config
from tests.conftest import wait_serving
from tests.helpers import wait_for


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
    """`python -m <package>` with the given environment; learns its port from the ready log line."""

    def __init__(self, package: str, env: Mapping[str, str]) -> None:
        self.package = package
        self.env = {**os.environ, **env}
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.log: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> ServiceProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", self.package, env=self.env, stderr=asyncio.subprocess.PIPE
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
