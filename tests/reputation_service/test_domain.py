"""The reputation rules as plain values, no I/O: who gets a point or which cap withholds it, the UTC
award day, the confirmation window, what a closed session answers, the moderator's reason, who may
confirm, how deliveries back off."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from reputation_service import domain
from reputation_service.domain import Caps, SessionFacts

A, B, STRANGER = "user-a", "user-b", "stranger"
AWARD, PAIR, USER = domain.AWARD_REASON, domain.CAPPED_PAIR, domain.CAPPED_USER
WINDOW = timedelta(days=7)
FIRST = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- award_decision ------------------------------------------------------------------------------


def test_the_default_caps_are_three_sessions_per_pair_and_twenty_points_per_user():
    assert Caps() == Caps(pair_daily=3, user_daily=20)


@pytest.mark.parametrize(
    ("caps", "pair_today", "points", "expected"),
    [
        # Under every cap: both get the point.
        (Caps(3, 20), 0, {A: 0, B: 0}, {A: AWARD, B: AWARD}),
        (Caps(3, 20), 2, {A: 19, B: 19}, {A: AWARD, B: AWARD}),
        # The pair's cap reached (or passed): both are capped by it.
        (Caps(3, 20), 3, {A: 0, B: 0}, {A: PAIR, B: PAIR}),
        (Caps(3, 20), 7, {A: 0, B: 0}, {A: PAIR, B: PAIR}),
        (Caps(1, 20), 1, {A: 0, B: 0}, {A: PAIR, B: PAIR}),
        # One user at (or past) the user cap: only that one is capped.
        (Caps(3, 20), 0, {A: 20, B: 0}, {A: USER, B: AWARD}),
        (Caps(3, 20), 2, {A: 3, B: 25}, {A: AWARD, B: USER}),
        (Caps(3, 20), 0, {A: 20, B: 20}, {A: USER, B: USER}),
        (Caps(3, 1), 0, {A: 1, B: 0}, {A: USER, B: AWARD}),
        # The pair's cap takes precedence over the user cap.
        (Caps(3, 20), 3, {A: 20, B: 0}, {A: PAIR, B: PAIR}),
        (Caps(3, 20), 3, {A: 20, B: 20}, {A: PAIR, B: PAIR}),
        # 0 turns a cap off.
        (Caps(0, 0), 1000, {A: 1000, B: 1000}, {A: AWARD, B: AWARD}),
        (Caps(0, 20), 1000, {A: 0, B: 0}, {A: AWARD, B: AWARD}),
        (Caps(0, 20), 1000, {A: 20, B: 0}, {A: USER, B: AWARD}),
        (Caps(3, 0), 0, {A: 1000, B: 1000}, {A: AWARD, B: AWARD}),
        (Caps(3, 0), 3, {A: 1000, B: 0}, {A: PAIR, B: PAIR}),
    ],
)
def test_award_decision(caps, pair_today, points, expected):
    assert domain.award_decision(caps, pair_today, points) == expected


def test_award_decision_names_every_participant_and_only_them():
    for caps, pair_today in [(Caps(3, 20), 0), (Caps(3, 20), 3), (Caps(0, 0), 0)]:
        decided = domain.award_decision(caps, pair_today, {B: 0, A: 5})
        assert set(decided) == {A, B}


def test_award_decision_does_not_change_its_arguments():
    points = {A: 20, B: 0}
    domain.award_decision(Caps(3, 20), 0, points)
    assert points == {A: 20, B: 0}


@pytest.mark.parametrize(
    ("reason", "delta"),
    [(AWARD, 1), (PAIR, 0), (USER, 0), (domain.PARTNER_DID_NOT_CONFIRM, 0)],
)
def test_delta_of(reason, delta):
    assert domain.delta_of(reason) == delta


# --- award_day -----------------------------------------------------------------------------------

PLUS_TWO = timezone(timedelta(hours=2))
MINUS_FIVE = timezone(timedelta(hours=-5))


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
def test_award_day_is_the_utc_date(moment, day):
    assert domain.award_day(moment) == day


# --- The confirmation window ---------------------------------------------------------------------


def test_expire_time_is_the_first_confirmation_plus_the_window_while_half_confirmed():
    assert domain.expire_time(FIRST, WINDOW, decided=False) == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert domain.expire_time(FIRST, timedelta(seconds=2), False) == FIRST + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("first", "decided"),
    [(FIRST, True), (None, False), (None, True)],
    ids=["decided", "not confirmed", "neither"],
)
def test_expire_time_is_none_once_decided_or_before_any_confirmation(first, decided):
    assert domain.expire_time(first, WINDOW, decided) is None


@pytest.mark.parametrize(
    ("now", "passed"),
    [
        (FIRST, False),
        (FIRST + WINDOW - timedelta(microseconds=1), False),
        (FIRST + WINDOW, True),  # exactly at first + window: passed
        (FIRST + WINDOW + timedelta(microseconds=1), True),
        (FIRST + 2 * WINDOW, True),
        (FIRST - timedelta(days=1), False),  # a clock behind the first confirmation
    ],
    ids=["at first", "1us before", "exactly", "1us after", "long after", "before first"],
)
def test_window_passed_edges(now, passed):
    assert domain.window_passed(FIRST, WINDOW, now) is passed


def test_window_passed_compares_instants_not_wall_clocks():
    # The same instant as FIRST + WINDOW, written at +02:00.
    now = (FIRST + WINDOW).astimezone(PLUS_TWO)
    assert domain.window_passed(FIRST, WINDOW, now) is True
    assert domain.window_passed(FIRST, WINDOW, now - timedelta(microseconds=1)) is False


def test_window_never_passes_without_a_first_confirmation():
    assert domain.window_passed(None, WINDOW, FIRST + 100 * WINDOW) is False
    assert domain.window_passed(None, timedelta(0), FIRST) is False


def test_the_confirmer_of_a_closed_session_gets_its_state_back():
    assert domain.closed_refusal("s1", [A], A) is None


@pytest.mark.parametrize("caller", [B, STRANGER])
def test_anyone_else_is_told_the_window_closed(caller):
    refusal = domain.closed_refusal("s1", [A], caller)

    assert isinstance(refusal, domain.ConfirmationWindowClosed)
    assert (refusal.code, refusal.reason) == ("FAILED_PRECONDITION", "CONFIRMATION_WINDOW_CLOSED")
    assert refusal.metadata == {"session_id": "s1"}


# --- The moderator's reason ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "note",
    [
        "x",
        "r" * 500,
        "\U0001f600" * 500,  # 500 code points, 2000 bytes in UTF-8
        "\u00e9" * 500,
        "e\u0301" * 250,  # 500 code points, 250 visible characters
        " ",
        "line one\nline two",
    ],
    ids=["one", "500", "500 emoji", "500 two-byte", "combining", "space", "newline"],
)
def test_a_good_reversal_note(note):
    assert domain.reversal_note_problem(note) is None


@pytest.mark.parametrize(
    "note",
    ["", "r" * 501, "\U0001f600" * 501, "\x00", "before\x00after", "r" * 499 + "\x00"],
    ids=["empty", "501", "501 emoji", "NUL", "NUL inside", "NUL at 500"],
)
def test_a_bad_reversal_note(note):
    problem = domain.reversal_note_problem(note)
    assert isinstance(problem, str) and problem


def test_the_note_limit_is_500():
    assert domain.MAX_REVERSAL_NOTE == 500


# --- Who may confirm -----------------------------------------------------------------------------


def _session(status, partner=B):
    return SessionFacts("s1", A, partner, status)


@pytest.mark.parametrize(
    ("session", "caller", "known", "expected"),
    [
        (_session(domain.ACTIVE), STRANGER, False, domain.SessionNotFound),
        (_session(domain.ACTIVE), STRANGER, True, domain.SessionNotFound),
        # A stranger to a solo session: not found, not "not paired" (existence is never leaked).
        (_session(domain.ACTIVE, None), STRANGER, False, domain.SessionNotFound),
        (_session(domain.ACTIVE, None), A, False, domain.NotAPairedSession),
        (_session(domain.COMPLETED, None), A, False, domain.NotAPairedSession),
        (_session(domain.COMPLETED), A, False, domain.SessionAlreadyCompleted),
        (_session(domain.COMPLETED), B, False, domain.SessionAlreadyCompleted),
    ],
)
def test_a_refused_confirmation_is_explained_by_the_first_failing_check(session, caller, known, expected):
    refusal = domain.confirmation_refusal(session, caller, known)
    assert type(refusal) is expected
    assert refusal.metadata == {"session_id": "s1"}


@pytest.mark.parametrize(
    ("status", "known"),
    [
        (domain.ACTIVE, False),
        (domain.PAUSED, False),
        (domain.ACTIVE, True),
        (domain.COMPLETED, True),  # completed by its confirmations: repeats answer
    ],
)
@pytest.mark.parametrize("caller", [A, B])
def test_a_participant_may_confirm(status, known, caller):
    assert domain.confirmation_refusal(_session(status), caller, known) is None


# --- Retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (1000, 10.0)],
)
def test_retry_delay_doubles_from_half_a_second_up_to_the_cap(attempts, delay):
    assert domain.retry_delay(attempts, 10.0) == delay


def test_retry_delay_never_exceeds_a_small_cap():
    assert domain.retry_delay(0, 0.1) == 0.1
    assert all(isinstance(domain.retry_delay(n, 0.5), float) for n in range(100))
