"""The reputation schema: Alembic's revisions go down as well as up, and the server-side functions
and views are exactly the files of reputation_service/sql/, applied once however often `migrate`
runs."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import asyncpg
import pytest

from common import migrations
from common.migrations import SqlFileError, apply_sql, downgrade, migrate, sql_files
from tests.helpers import run_program
from tests.servers import new_database, own_database, sqlalchemy_url

SCHEMA = "reputation"
OBJECTS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name, p.xmin::text AS version
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
UNION ALL
SELECT c.relname, c.xmin::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relkind = 'v'
ORDER BY 1
"""
COLUMNS = """
SELECT table_name || '.' || column_name FROM information_schema.columns
 WHERE table_schema = $1 AND table_name IN (SELECT tablename FROM pg_tables WHERE schemaname = $1)
 ORDER BY 1
"""


async def objects(pool: asyncpg.Pool) -> dict[str, str]:
    """Every function and view of the schema, with the version (xmin) of its catalog row."""
    return {row["name"]: row["version"] for row in await pool.fetch(OBJECTS, SCHEMA)}


async def shape(pool: asyncpg.Pool) -> tuple[list[str], list[str]]:
    return sorted(await objects(pool)), [row[0] for row in await pool.fetch(COLUMNS, SCHEMA)]


async def test_each_revision_goes_down_to_0003_and_back_up_to_the_same_schema(postgres_url):
    async with own_database(postgres_url, "revisions") as (url, pool):
        head = await shape(pool)
        assert "outbox.traceparent" in head[1] and "leaderboard.score" in head[1]
        assert any(name.startswith("confirm(") and "p_traceparent" in name for name in head[0])

        await downgrade(sqlalchemy_url(url), "reputation_service", "0005")
        functions, columns = await shape(pool)
        assert functions == []  # the sql/ objects go first: the next migrate applies them again
        assert "outbox.traceparent" not in columns and "leaderboard.score" in columns

        await downgrade(sqlalchemy_url(url), "reputation_service", "0003")
        _, columns = await shape(pool)
        assert not any(column.startswith(("leaderboard.", "ratings.")) for column in columns)
        assert "paired_sessions.close_time" in columns

        await migrate(sqlalchemy_url(url), "reputation_service")
        assert await shape(pool) == head


async def test_the_database_runs_exactly_the_files_of_the_sql_folder(db):
    files = sql_files("reputation_service")
    assert {file.name for file in files} >= {"confirm", "confirmation_step", "award_reason", "post_events"}
    for file in files:
        if file.kind == "function":
            bodies = await db.fetch(
                "SELECT p.prosrc, obj_description(p.oid, 'pg_proc') AS mark FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = $2",
                SCHEMA,
                file.name,
            )
            assert [(row["prosrc"], row["mark"]) for row in bodies] == [(file.body, file.mark)], file.name
        else:
            view = f"{SCHEMA}.{file.name}"
            mark = await db.fetchval("SELECT obj_description($1::regclass, 'pg_class')", view)
            assert mark == file.mark, file.name


async def test_applying_the_files_again_changes_nothing(database_url, db):
    before = await objects(db)
    assert await apply_sql(database_url, SCHEMA, "reputation_service") == []
    await migrate(sqlalchemy_url(database_url), "reputation_service")
    assert await objects(db) == before  # not one catalog row rewritten


@pytest.fixture
def sql_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the service's sql/ folder as the package `scratch_sql`, to change files in."""
    package = tmp_path / "scratch_sql"
    shutil.copytree(Path(migrations.__file__).parents[1] / "reputation_service" / "sql", package / "sql")
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "scratch_sql", raising=False)
    return package / "sql"


async def test_a_changed_file_replaces_its_function_and_a_deleted_one_drops_it(postgres_url, sql_package):
    async with own_database(postgres_url, "sqlfiles") as (url, pool):
        (sql_package / "award_day.sql").write_text(
            "CREATE OR REPLACE FUNCTION reputation.award_day(at timestamptz) RETURNS date\n"
            "LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT date '2000-01-01' $$;\n"
        )
        (sql_package / "window_passed.sql").unlink()
        assert await apply_sql(url, SCHEMA, "scratch_sql") == ["award_day", "window_passed"]
        assert str(await pool.fetchval("SELECT reputation.award_day(now())")) == "2000-01-01"
        names = await objects(pool)
        assert not any(name.startswith("window_passed(") for name in names)
        assert await apply_sql(url, SCHEMA, "scratch_sql") == []


async def test_a_file_that_changes_its_functions_signature_is_refused_and_changes_nothing(
    postgres_url, sql_package
):
    async with own_database(postgres_url, "signature") as (url, pool):
        before = await objects(pool)
        (sql_package / "award_reason.sql").write_text(
            "CREATE OR REPLACE FUNCTION reputation.award_reason(pair_limit integer) RETURNS text\n"
            "LANGUAGE sql IMMUTABLE AS $$ SELECT 'MUTUAL_CONFIRMATION' $$;\n"
        )
        with pytest.raises(SqlFileError, match=r"award_reason\.sql changed the signature"):
            await apply_sql(url, SCHEMA, "scratch_sql")
        assert await objects(pool) == before


async def test_replicas_migrating_an_empty_database_at_once_apply_everything_once(postgres_url, db):
    # As replicas do: each its own process (Alembic's context is one per process).
    url = await new_database(postgres_url, "together")
    env = {**os.environ, "REPUTATION_DATABASE_URL": url}
    command = (sys.executable, "-m", "reputation_service", "migrate")
    done = await asyncio.gather(*(run_program(*command, within=60, env=env) for _ in range(3)))
    assert [run.returncode for run in done] == [0, 0, 0], [run.stderr[-500:] for run in done]
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        assert sorted(await objects(pool)) == sorted(await objects(db))
        assert await apply_sql(url, SCHEMA, "reputation_service") == []
    finally:
        await pool.close()
