"""ListLeaderboard: boards per ISO week, UTC month and all time, kept in the ledger's transaction
(awards, reversals in the period of the award they reverse); score descending then user_id, rank
the 1-based position, scores <= 0 left out; keyset pages carrying the rank, page rules and forged
tokens; a board equals the sum of its period's events after concurrent awards and reversals; a
page at rank 900,000 of 1,000,000 is the same index range scan as the first."""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc

from common.fields import PageTokens
from reputation_service import store
from reputation_service.api import LEADERBOARD_CURSOR
from tests.helpers import (
    confirm,
    expect_invalid,
    leaderboard,
    mutually_confirmed,
    new_id,
    paired,
    service_metadata,
    stamp,
    walk,
)
from tests.servers import Stack, own_database, own_stack, reputation_config_for, running_reputation

DOMAIN = "interview.reputation"
WEEK, MONTH, ALL = (
    rpb.LEADERBOARD_PERIOD_WEEK,
    rpb.LEADERBOARD_PERIOD_MONTH,
    rpb.LEADERBOARD_PERIOD_ALL_TIME,
)
PLUS_TWO = timezone(timedelta(hours=2))


class Board:
    """A database of its own, a session service and a reputation service (caps off) on it."""

    def __init__(self, stack: Stack, reputation, moderation) -> None:
        self.stack, self.db, self.sessions = stack, stack.db, stack.sessions
        self.reputation, self.moderation = reputation, moderation

    async def clear(self) -> None:
        await self.db.execute("TRUNCATE reputation.leaderboard")

    async def seed(self, kind: str, scores: dict[str, int]) -> None:
        await self.db.executemany(
            "INSERT INTO reputation.leaderboard (kind, period_start, user_id, score) "
            "VALUES ($1, reputation.period_start($1, now()), $2, $3)",
            [(kind, user, score) for user, score in scores.items()],
        )


@pytest.fixture(scope="module")
async def board(postgres_url, keys) -> AsyncIterator[Board]:
    async with (
        own_database(postgres_url, "board") as (url, pool),
        own_stack(url, pool, keys) as stack,
    ):
        config = reputation_config_for(url, keys, f"127.0.0.1:{stack.session_app.port}")
        async with running_reputation(config) as (app, reputation):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                yield Board(stack, reputation, reputation_pb2_grpc.ReputationInternalServiceStub(channel))


async def everything(board: Board, md, period: int, page_size: int = 0) -> list[rpb.LeaderboardEntry]:
    pages = await walk(leaderboard, board.reputation, md, period, page_size=page_size)
    return [entry for page in pages for entry in page.entries]


async def award(board: Board, as_user, owner: str, partner: str) -> str:
    """A paired session of `owner` and `partner` on the board's stack, confirmed by both; its id."""
    session_id, _, _ = await mutually_confirmed(board.sessions, board.reputation, as_user, owner, partner)
    return session_id


# --- Periods, as plain values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "moment", "start"),
    [
        # An award at Sunday 23:59:59 UTC counts for that week; at Monday 00:00:00 for the next.
        ("week", datetime(2026, 11, 29, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 11, 23)),
        ("week", datetime(2026, 11, 30, 0, 0, 0, tzinfo=UTC), date(2026, 11, 30)),
        ("week", datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC), date(2026, 11, 30)),
        # 01:00 Monday at +02:00 is still Sunday in UTC.
        ("week", datetime(2026, 11, 30, 1, 0, tzinfo=PLUS_TWO), date(2026, 11, 23)),
        # ISO weeks cross years: 2027-01-01 is a Friday of the week from Monday 2026-12-28.
        ("week", datetime(2027, 1, 1, 12, 0, tzinfo=UTC), date(2026, 12, 28)),
        ("month", datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 11, 1)),
        ("month", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), date(2026, 12, 1)),
        ("month", datetime(2026, 12, 1, 1, 0, tzinfo=PLUS_TWO), date(2026, 11, 1)),
        ("month", datetime(2028, 2, 29, 12, 0, tzinfo=UTC), date(2028, 2, 1)),
        ("all", datetime(2026, 11, 30, 0, 0, tzinfo=UTC), date(1970, 1, 1)),
    ],
    ids=str,
)
async def test_period_start(db, kind, moment, start):
    async with db.acquire() as conn:
        await conn.execute("SET TIME ZONE 'Pacific/Auckland'")  # whatever the session's zone says
        try:
            assert await conn.fetchval("SELECT reputation.period_start($1, $2)", kind, moment) == start
        finally:
            await conn.execute("RESET TIME ZONE")


