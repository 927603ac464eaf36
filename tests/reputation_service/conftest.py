"""Fixtures for the reputation tests that need a database of their own: no other test's relay or
sweeper reaches its rows, so every count is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.servers import Stack, own_database, own_stack


@pytest.fixture
async def database(
    request: pytest.FixtureRequest, postgres_url: str
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A migrated database named after the test module, and a pool on it."""
    async with own_database(postgres_url, request.module.__name__.rpartition(".")[2]) as made:
        yield made


@pytest.fixture
async def stack(database: tuple[str, asyncpg.Pool], keys) -> AsyncIterator[Stack]:
    """A session service on that database."""
    async with own_stack(*database, keys) as ready:
        yield ready
