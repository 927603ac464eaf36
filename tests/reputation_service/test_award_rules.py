"""The award's rules as plain values: `reputation.award_reason`, `award_day` and `window_passed`,
the pure SQL functions the award statement decides with under the counters' locks."""

from datetime import UTC, date, datetime, timedelta, timezone

import asyncpg
import pytest

AWARD, PAIR, USER = "MUTUAL_CONFIRMATION", "CAPPED_PAIR_DAILY_LIMIT", "CAPPED_USER_DAILY_LIMIT"
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE = timezone(timedelta(hours=-5))
WINDOW = timedelta(days=7)
FIRST = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def award_reason(db: asyncpg.Pool, pair_limit: int, user_limit: int, pair: int, points: int) -> str:
    return await db.fetchval(
        "SELECT reputation.award_reason($1, $2, $3, $4)", pair_limit, user_limit, pair, points
    )


@pytest.mark.parametrize(
    ("limits", "pair_today", "points", "expected"),
    [
        # Under every cap: the point.
        ((3, 20), 0, 0, AWARD),
        ((3, 20), 2, 19, AWARD),
        # The pair's cap reached (or passed): capped by it.
        ((3, 20), 3, 0, PAIR),
        ((3, 20), 7, 0, PAIR),
        ((1, 20), 1, 0, PAIR),
        # The user at (or past) the user cap.
        ((3, 20), 0, 20, USER),
        ((3, 20), 2, 25, USER),
        ((3, 1), 0, 1, USER),
        # The pair's cap takes precedence over the user cap.
        ((3, 20), 3, 20, PAIR),
        # 0 turns a cap off.
        ((0, 0), 1000, 1000, AWARD),
        ((0, 20), 1000, 0, AWARD),
        ((0, 20), 1000, 20, USER),
        ((3, 0), 0, 1000, AWARD),
        ((3, 0), 3, 1000, PAIR),
    ],
)
async def test_award_reason(db, limits, pair_today, points, expected):
    assert await award_reason(db, *limits, pair_today, points) == expected


@pytest.mark.parametrize(
    ("moment", "day"),
    [
        (datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 3, 1)),
        (datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC), date(2026, 3, 2)),
        (datetime(2026, 3, 2, 0, 0, 0, 1, tzinfo=UTC), date(2026, 3, 2)),
        # 01:00 at +02:00 is 23:00 UTC the day before.
        (datetime(2026, 3, 2, 1, 0, tzinfo=PLUS_TWO), date(2026, 3, 1)),
        (datetime(2026, 3, 2, 1, 59, 59, 999999, tzinfo=PLUS_TWO), date(2026, 3, 1)),
        (datetime(2026, 3, 2, 2, 0, tzinfo=PLUS_TWO), date(2026, 3, 2)),
        # 20:00 at -05:00 is 01:00 UTC the day after.
        (datetime(2026, 3, 1, 20, 0, tzinfo=MINUS_FIVE), date(2026, 3, 2)),
        (datetime(2026, 3, 1, 18, 59, 59, tzinfo=MINUS_FIVE), date(2026, 3, 1)),
        # Year and leap-day boundaries.
        (datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 12, 31)),
        (datetime(2027, 1, 1, 1, 30, tzinfo=PLUS_TWO), date(2026, 12, 31)),
        (datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC), date(2028, 2, 29)),
        (datetime(2028, 3, 1, 0, 0, tzinfo=UTC), date(2028, 3, 1)),
    ],
    ids=str,
)
async def test_award_day_is_the_utc_date(db, moment, day):
    # Whatever the session's own time zone says.
    async with db.acquire() as conn:
        await conn.execute("SET TIME ZONE 'America/Los_Angeles'")
        try:
            assert await conn.fetchval("SELECT reputation.award_day($1)", moment) == day
        finally:
            await conn.execute("RESET TIME ZONE")


async def window_passed(db: asyncpg.Pool, first: datetime | None, window: timedelta, now: datetime) -> bool:
    return await db.fetchval(
        "SELECT reputation.window_passed($1, $2, $3)", first, window.total_seconds(), now
    )


@pytest.mark.parametrize(
    ("now", "passed"),
    [
        (FIRST, False),
        (FIRST + WINDOW - timedelta(microseconds=1), False),
        (FIRST + WINDOW, True),  # exactly at first + window: passed
        (FIRST + WINDOW + timedelta(microseconds=1), True),
        (FIRST + 2 * WINDOW, True),
        (FIRST - timedelta(days=1), False),  # a clock behind the first confirmation
        # The same instant as FIRST + WINDOW, written at +02:00: instants, not wall clocks.
        ((FIRST + WINDOW).astimezone(PLUS_TWO), True),
        ((FIRST + WINDOW).astimezone(PLUS_TWO) - timedelta(microseconds=1), False),
    ],
    ids=["at first", "1us before", "exactly", "1us after", "long after", "before first", "+02", "+02 early"],
)
async def test_window_passed_edges(db, now, passed):
    assert await window_passed(db, FIRST, WINDOW, now) is passed


async def test_window_never_passes_without_a_first_confirmation(db):
    assert await window_passed(db, None, WINDOW, FIRST + 100 * WINDOW) is False
    assert await window_passed(db, None, timedelta(0), FIRST) is False
