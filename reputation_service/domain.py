"""Confirmation rules with no I/O: who may confirm, when awards happen, how retries back off."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import FailedPrecondition, ServiceError, SessionNotFound

ACTIVE, PAUSED, COMPLETED = "active", "paused", "completed"
AWARD_DELTA = 1
AWARD_REASON = "MUTUAL_CONFIRMATION"


class NotAPairedSession(FailedPrecondition):
    reason = "NOT_A_PAIRED_SESSION"

    def __init__(self, session_id: str) -> None:
        super().__init__("only paired sessions are confirmed; this one is solo", session_id=session_id)


class SessionAlreadyCompleted(FailedPrecondition):
    reason = "SESSION_ALREADY_COMPLETED"

    def __init__(self, session_id: str) -> None:
        super().__init__("the session was completed without mutual confirmation", session_id=session_id)


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
