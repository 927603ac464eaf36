"""ListSessions and ListMessages read one page through an index, however many rows exist."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from session_service import store
from tests.helpers import new_id

OWNERS = 100
SESSIONS_PER_OWNER = 200
MESSAGES = 20_000


@pytest.fixture(scope="module")
async def crowded(db) -> tuple[str, str]:
    """20,000 sessions over 100 owners (half paired) and a session with 20,000 messages."""
    owner, session_id = new_id(), new_id()
    await db.execute(
        """
        INSERT INTO sessions.sessions (session_id, user_id, partner_user_id, job_posting_id, status)
        SELECT gen_random_uuid(), owners.id, CASE WHEN n % 2 = 0 THEN gen_random_uuid() END,
               gen_random_uuid(), (ARRAY['active', 'paused'])[1 + n % 2]
          FROM (SELECT CASE WHEN i = 0 THEN $1::uuid ELSE gen_random_uuid() END AS id
                  FROM generate_series(0, $2 - 1) AS i) AS owners,
               generate_series(1, $3) AS n
        """,
        owner,
        OWNERS,
        SESSIONS_PER_OWNER,
    )
    await db.execute(
        "INSERT INTO sessions.sessions "
        "(session_id, user_id, job_posting_id, status, current_question_number) "
        "VALUES ($1, $2, gen_random_uuid(), 'active', $3)",
        session_id,
        owner,
        MESSAGES,
    )
    await db.execute(
        """
        INSERT INTO sessions.messages (message_id, session_id, author_user_id, role, content, question_number)
        SELECT gen_random_uuid(), $1, $2, 'question', 'q' || n, n FROM generate_series(1, $3) AS n
        """,
        session_id,
        owner,
        MESSAGES,
    )
    await db.execute("ANALYZE sessions.sessions")
    await db.execute("ANALYZE sessions.messages")
    return owner, session_id


def _nodes(plan: dict) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def _plan(db, statement, params: dict) -> list[dict]:
    async with db.acquire() as conn:
        explained = await conn.fetchval(
            f"EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) {statement.sql}", *statement.args(params)
        )
    return _nodes(json.loads(explained)[0]["Plan"])


@pytest.mark.parametrize("with_status", [False, True])
@pytest.mark.parametrize("with_cursor", [False, True])
async def test_a_sessions_page_is_an_index_range_read_not_a_scan_or_sort(
    db, crowded, with_status, with_cursor
):
    owner, _ = crowded
    params = {
        "caller": owner,
        "status": "active",
        "limit": 51,
        "after_time": datetime.now(UTC),
        "after_id": new_id(),
    }
    nodes = await _plan(db, store._LIST_SESSIONS[(with_status, with_cursor)], params)
    kinds = {node["Node Type"] for node in nodes}
    assert "Seq Scan" not in kinds and "Sort" not in kinds and "Bitmap Heap Scan" not in kinds, kinds
    scanned = sum(node.get("Actual Rows", 0) for node in nodes if node["Node Type"].startswith("Index"))
    assert scanned <= 2 * 51


async def test_a_messages_page_reads_only_that_page(db, crowded):
    owner, session_id = crowded
    params = {"session_id": session_id, "caller": owner, "after": 10_000, "limit": 51}
    nodes = await _plan(db, store._MESSAGES, params)
    kinds = {node["Node Type"] for node in nodes}
    assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
    assert max(node.get("Actual Rows", 0) for node in nodes) <= 51


async def test_a_retakes_page_reads_only_that_page_of_a_long_chain(db):
    owner, root = new_id(), new_id()
    await db.execute(
        "INSERT INTO sessions.sessions (session_id, user_id, job_posting_id, status, complete_time) "
        "VALUES ($1, $2, gen_random_uuid(), 'completed', now())",
        root,
        owner,
    )
    await db.execute(
        """
        INSERT INTO sessions.sessions (session_id, user_id, job_posting_id, status, retake_number,
                                       original_session_id)
        SELECT gen_random_uuid(), $2, gen_random_uuid(), 'active', n, $1 FROM generate_series(2, 5000) AS n
        """,
        root,
        owner,
    )
    await db.execute("ANALYZE sessions.sessions")
    for after in (0, 2500, 4990):
        nodes = await _plan(db, store._CHAIN_PAGE, {"chain": root, "after": after, "limit": 51})
        # Near the chain's end the planner may fetch the few rows left by bitmap and sort them:
        # still only the page's rows are read, which is what O(page) means.
        assert "Seq Scan" not in {node["Node Type"] for node in nodes}
        assert max(node.get("Actual Rows", 0) for node in nodes) <= 51, (after, nodes)
