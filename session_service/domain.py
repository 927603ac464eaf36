"""Session rules with no I/O: statuses, transitions, and which error explains a refusal."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import FailedPrecondition, PermissionDenied, ServiceError
from common.errors import SessionNotFound as SessionNotFound  # re-exported: raised as domain.SessionNotFound

ACTIVE, PAUSED, COMPLETED = "active", "paused", "completed"
QUESTION, ANSWER = "question", "answer"
MAX_CONTENT_CHARS = 16384


class _SessionPrecondition(FailedPrecondition):
    text = ""

    def __init__(self, session_id: str) -> None:
        super().__init__(self.text, session_id=session_id)


class SessionAlreadyCompleted(_SessionPrecondition):
    reason = "SESSION_ALREADY_COMPLETED"
    text = "the session is completed; completed sessions cannot change"


class SessionNotCompleted(_SessionPrecondition):
    reason = "SESSION_NOT_COMPLETED"
    text = "only a completed session can be retaken"


class SessionNotActive(_SessionPrecondition):
    reason = "SESSION_NOT_ACTIVE"
    text = "the session is paused; resume it first"


class SessionNotPaused(_SessionPrecondition):
    reason = "SESSION_NOT_PAUSED"
    text = "the session is not paused"


class MissingJobPosting(_SessionPrecondition):
    reason = "MISSING_JOB_POSTING"
    text = "the session's job posting was released, so it cannot be retaken"


class MutualConfirmationRequired(_SessionPrecondition):
    reason = "MUTUAL_CONFIRMATION_REQUIRED"
    text = "a paired session completes when both participants confirm it (ConfirmCompletion)"


class NotAPairedSession(_SessionPrecondition):
    reason = "NOT_A_PAIRED_SESSION"
    text = "the session is a solo session"


class NoOpenQuestion(_SessionPrecondition):
    reason = "NO_OPEN_QUESTION"
    text = "an answer needs a question asked first"


class NotOwner(PermissionDenied):
    def __init__(self, session_id: str, action: str) -> None:
        super().__init__(f"only the session's owner may {action} it", session_id=session_id)


@dataclass(frozen=True)
class SessionFacts:
    """What the rules need to know about a stored session."""

    session_id: str
    user_id: str
    partner_user_id: str | None
    status: str
    job_posting_id: str | None
    current_question_number: int

    def visible_to(self, caller: str | None) -> bool:
        """Participants see a session; caller None is a trusted service and sees all."""
        return caller is None or caller in (self.user_id, self.partner_user_id)


@dataclass(frozen=True)
class Transition:
    """A status change: allowed sources, the target, and who may ask for it."""

    action: str
    sources: frozenset[str]
    target: str
    owner_only: bool = False
    solo_only: bool = False
    paired_only: bool = False
    # Asking again for a session already in `target` returns it unchanged.
    idempotent: bool = False


PAUSE = Transition("pause", frozenset({ACTIVE}), PAUSED)
RESUME = Transition("resume", frozenset({PAUSED}), ACTIVE)
COMPLETE = Transition("complete", frozenset({ACTIVE, PAUSED}), COMPLETED, owner_only=True, solo_only=True)
COMPLETE_PAIRED = Transition(
    "complete", frozenset({ACTIVE, PAUSED}), COMPLETED, paired_only=True, idempotent=True
)


def transition_refusal(
    transition: Transition, session: SessionFacts | None, session_id: str, caller: str | None
) -> ServiceError | None:
    """Why the conditional update for `transition` matched nothing.

    Checks run in the contract's order: visibility, permission, then state. None means nothing
    forbids it any more (an idempotent repeat, or the state moved since the update ran).
    """
    if session is None or not session.visible_to(caller):
        return SessionNotFound(session_id)
    if transition.solo_only and session.partner_user_id is not None:
        return MutualConfirmationRequired(session_id)
    if transition.paired_only and session.partner_user_id is None:
        return NotAPairedSession(session_id)
    if transition.owner_only and caller != session.user_id:
        return NotOwner(session_id, transition.action)
    if session.status == transition.target and transition.idempotent:
        return None
    if session.status == COMPLETED:
        return SessionAlreadyCompleted(session_id)
    if session.status not in transition.sources:
        return SessionNotActive(session_id) if session.status == PAUSED else SessionNotPaused(session_id)
    return None


def retake_refusal(session: SessionFacts | None, session_id: str, caller: str) -> ServiceError | None:
    """Why a retake of `session` by `caller` is refused, if it is."""
    if session is None or not session.visible_to(caller):
        return SessionNotFound(session_id)
    if caller != session.user_id:
        return NotOwner(session_id, "retake")
    if session.status != COMPLETED:
        return SessionNotCompleted(session_id)
    if session.job_posting_id is None:
        return MissingJobPosting(session_id)
    return None


def append_refusal(
    session: SessionFacts | None, session_id: str, caller: str, role: str
) -> ServiceError | None:
    """Why appending a `role` message to `session` is refused, if it is."""
    if session is None or not session.visible_to(caller):
        return SessionNotFound(session_id)
    if session.status == COMPLETED:
        return SessionAlreadyCompleted(session_id)
    if session.status == PAUSED:
        return SessionNotActive(session_id)
    if role == ANSWER and session.current_question_number == 0:
        return NoOpenQuestion(session_id)
    return None


def content_problem(content: str) -> str | None:
    """What is wrong with a message's content; length counts Unicode code points."""
    if not content:
        return "must not be empty"
    if len(content) > MAX_CONTENT_CHARS:
        return f"must be at most {MAX_CONTENT_CHARS} characters"
    if "\x00" in content:
        return "must not contain NUL characters"
    return None
