"""The reputation rules, with no I/O: what a confirmation does (who may confirm, the window's
close, what a repeat records), who gets a point or which cap withholds it, the UTC award day, the
leaderboard periods, what a refused or closed session answers, how deliveries back off.

ConfirmCompletion decides in one statement, under the session's and the counters' locks
(`reputation_service/sql/confirm.sql`), so the rules it applies there have SQL twins, one file
each in `reputation_service/sql/`: `confirmation_step`, `award_reason`, `award_day`,
`window_passed` and `period_start`. tests/reputation_service/test_rule_parity.py feeds the same
table of cases to each function here and to its twin."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

from common.errors import FailedPrecondition, ServiceError
from common.errors import SessionNotFound as SessionNotFound  # re-exported: raised as domain.SessionNotFound

ACTIVE, PAUSED, COMPLETED = "active", "paused", "completed"
REVERSAL = "REVERSAL"
MAX_REVERSAL_NOTE = 500


class NotAPairedSession(FailedPrecondition):
    reason = "NOT_A_PAIRED_SESSION"

    def __init__(self, session_id: str) -> None:
        super().__init__("only paired sessions are confirmed; this one is solo", session_id=session_id)


class SessionAlreadyCompleted(FailedPrecondition):
    reason = "SESSION_ALREADY_COMPLETED"

    def __init__(self, session_id: str) -> None:
        super().__init__("the session was completed without mutual confirmation", session_id=session_id)


class ConfirmationWindowClosed(FailedPrecondition):
    reason = "CONFIRMATION_WINDOW_CLOSED"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            "the confirmation window closed with only your partner's confirmation; the session was "
            "completed without awards",
            session_id=session_id,
        )


class NotAwarded(FailedPrecondition):
    reason = "NOT_AWARDED"

    def __init__(self, session_id: str) -> None:
        super().__init__(
            "the session earned nobody a point; there is nothing to reverse", session_id=session_id
        )


@dataclass(frozen=True)
class Caps:
    """Caps against farming; 0 turns one off. `pair_daily`: sessions that earn an unordered pair
    of users points per UTC day; `user_daily`: points one user earns per UTC day."""

    pair_daily: int = 3
    user_daily: int = 20


AWARD = "MUTUAL_CONFIRMATION"
CAPPED_PAIR = "CAPPED_PAIR_DAILY_LIMIT"
CAPPED_USER = "CAPPED_USER_DAILY_LIMIT"


def award_reason(caps: Caps, pair_sessions: int, user_points: int) -> str:
    """The ledger reason of one participant's outcome: the point (MUTUAL_CONFIRMATION), or the cap
    that withholds it. The pair's cap comes first (it names the farming), then the user's daily
    points; a limit of 0 is no limit. `pair_sessions` and `user_points` are the day's counts so
    far, before this session."""
    if caps.pair_daily > 0 and pair_sessions >= caps.pair_daily:
        return CAPPED_PAIR
    if caps.user_daily > 0 and user_points >= caps.user_daily:
        return CAPPED_USER
    return AWARD


def award_day(at: datetime) -> date:
    """The UTC day an award made at `at` counts toward (for the caps)."""
    return at.astimezone(UTC).date()


def window_passed(first_confirm_time: datetime | None, window: timedelta, at: datetime) -> bool:
    """Whether a half-confirmed session's window had passed at `at`: from first + window on; never
    without a first confirmation."""
    return first_confirm_time is not None and first_confirm_time <= at - window


class Step(StrEnum):
    """What one participant's confirmation does, decided under the session row's lock."""

    REFUSE = "refuse"  # not a participant: nothing is written (the caller is told SESSION_NOT_FOUND)
    CLOSE = "close"  # the window passed with nobody closing it yet: closed now, as the sweeper would
    CLOSED = "closed"  # closed earlier: nothing is written
    RECORD = "record"  # the confirmation is recorded (a repeat records nothing new)
    DECIDE = "decide"  # recorded, and it completes the pair: the awards are decided now


def confirmation_step(
    session: SessionFacts,
    confirmed: Collection[str],
    caller: str,
    decided: bool,
    closed: bool,
    first_confirm_time: datetime | None,
    window: timedelta,
    now: datetime,
) -> Step:
    """What `caller`'s confirmation of `session` does, given who `confirmed` it before, whether
    its awards were `decided` or its window `closed`, and when it was first confirmed."""
    if not session.has_participant(caller):
        return Step.REFUSE
    if closed:
        return Step.CLOSED
    if not decided and window_passed(first_confirm_time, window, now):
        return Step.CLOSE
    if not decided and {session.user_id, session.partner_user_id} <= {*confirmed, caller}:
        return Step.DECIDE
    return Step.RECORD


def expire_time(first_confirm_time: datetime | None, window: timedelta, decided: bool) -> datetime | None:
    """When the window of a half-confirmed session closes; None once decided or not yet confirmed."""
    return None if decided or first_confirm_time is None else first_confirm_time + window


def closed_refusal(session_id: str, confirmed_user_ids: list[str], caller: str) -> ServiceError | None:
    """A session whose window closed: the one who had confirmed gets the closed state back on a
    repeat; the other is told the window closed."""
    return None if caller in confirmed_user_ids else ConfirmationWindowClosed(session_id)


def _text_problem(text: str, limit: int, required: bool) -> str | None:
    """What is wrong with a free text, if anything: its length counts code points; no NUL."""
    if not text:
        return "is required" if required else None
    if len(text) > limit:
        return f"must be at most {limit} characters"
    if "\x00" in text:
        return "must not contain NUL"
    return None


def reversal_note_problem(note: str) -> str | None:
    """What is wrong with a moderator's reason, if anything (1..500 code points, no NUL)."""
    return _text_problem(note, MAX_REVERSAL_NOTE, required=True)