# --- Boards kept with the ledger --------------------------------------------------------------------


async def test_an_award_lands_on_the_week_month_and_all_time_boards(board, as_user):
    await board.clear()
    owner, partner = new_id(), new_id()
    await award(board, as_user, owner, partner)
    await award(board, as_user, owner, new_id())
    now = await board.db.fetchval("SELECT now()")
    for period, start in (
        (WEEK, await board.db.fetchval("SELECT reputation.period_start('week', now())")),
        (MONTH, await board.db.fetchval("SELECT reputation.period_start('month', now())")),
    ):
        page = await leaderboard(board.reputation, as_user(partner), period)
        assert stamp(page.period_start) == datetime.combine(start, datetime.min.time(), UTC)
        assert stamp(page.period_start) <= now
        assert [(e.rank, e.user_id, e.score) for e in page.entries][:1] == [(1, owner, 2)]
        assert {e.user_id: e.score for e in page.entries}[partner] == 1
    all_time = await leaderboard(board.reputation, as_user(partner), ALL)
    assert not all_time.HasField("period_start")
    assert [e.score for e in all_time.entries] == [2, 1, 1]


async def test_a_reversal_lowers_the_boards_of_the_awards_period(board, as_user, service_keys):
    await board.clear()
    owner, partner = new_id(), new_id()
    this_week = await award(board, as_user, owner, partner)
    earlier = await award(board, as_user, owner, partner)
    # As if `earlier` had been awarded at the end of last week: its events and board rows move there.
    sunday = await board.db.fetchval(
        "SELECT reputation.period_start('week', now())::timestamp AT TIME ZONE 'UTC' - interval '1 second'"
    )
    await board.db.execute(
        "UPDATE reputation.events SET create_time = $2 WHERE session_id = $1", earlier, sunday
    )
    await board.db.execute(
        "UPDATE reputation.leaderboard SET score = score - 1 "
        "WHERE kind <> 'all' AND user_id = ANY($1::uuid[])",
        [owner, partner],
    )
    await board.db.executemany(
        "INSERT INTO reputation.leaderboard (kind, period_start, user_id, score) "
        "VALUES ($1, reputation.period_start($1, $2), $3, 1) "
        "ON CONFLICT (kind, period_start, user_id) DO UPDATE SET score = leaderboard.score + 1",
        [(kind, sunday, user) for kind in ("week", "month") for user in (owner, partner)],
    )
    moderator = service_metadata(service_keys, roles=["reputation.moderate"], name="moderation")
    request = rpb.ReverseSessionAwardsRequest(session_id=earlier, reason="serial confirmations")
    await board.moderation.ReverseSessionAwards(request, metadata=moderator)

    week = await leaderboard(board.reputation, as_user(owner), WEEK)
    assert {e.user_id: e.score for e in week.entries} == {owner: 1, partner: 1}  # this week untouched
    last_week = await board.db.fetch(
        "SELECT user_id::text, score FROM reputation.leaderboard "
        "WHERE kind = 'week' AND period_start = reputation.period_start('week', $1)",
        sunday,
    )
    assert {r["user_id"]: r["score"] for r in last_week} == {owner: 0, partner: 0}
    all_time = await leaderboard(board.reputation, as_user(owner), ALL)
    assert {e.user_id: e.score for e in all_time.entries} == {owner: 1, partner: 1}
    assert this_week


