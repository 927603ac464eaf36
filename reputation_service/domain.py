"""Confirmation rules with no I/O: who may confirm, when the confirmation window closes, what a
repeat returns, how retries back off.

Who gets a point or which cap withholds it, the award's UTC day and whether a window passed are
decided in the award statement itself, under the counters' locks, by the pure SQL functions of
migration 0004 (`reputation.award_reason`, `award_day`, `window_passed`), tested with plain values
like these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from common.errors import FailedPrecondition, ServiceError, SessionNotFound

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