@dataclass(frozen=True)
class SessionFacts:
    """A session as the session service describes it (or as this service stored it)."""

    session_id: str
    user_id: str
    partner_user_id: str | None
    status: str

    def has_participant(self, user_id: str) -> bool:
        return user_id in (self.user_id, self.partner_user_id)


def confirmation_refusal(session: SessionFacts, caller: str, known_locally: bool) -> ServiceError | None:
    """Why `caller` may not confirm (or read the confirmations of) `session`, if so.

    A session this service already holds confirmations for is never refused for its status:
    it was completed by the confirmations themselves, and repeats return the current state.
    """
    if not session.has_participant(caller):
        return SessionNotFound(session.session_id)
    if session.partner_user_id is None:
        return NotAPairedSession(session.session_id)
    if session.status == COMPLETED and not known_locally:
        return SessionAlreadyCompleted(session.session_id)
    return None


def retry_delay(attempts: int, max_delay: float) -> float:
    """Seconds before delivery attempt `attempts + 1`: doubling from half a second, capped."""
    return float(min(max_delay, 0.5 * 2 ** min(attempts, 16)))


# --- Ratings and leaderboards ---------------------------------------------------------------------

MIN_RATING, MAX_RATING = 1, 5
MAX_COMMENT = 2000
# LeaderboardPeriod's periods as the leaderboard table names them.
WEEK, MONTH, ALL_TIME = "week", "month", "all"
ALL_TIME_START = date(1970, 1, 1)


def period_start(kind: str, at: datetime) -> date:
    """The first day of the leaderboard period of `kind` that `at` falls in, in UTC: the ISO week's
    Monday, the month's first day, or 1970-01-01 for all time."""
    day = award_day(at)
    if kind == WEEK:
        return day - timedelta(days=day.weekday())
    if kind == MONTH:
        return day.replace(day=1)
    return ALL_TIME_START


class NotConfirmedYet(FailedPrecondition):
    reason = "NOT_CONFIRMED_YET"

    def __init__(self, session_id: str) -> None:
        super().__init__("a session is rated once both participants confirmed it", session_id=session_id)


class AlreadyRated(FailedPrecondition):
    reason = "ALREADY_RATED"

    def __init__(self, session_id: str) -> None:
        super().__init__("you already rated your partner in this session", session_id=session_id)


def rating_problem(rating: int) -> str | None:
    if not MIN_RATING <= rating <= MAX_RATING:
        return f"must be from {MIN_RATING} to {MAX_RATING}"
    return None


def comment_problem(comment: str) -> str | None:
    """What is wrong with a rating's comment (optional; at most 2000 code points, no NUL)."""
    return _text_problem(comment, MAX_COMMENT, required=False)


def rating_refusal(session_id: str, confirmed_user_ids: list[str]) -> ServiceError | None:
    """Why a participant may not rate the session yet, if so (both confirmations must be in)."""
    return None if len(confirmed_user_ids) == 2 else NotConfirmedYet(session_id)


def partner_of(session: SessionFacts, user_id: str) -> str:
    """The other participant of a paired session."""
    assert session.partner_user_id is not None
    return session.partner_user_id if user_id == session.user_id else session.user_id


def average_rating(count: int, total: int) -> float:
    return total / count if count else 0.0
