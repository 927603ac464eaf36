"""The reputation rules' cases, as plain values: one table per rule of reputation_service/domain.py.
test_domain.py checks the Python rules against them, test_rule_parity.py their SQL twins
(reputation_service/sql/) against the same rows."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta, timezone

from reputation_service.domain import (
    ALL_TIME,
    AWARD,
    CAPPED_PAIR,
    CAPPED_USER,
    MONTH,
    WEEK,
    Caps,
    SessionFacts,
    Step,
)

PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE = timezone(timedelta(hours=-5))
WINDOW = timedelta(days=7)
FIRST = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# (caps, pair sessions today, the user's points today) -> reason
AWARD_REASONS = [
    # Under every cap: the point.
    (Caps(3, 20), 0, 0, AWARD),
    (Caps(3, 20), 2, 19, AWARD),
    # The pair's cap reached (or passed): capped by it.
    (Caps(3, 20), 3, 0, CAPPED_PAIR),
    (Caps(3, 20), 7, 0, CAPPED_PAIR),
    (Caps(1, 20), 1, 0, CAPPED_PAIR),
    # The user at (or past) the user cap.
    (Caps(3, 20), 0, 20, CAPPED_USER),
    (Caps(3, 20), 2, 25, CAPPED_USER),
    (Caps(3, 1), 0, 1, CAPPED_USER),
    # The pair's cap takes precedence over the user cap.
    (Caps(3, 20), 3, 20, CAPPED_PAIR),
    (Caps(1, 1), 1, 1, CAPPED_PAIR),
    # 0 turns a cap off.
    (Caps(0, 0), 1000, 1000, AWARD),
    (Caps(0, 20), 1000, 0, AWARD),
    (Caps(0, 20), 1000, 20, CAPPED_USER),
    (Caps(3, 0), 0, 1000, AWARD),
    (Caps(3, 0), 3, 1000, CAPPED_PAIR),
]
# Every combination of small limits and counts around them, for the twins to agree on.
CAP_GRID = [
    (Caps(pair_limit, user_limit), pair, points)
    for pair_limit, user_limit in itertools.product((0, 1, 2, 3), (0, 1, 2, 20))
    for pair, points in itertools.product((0, 1, 2, 3, 4), (0, 1, 2, 19, 20, 21))
]

# moment -> its UTC day
AWARD_DAYS = [
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
]

# (first confirmation, window, now) -> passed
WINDOW_EDGES = [
    (FIRST, WINDOW, FIRST, False),
    (FIRST, WINDOW, FIRST + WINDOW - timedelta(microseconds=1), False),
    (FIRST, WINDOW, FIRST + WINDOW, True),  # exactly at first + window: passed
    (FIRST, WINDOW, FIRST + WINDOW + timedelta(microseconds=1), True),
    (FIRST, WINDOW, FIRST + 2 * WINDOW, True),
    (FIRST, WINDOW, FIRST - timedelta(days=1), False),  # a clock behind the first confirmation
    # The same instant as FIRST + WINDOW, written at +02:00: instants, not wall clocks.
    (FIRST, WINDOW, (FIRST + WINDOW).astimezone(PLUS_TWO), True),
    (FIRST, WINDOW, (FIRST + WINDOW).astimezone(PLUS_TWO) - timedelta(microseconds=1), False),
    (FIRST, timedelta(seconds=2), FIRST + timedelta(seconds=2), True),
    # Never without a first confirmation.
    (None, WINDOW, FIRST + 100 * WINDOW, False),
    (None, timedelta(seconds=1), FIRST, False),
]

# (kind, moment) -> the first day of its period
PERIOD_STARTS = [
    # 2026-03-02 is a Monday.
    (WEEK, datetime(2026, 3, 2, 0, 0, tzinfo=UTC), date(2026, 3, 2)),
    (WEEK, datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 2, 23)),
    (WEEK, datetime(2026, 3, 8, 23, 59, 59, tzinfo=UTC), date(2026, 3, 2)),
    # Monday 01:00 at +02:00 is still Sunday in UTC.
    (WEEK, datetime(2026, 3, 2, 1, 0, tzinfo=PLUS_TWO), date(2026, 2, 23)),
    # Sunday 20:00 at -05:00 is Monday in UTC.
    (WEEK, datetime(2026, 3, 1, 20, 0, tzinfo=MINUS_FIVE), date(2026, 3, 2)),
    # An ISO week across the year's end: 2027-01-01 is a Friday.
    (WEEK, datetime(2027, 1, 1, 12, 0, tzinfo=UTC), date(2026, 12, 28)),
    (MONTH, datetime(2026, 3, 1, 0, 0, tzinfo=UTC), date(2026, 3, 1)),
    (MONTH, datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC), date(2026, 2, 1)),
    (MONTH, datetime(2026, 3, 1, 1, 0, tzinfo=PLUS_TWO), date(2026, 2, 1)),
    (MONTH, datetime(2028, 2, 29, 12, 0, tzinfo=UTC), date(2028, 2, 1)),
    (MONTH, datetime(2026, 12, 31, 20, 0, tzinfo=MINUS_FIVE), date(2027, 1, 1)),
    (ALL_TIME, datetime(2026, 3, 2, 12, 0, tzinfo=UTC), date(1970, 1, 1)),
    (ALL_TIME, datetime(1999, 12, 31, 23, 0, tzinfo=MINUS_FIVE), date(1970, 1, 1)),
]

OWNER = "11111111-1111-4111-8111-111111111111"
PARTNER = "22222222-2222-4222-8222-222222222222"
STRANGER = "33333333-3333-4333-8333-333333333333"
SESSION = SessionFacts("44444444-4444-4444-8444-444444444444", OWNER, PARTNER, "active")
LATER = FIRST + timedelta(hours=1)
PASSED = FIRST + WINDOW

# (caller, confirmed before, decided, closed, first confirmation, now) -> step
CONFIRMATION_STEPS = [
    # The first confirmation, by either participant.
    (OWNER, [], False, False, FIRST, FIRST, Step.RECORD),
    (PARTNER, [], False, False, FIRST, FIRST, Step.RECORD),
    # The partner's completes the pair, in either order.
    (PARTNER, [OWNER], False, False, FIRST, LATER, Step.DECIDE),
    (OWNER, [PARTNER], False, False, FIRST, LATER, Step.DECIDE),
    # A repeat of the only confirmation records nothing new.
    (OWNER, [OWNER], False, False, FIRST, LATER, Step.RECORD),
    # Once decided, repeats by either participant.
    (OWNER, [OWNER, PARTNER], True, False, FIRST, LATER, Step.RECORD),
    (PARTNER, [OWNER, PARTNER], True, False, FIRST, PASSED, Step.RECORD),
    # The window passed, nobody closed it yet: whoever confirms closes it.
    (PARTNER, [OWNER], False, False, FIRST, PASSED, Step.CLOSE),
    (OWNER, [OWNER], False, False, FIRST, PASSED + WINDOW, Step.CLOSE),
    # A microsecond before the window passes, the partner still decides.
    (PARTNER, [OWNER], False, False, FIRST, PASSED - timedelta(microseconds=1), Step.DECIDE),
    # Closed: nothing more happens, for either.
    (OWNER, [OWNER], False, True, FIRST, PASSED, Step.CLOSED),
    (PARTNER, [OWNER], False, True, FIRST, PASSED, Step.CLOSED),
    # A stranger writes nothing, whatever the session's state.
    (STRANGER, [], False, False, FIRST, FIRST, Step.REFUSE),
    (STRANGER, [OWNER], False, False, FIRST, PASSED, Step.REFUSE),
    (STRANGER, [OWNER, PARTNER], True, False, FIRST, LATER, Step.REFUSE),
    (STRANGER, [OWNER], False, True, FIRST, PASSED, Step.REFUSE),
]
