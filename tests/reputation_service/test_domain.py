"""The reputation rules as plain values, no I/O: what a confirmation does, the award and its caps,
the UTC award day, the window, the leaderboard periods, what a closed session answers, the
moderator's reason, who may confirm, how deliveries back off. The tables in rule_cases.py are the
ones test_rule_parity.py feeds to the rules' SQL twins."""

from datetime import UTC, datetime, timedelta

import pytest

from reputation_service import domain
from reputation_service.domain import Caps, SessionFacts
from tests.reputation_service import rule_cases

A, B, STRANGER = "user-a", "user-b", "stranger"
WINDOW = timedelta(days=7)
FIRST = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_the_default_caps_are_three_sessions_per_pair_and_twenty_points_per_user():
    assert Caps() == Caps(pair_daily=3, user_daily=20)


# --- What a confirmation does, and the award ------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "confirmed", "decided", "closed", "first", "now", "step"), rule_cases.CONFIRMATION_STEPS
)
def test_a_confirmation_records_decides_closes_or_is_refused(
    caller, confirmed, decided, closed, first, now, step
):
    session, window = rule_cases.SESSION, rule_cases.WINDOW
    assert domain.confirmation_step(session, confirmed, caller, decided, closed, first, window, now) is step


@pytest.mark.parametrize(("caps", "pair", "points", "reason"), rule_cases.AWARD_REASONS)
def test_a_participant_gets_the_point_unless_a_cap_withholds_it(caps, pair, points, reason):
    assert domain.award_reason(caps, pair, points) == reason


@pytest.mark.parametrize(("moment", "day"), rule_cases.AWARD_DAYS, ids=str)
def test_the_award_day_is_the_utc_date(moment, day):
    assert domain.award_day(moment) == day


@pytest.mark.parametrize(("kind", "moment", "start"), rule_cases.PERIOD_STARTS, ids=str)
def test_a_leaderboard_period_starts_on_the_iso_weeks_monday_the_months_first_or_1970(kind, moment, start):
    assert domain.period_start(kind, moment) == start


# --- The confirmation window ---------------------------------------------------------------------


@pytest.mark.parametrize(("first", "window", "now", "passed"), rule_cases.WINDOW_EDGES, ids=str)
def test_the_window_passes_at_the_first_confirmation_plus_the_window(first, window, now, passed):
    assert domain.window_passed(first, window, now) is passed


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
