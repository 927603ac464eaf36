"""The SQL twins of the rules (reputation_service/sql/, which the award statement decides with under
the counters' locks) answer every case of rule_cases.py as the Python rules of domain.py do."""

import pytest

from reputation_service import domain
from tests.reputation_service import rule_cases


@pytest.mark.parametrize(
    ("caller", "confirmed", "decided", "closed", "first", "now", "step"), rule_cases.CONFIRMATION_STEPS
)
async def test_confirmation_step(db, caller, confirmed, decided, closed, first, now, step):
    session, window = rule_cases.SESSION, rule_cases.WINDOW
    sql = await db.fetchval(
        "SELECT reputation.confirmation_step($1, $2, $3, $4::uuid[], $5, $6, $7, $8, $9)",
        caller,
        session.user_id,
        session.partner_user_id,
        confirmed,
        decided,
        closed,
        first,
        window.total_seconds(),
        now,
    )
    python = domain.confirmation_step(session, confirmed, caller, decided, closed, first, window, now)
    assert sql == python == step


@pytest.mark.parametrize(
    ("caps", "pair", "points"),
    [case[:3] for case in rule_cases.AWARD_REASONS] + rule_cases.CAP_GRID,
    ids=str,
)
async def test_award_reason(db, caps, pair, points):
    sql = await db.fetchval(
        "SELECT reputation.award_reason($1, $2, $3, $4)", caps.pair_daily, caps.user_daily, pair, points
    )
    assert sql == domain.award_reason(caps, pair, points)


@pytest.mark.parametrize(("moment", "day"), rule_cases.AWARD_DAYS, ids=str)
async def test_award_day_whatever_the_sessions_time_zone(db, moment, day):
    async with db.acquire() as conn:
        await conn.execute("SET TIME ZONE 'America/Los_Angeles'")
        try:
            assert await conn.fetchval("SELECT reputation.award_day($1)", moment) == day
        finally:
            await conn.execute("RESET TIME ZONE")
    assert domain.award_day(moment) == day


@pytest.mark.parametrize(("first", "window", "now", "passed"), rule_cases.WINDOW_EDGES, ids=str)
async def test_window_passed(db, first, window, now, passed):
    sql = await db.fetchval("SELECT reputation.window_passed($1, $2, $3)", first, window.total_seconds(), now)
    assert sql is domain.window_passed(first, window, now) is passed


@pytest.mark.parametrize(("kind", "moment", "start"), rule_cases.PERIOD_STARTS, ids=str)
async def test_period_start_whatever_the_sessions_time_zone(db, kind, moment, start):
    async with db.acquire() as conn:
        await conn.execute("SET TIME ZONE 'Pacific/Auckland'")
        try:
            assert await conn.fetchval("SELECT reputation.period_start($1, $2)", kind, moment) == start
        finally:
            await conn.execute("RESET TIME ZONE")
    assert domain.period_start(kind, moment) == start
