"""The floors' pools: a statement through them costs one round trip, as through the services' pool."""

from __future__ import annotations

from bench import sqlpaths


async def test_a_released_floor_connection_goes_back_without_a_reset_statement(database_url):
    pools = await sqlpaths.open_pools(database_url, database_url, 1, b"secret")
    try:
        seen: list[str] = []
        async with pools.sessions.acquire() as conn:
            conn.add_query_logger(lambda record: seen.append(record.query))
            assert await conn.fetchval("SELECT 1") == 1
        async with pools.sessions.acquire() as again:  # the pool's one connection, released before
            assert await again.fetchval("SELECT 2") == 2
        # The logger sits on that connection: it saw both statements, and nothing between them.
        assert seen == ["SELECT 1", "SELECT 2"]
    finally:
        await sqlpaths.close_pools(pools)