async def test_the_boards_equal_the_sum_of_their_events_after_concurrent_awards_and_reversals(
    board, as_user, service_keys
):
    await board.clear()
    users = [new_id() for _ in range(8)]
    rng = random.Random(12)
    # 90 confirmations at once: within a connection's 100 concurrent streams.
    pairs = [tuple(rng.sample(users, 2)) for _ in range(30)]
    made = [await paired(board.sessions, as_user, owner, partner) for owner, partner in pairs]
    confirmations = [
        confirm(board.reputation, as_user(user), session_id)
        for session_id, owner, partner in made
        for user in (owner, partner, owner)
    ]
    rng.shuffle(confirmations)
    await asyncio.gather(*confirmations)
    moderator = service_metadata(service_keys, roles=["reputation.moderate"], name="moderation")
    reversed_ = [session_id for session_id, _, _ in rng.sample(made, 9)]
    await asyncio.gather(
        *(
            board.moderation.ReverseSessionAwards(
                rpb.ReverseSessionAwardsRequest(session_id=session_id, reason="farming"), metadata=moderator
            )
            for session_id in reversed_ + reversed_[:4]
        )
    )
    boards = await board.db.fetch(
        "SELECT kind, period_start, user_id::text, score FROM reputation.leaderboard WHERE score <> 0 "
        "ORDER BY 1, 2, 3"
    )
    sums = await board.db.fetch(
        """
        SELECT k.kind, reputation.period_start(k.kind, coalesce(a.create_time, e.create_time)),
               e.user_id::text, sum(e.delta) AS score
          FROM reputation.events e
          LEFT JOIN reputation.events a ON e.reason = 'REVERSAL' AND a.session_id = e.session_id
               AND a.user_id = e.user_id AND a.reason = 'MUTUAL_CONFIRMATION'
         CROSS JOIN unnest(ARRAY['week', 'month', 'all']) AS k(kind)
         WHERE e.user_id = ANY($1::uuid[])
         GROUP BY 1, 2, 3 HAVING sum(e.delta) <> 0 ORDER BY 1, 2, 3
        """,
        users,
    )
    assert [tuple(r) for r in boards] == [tuple(r) for r in sums]
    assert sum(r["score"] for r in boards if r["kind"] == "all") == 2 * (len(made) - len(reversed_))


# --- Ordering, ranks and pages ----------------------------------------------------------------------


async def test_ranks_run_on_across_pages_in_score_then_user_id_order(board, as_user):
    await board.clear()
    scores = {str(uuid.uuid4()): 1 + i % 7 for i in range(250)}
    left_out = {str(uuid.uuid4()): score for score in (0, -1, -5)}
    await board.seed("all", scores | left_out)

    entries = await everything(board, as_user(new_id()), ALL, page_size=17)

    assert [e.rank for e in entries] == list(range(1, 251))
    assert [(e.user_id, e.score) for e in entries] == sorted(scores.items(), key=lambda u: (-u[1], u[0]))


async def test_page_size_rules_periods_and_forged_tokens(board, as_user):
    await board.clear()
    await board.seed("week", {str(uuid.uuid4()): 1 + i for i in range(250)})
    me = as_user(new_id())
    assert len((await leaderboard(board.reputation, me, WEEK)).entries) == 50
    assert len((await leaderboard(board.reputation, me, WEEK, page_size=500)).entries) == 200
    assert not (await leaderboard(board.reputation, me, MONTH)).entries  # another board
    await expect_invalid(leaderboard(board.reputation, me, WEEK, page_size=-1), "page_size", domain=DOMAIN)
    await expect_invalid(
        leaderboard(board.reputation, me, rpb.LEADERBOARD_PERIOD_UNSPECIFIED), "period", domain=DOMAIN
    )
    await expect_invalid(leaderboard(board.reputation, me, 9), "period", domain=DOMAIN)
    await expect_invalid(
        leaderboard(board.reputation, me, WEEK, page_token="forged"), "page_token", domain=DOMAIN
    )
    token = (await leaderboard(board.reputation, me, WEEK, page_size=10)).next_page_token
    assert token
    # A token is for its caller and its period only.
    await expect_invalid(
        leaderboard(board.reputation, as_user(new_id()), WEEK, page_token=token), "page_token", domain=DOMAIN
    )
    await expect_invalid(
        leaderboard(board.reputation, me, MONTH, page_token=token), "page_token", domain=DOMAIN
    )
    second = await leaderboard(board.reputation, me, WEEK, page_size=10, page_token=token)
    assert [e.rank for e in second.entries] == list(range(11, 21))


