"""Shared fixtures and pytest hooks: one real PostgreSQL per test run, a fresh database, real
servers on port 0. The helpers they use live in tests/helpers.py and tests/servers.py; test code
imports from those, never from here."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2_grpc

from common.app import AppServer
from common.config import JwtSettings
from common.db import start_embedded, stop_embedded
from common.migrations import migrate
from reputation_service import api as reputation_api
from tests.helpers import EMITTED_REASONS, ServiceKeys, StackKeys, service_metadata, user_metadata
from tests.servers import (
    new_database,
    reputation_config_for,
    sqlalchemy_url,
    start_session_server,
    wait_serving,
)


def pytest_configure(config: pytest.Config) -> None:
    rpc_log = logging.getLogger("rpc")
    rpc_log.setLevel(logging.INFO)
    rpc_log.addHandler(EMITTED_REASONS)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--interop", action="store_true", help="run tests/interop (make interop-test)")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/interop needs toolchains `make test` does not install; `make interop-test` runs it."""
    if collection_path == Path(__file__).parent / "interop" and not config.getoption("interop"):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `after_all` judge what the whole run did, so they run last."""
    items.sort(key=lambda item: item.get_closest_marker("after_all") is not None)


@pytest.fixture(scope="session")
def whole_suite(request: pytest.FixtureRequest) -> bool:
    """True when this run collected every test (no -k, -m, or narrowed paths)."""
    config = request.config
    narrowed = (
        config.getoption("keyword") or config.getoption("markexpr") or config.getoption("lf", default=False)
    )
    everything = all(
        "::" not in arg and Path(config.rootpath, arg).resolve() == Path(config.rootpath, "tests").resolve()
        for arg in config.args
    )
    return everything and not narrowed and request.session.testscollected == len(request.session.items)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> StackKeys:
    return StackKeys(
        jwt=JwtSettings(
            algorithm="HS256", key=secrets.token_urlsafe(48), issuer="interview-dev", audience="interview"
        ),
        service=ServiceKeys.make(tmp_path_factory.mktemp("service-keys")),
        page_token_secret=secrets.token_urlsafe(48).encode(),
    )


@pytest.fixture(scope="session")
def jwt_settings(keys: StackKeys) -> JwtSettings:
    """How user tokens are signed and verified in this run."""
    return keys.jwt


@pytest.fixture(scope="session")
def service_keys(keys: StackKeys) -> ServiceKeys:
    return keys.service


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_DATABASE_URL if set (any PostgreSQL), else an embedded server for this run."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    data_dir = tmp_path_factory.mktemp("embedded")
    url = start_embedded(data_dir)
    try:
        yield url
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(postgres_url: str) -> str:
    """A database made for this run and migrated, so runs never see each other's rows."""
    url = await new_database(postgres_url, "test")
    await migrate(sqlalchemy_url(url), "session_service")
    await migrate(sqlalchemy_url(url), "reputation_service")
    return url


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A plain asyncpg pool for asserting on database state."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def session_server(database_url: str, keys: StackKeys) -> AsyncIterator[AppServer]:
    app = await start_session_server(database_url, keys, "127.0.0.1:0")
    yield app
    await app.stop(grace=1)


@pytest.fixture(scope="session")
async def session_channel(session_server: AppServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_server.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def sessions(session_channel: grpc.aio.Channel) -> sessions_pb2_grpc.SessionServiceStub:
    return sessions_pb2_grpc.SessionServiceStub(session_channel)


@pytest.fixture(scope="session")
def as_user(jwt_settings: JwtSettings) -> Callable[[str], tuple[tuple[str, str], ...]]:
    """Call metadata carrying a valid token for the given user id."""
    return lambda user_id: user_metadata(jwt_settings, user_id)


@pytest.fixture
def as_service(service_keys: ServiceKeys) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a service token with role sessions.internal, fresh for each test
    (service tokens live two minutes; the suite runs longer)."""
    return service_metadata(service_keys)


@pytest.fixture(scope="session")
def internal(session_channel: grpc.aio.Channel) -> sessions_pb2_grpc.SessionInternalServiceStub:
    return sessions_pb2_grpc.SessionInternalServiceStub(session_channel)


@pytest.fixture(scope="session")
async def reputation_server(
    database_url: str, keys: StackKeys, session_server: AppServer
) -> AsyncIterator[AppServer]:
    app = reputation_api.create_server(
        reputation_config_for(database_url, keys, f"127.0.0.1:{session_server.port}")
    )
    await app.start()
    await wait_serving(f"127.0.0.1:{app.port}")
    yield app
    await app.stop(grace=1)


@pytest.fixture(scope="session")
async def reputation(
    reputation_server: AppServer,
) -> AsyncIterator[reputation_pb2_grpc.ReputationServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reputation_server.port}") as channel:
        yield reputation_pb2_grpc.ReputationServiceStub(channel)
