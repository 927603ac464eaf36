"""The reputation schema's revisions go down as well as up: each downgrade restores what the
revision before it wrote (replaced functions from that revision's own text), and the way back up
lands on the same schema."""

import asyncio

from alembic import command

from common.db import _alembic_config
from tests.conftest import sqlalchemy_url
from tests.servers import own_database

FUNCTIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'reputation' ORDER BY 1
"""


async def shape(pool) -> tuple[list[str], list[str], bool]:
    functions = [r[0] for r in await pool.fetch(FUNCTIONS)]
    tables = [
        r[0]
        for r in await pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'reputation' ORDER BY 1"
        )
    ]
    traced = await pool.fetchval(
        "SELECT count(*) = 1 FROM information_schema.columns "
        "WHERE table_schema = 'reputation' AND table_name = 'outbox' AND column_name = 'traceparent'"
    )
    return functions, tables, traced


async def test_each_revision_downgrades_to_the_one_before_and_back(postgres_url):
    async with own_database(postgres_url, "revisions") as (url, pool):
        config = _alembic_config(sqlalchemy_url(url), "reputation_service")
        head = await shape(pool)
        assert head[2] and "leaderboard" in head[1]
        assert any(f.startswith("confirm(") and "p_traceparent" in f for f in head[0]), head[0]
        assert "mark_delivered(session_ids uuid[])" in head[0], head[0]

        await asyncio.to_thread(command.downgrade, config, "0005")
        functions, tables, traced = await shape(pool)
        assert not traced and "leaderboard" in tables
        confirm = next(f for f in functions if f.startswith("confirm("))
        assert "p_traceparent" not in confirm and confirm.count(",") == 9, confirm

        await asyncio.to_thread(command.downgrade, config, "0004")
        functions, tables, _ = await shape(pool)
        assert "leaderboard" not in tables and "ratings" not in tables
        assert (
            "post_events(p_session uuid, p_users uuid[], p_deltas integer[], p_reasons text[], p_note text)"
            in functions
        )
        # post_events as 0004 wrote it still works: it no longer touches the dropped boards.
        await pool.execute(
            "INSERT INTO reputation.paired_sessions "
            "(session_id, user_id, partner_user_id, last_known_status) "
            "VALUES ('00000000-0000-4000-8000-000000000001', gen_random_uuid(), gen_random_uuid(), 'active')"
        )
        written = await pool.fetch(
            "SELECT * FROM reputation.post_events('00000000-0000-4000-8000-000000000001', "
            "ARRAY[gen_random_uuid()], ARRAY[1], ARRAY['MUTUAL_CONFIRMATION'], '')"
        )
        assert len(written) == 1

        await asyncio.to_thread(command.downgrade, config, "0003")
        assert (await shape(pool))[0] == []

        await asyncio.to_thread(command.upgrade, config, "head")
        assert await shape(pool) == head