# --- A million users ----------------------------------------------------------------------------------

MILLION = 1_000_000


@pytest.fixture(scope="module")
async def million(postgres_url) -> AsyncIterator[tuple[str, object]]:
    """A database of its own whose all-time board holds a million users (seeded directly)."""
    async with own_database(postgres_url, "million") as (url, pool):
        await pool.execute(
            """
            INSERT INTO reputation.leaderboard (kind, period_start, user_id, score)
            SELECT 'all', date '1970-01-01', md5('user' || i)::uuid, 1 + (i::bigint * 7919) % 5000
              FROM generate_series(1, $1) AS i
            """,
            MILLION,
        )
        await pool.execute("ANALYZE reputation.leaderboard")
        yield url, pool


async def at_rank(pool, rank: int, count: int = 1):
    return await pool.fetch(
        "SELECT score, user_id::text FROM reputation.leaderboard WHERE kind = 'all' AND score > 0 "
        "ORDER BY -score, user_id OFFSET $1 LIMIT $2",
        rank - 1,
        count,
    )


async def plan(pool, query: store.Query, params: dict) -> str:
    rows = await pool.fetch("EXPLAIN (ANALYZE, BUFFERS) " + query.sql, *query.args(params))
    return "\n".join(r[0] for r in rows)


async def test_a_page_at_rank_900000_of_a_million_is_the_same_index_range_scan_as_the_first(million):
    _, pool = million
    [last] = await at_rank(pool, 900_000)
    params = {"kind": "all", "period_start": None, "limit": 51}
    first = await plan(pool, store._BOARD_FIRST, params)
    deep = await plan(
        pool, store._BOARD_AFTER, {**params, "after_score": last["score"], "after_user": last["user_id"]}
    )
    for shown in (first, deep):
        assert "Index Scan using leaderboard_ranking" in shown, shown
        assert "Sort" not in shown, shown
        # The page reads one page's worth of the index, not the ranks before it.
        assert "rows=51.00 loops=1" in shown or "rows=51 loops=1" in shown, shown
    # The previous page's last entry bounds the scan itself (an index condition, not a filter).
    condition = deep.split("Index Cond: ", 1)[1].split("\n", 1)[0]
    assert "user_id" in condition and "score" in condition, deep


async def test_a_token_at_rank_900000_pages_on_with_the_ranks_that_follow(million, keys, as_user):
    url, pool = million
    user = new_id()
    [last] = await at_rank(pool, 900_000)
    # The service reads a token it signed: the test holds the same secret.
    cursor = [0, 900_000, last["score"], last["user_id"]]
    assert LEADERBOARD_CURSOR.fits(cursor)
    token = PageTokens(keys.page_token_secret).encode(f"leaderboard:{user}:all", cursor)
    config = reputation_config_for(url, keys, "127.0.0.1:1")
    async with running_reputation(config) as (_, reputation):
        page = await leaderboard(reputation, as_user(user), ALL, page_size=3, page_token=token)
        top = await leaderboard(reputation, as_user(user), ALL, page_size=2)
    following = await at_rank(pool, 900_001, 3)
    assert [(e.rank, e.user_id, e.score) for e in page.entries] == [
        (900_001 + i, r["user_id"], r["score"]) for i, r in enumerate(following)
    ]
    assert [e.rank for e in top.entries] == [1, 2]
    assert top.entries[0].score == 5000
