"""A service's schema: Alembic for tables, indexes and data moves, then the service's server-side
functions and views from its `sql/` folder, one object per file.

Each file `<package>/sql/<name>.sql` holds one `CREATE OR REPLACE` of the object `<schema>.<name>`.
`migrate` applies them after the Alembic upgrade, in one transaction under the same advisory lock
as the migrations (replicas starting together apply them once): views first, since functions may
return their row type, then functions, each in file-name order. Every object applied is marked
with its file and the file's SHA-256 in its comment, so applying the same files again changes
nothing, and a file deleted from the folder drops its object. Only objects so marked are ever
dropped.

The rule that keeps a rolling update safe (README, "Changing the schema"): a file keeps its
object's signature; a new signature is a new file (`confirm_v2.sql`) beside the old one, and the
old file is deleted one release after no code calls it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

MARK = "sql/"
# A view's file starts with this (after its comments); any other file defines a function.
_VIEW = re.compile(r"^\s*CREATE\s+OR\s+REPLACE\s+VIEW\b", re.IGNORECASE | re.MULTILINE)
# A function's body as PostgreSQL keeps it (pg_proc.prosrc): the text between its dollar quotes.
_BODY = re.compile(r"\$\$(.*)\$\$", re.DOTALL)

_MANAGED = """
SELECT 'function' AS kind, p.proname AS name, p.oid::regprocedure::text AS identity,
       obj_description(p.oid, 'pg_proc') AS mark, p.prosrc AS body
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1 AND obj_description(p.oid, 'pg_proc') LIKE 'sql/%'
UNION ALL
SELECT 'view', c.relname, format('%I.%I', n.nspname, c.relname), obj_description(c.oid, 'pg_class'), NULL
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind = 'v' AND obj_description(c.oid, 'pg_class') LIKE 'sql/%'
"""
_OVERLOADS = """
SELECT p.oid::regprocedure::text AS identity, p.prosrc AS body
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = $1 AND p.proname = $2
"""


class SqlFileError(Exception):
    """A file in `sql/` that breaks the folder's rules (named in the message)."""


@dataclass(frozen=True)
class SqlFile:
    """One object's definition: its name (the file's stem), kind, text and the mark it leaves."""

    name: str
    kind: str  # "view" or "function"
    text: str

    @property
    def mark(self) -> str:
        return f"{MARK}{self.name}.sql sha256:{hashlib.sha256(self.text.encode()).hexdigest()}"

    @property
    def body(self) -> str | None:
        """A function's body, as pg_proc.prosrc will hold it."""
        found = _BODY.search(self.text)
        return found.group(1) if found else None


def sql_files(package: str) -> list[SqlFile]:
    """The package's `sql/*.sql`, in the order they are applied: views, then functions, by name."""
    folder = resources.files(package) / "sql"
    if not folder.is_dir():
        return []
    files = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".sql"):
            body = entry.read_text(encoding="utf-8")
            files.append(
                SqlFile(entry.name[: -len(".sql")], "view" if _VIEW.search(body) else "function", body)
            )
    return sorted(files, key=lambda file: (file.kind != "view", file.name))


async def apply_sql(dsn: str, schema: str, package: str) -> list[str]:
    """Creates or replaces every object of `package`'s sql/ folder in `schema` whose file changed,
    drops the marked objects whose file is gone; returns the names it created or dropped."""
    files = sql_files(package)
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", schema)
            # SQL-language bodies may name functions of files applied after theirs.
            await conn.execute("SET LOCAL check_function_bodies = off")
            marked = await conn.fetch(_MANAGED, schema)
            current = {row["mark"] for row in marked}
            changed = []
            for file in files:
                if file.mark in current:
                    continue
                await conn.execute(file.text)
                await _mark(conn, schema, file)
                changed.append(file.name)
            names = {file.name for file in files}
            # Functions first: one may return a view's row type.
            for row in sorted(marked, key=lambda row: row["kind"] != "function"):
                if row["name"] not in names:
                    await conn.execute(f"DROP {row['kind'].upper()} {row['identity']}")
                    changed.append(row["name"])
        return changed
    finally:
        await conn.close()


async def _mark(conn: asyncpg.Connection, schema: str, file: SqlFile) -> None:
    if file.kind == "view":
        await conn.execute(f'COMMENT ON VIEW "{schema}"."{file.name}" IS $${file.mark}$$')
        return
    overloads = await conn.fetch(_OVERLOADS, schema, file.name)
    defined = [row["identity"] for row in overloads if row["body"] == file.body]
    if len(defined) != 1:
        raise SqlFileError(f"{file.name}.sql must define exactly one function named {schema}.{file.name}")
    others = [
        row["identity"]
        for row in await conn.fetch(_MANAGED, schema)
        if row["name"] == file.name and row["identity"] != defined[0]
    ]
    if others:
        # CREATE OR REPLACE with another signature made a second function: old replicas would
        # keep calling the first, which no file defines any more.
        raise SqlFileError(
            f"{file.name}.sql changed the signature of {', '.join(others)}: "
            f"a new signature is a new file beside the old one"
        )
    await conn.execute(f"COMMENT ON FUNCTION {defined[0]} IS $${file.mark}$$")


async def drop_sql(dsn: str, schema: str) -> None:
    """Drops every object `apply_sql` made in `schema` (before a downgrade, whose older tables the
    views may not fit)."""
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", schema)
            for row in sorted(await conn.fetch(_MANAGED, schema), key=lambda row: row["kind"] != "function"):
                await conn.execute(f"DROP {row['kind'].upper()} {row['identity']}")
    finally:
        await conn.close()


def alembic_config(url: str, package: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _schema(package: str) -> str:
    """The schema a package's migrations own (`<package>.migrations.SCHEMA`)."""
    return str(importlib.import_module(f"{package}.migrations").SCHEMA)


def _dsn(url: str) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as the DSN asyncpg takes."""
    return "postgresql://" + url.split("://", 1)[1]


async def migrate(url: str, package: str) -> None:
    """Upgrades `package`'s schema to head (Alembic runs its own event loop, so in a thread), then
    applies its sql/ folder."""
    await asyncio.to_thread(command.upgrade, alembic_config(url, package), "head")
    await apply_sql(_dsn(url), _schema(package), package)


async def downgrade(url: str, package: str, revision: str) -> None:
    """Takes `package`'s schema down to `revision`: its sql/ objects dropped first (the next
    `migrate` applies them again)."""
    await drop_sql(_dsn(url), _schema(package))
    await asyncio.to_thread(command.downgrade, alembic_config(url, package), revision)


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
