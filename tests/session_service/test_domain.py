"""The session rules as plain values: which refusal explains a failed transition."""

import pytest

from session_service import domain
from session_service.domain import SessionFacts

OWNER, PARTNER, STRANGER = "owner", "partner", "stranger"


def _session(status: str, partner: str | None = None, question: int = 0, posting: str | None = "job"):
    return SessionFacts("s1", OWNER, partner, status, posting, question)


@pytest.mark.parametrize(
    ("transition", "session", "caller", "expected"),
    [
        (domain.PAUSE, None, OWNER, domain.SessionNotFound),
        (domain.PAUSE, _session(domain.ACTIVE), STRANGER, domain.SessionNotFound),
        (domain.PAUSE, _session(domain.PAUSED), OWNER, domain.SessionNotActive),
        (domain.PAUSE, _session(domain.COMPLETED), OWNER, domain.SessionAlreadyCompleted),
        (domain.RESUME, _session(domain.ACTIVE), OWNER, domain.SessionNotPaused),
        (domain.RESUME, _session(domain.COMPLETED, PARTNER), PARTNER, domain.SessionAlreadyCompleted),
        (domain.COMPLETE, _session(domain.ACTIVE, PARTNER), OWNER, domain.MutualConfirmationRequired),
        (domain.COMPLETE, _session(domain.ACTIVE, PARTNER), PARTNER, domain.MutualConfirmationRequired),
        (domain.COMPLETE, _session(domain.COMPLETED), OWNER, domain.SessionAlreadyCompleted),
        (domain.COMPLETE_PAIRED, _session(domain.ACTIVE), None, domain.NotAPairedSession),
    ],
)
def test_a_refused_transition_is_explained_by_the_first_failing_check(transition, session, caller, expected):
    refusal = domain.transition_refusal(transition, session, "s1", caller)
    assert type(refusal) is expected
    assert refusal.metadata == {"session_id": "s1"}


def test_completing_a_completed_paired_session_again_is_not_refused():
    assert (
        domain.transition_refusal(domain.COMPLETE_PAIRED, _session(domain.COMPLETED, PARTNER), "s1", None)
        is None
    )


def test_an_allowed_transition_has_no_refusal_so_the_caller_retries_the_update():
    assert domain.transition_refusal(domain.PAUSE, _session(domain.ACTIVE), "s1", OWNER) is None


@pytest.mark.parametrize(
    ("session", "caller", "expected"),
    [
        (None, OWNER, domain.SessionNotFound),
        (_session(domain.COMPLETED, PARTNER), PARTNER, domain.NotOwner),
        (_session(domain.ACTIVE), OWNER, domain.SessionNotCompleted),
        (_session(domain.COMPLETED, posting=None), OWNER, domain.MissingJobPosting),
    ],
)
def test_retake_refusals_follow_the_contract_order(session, caller, expected):
    assert type(domain.retake_refusal(session, "s1", caller)) is expected


@pytest.mark.parametrize(
    ("session", "role", "expected"),
    [
        (_session(domain.COMPLETED), domain.QUESTION, domain.SessionAlreadyCompleted),
        (_session(domain.PAUSED), domain.QUESTION, domain.SessionNotActive),
        (_session(domain.ACTIVE), domain.ANSWER, domain.NoOpenQuestion),
    ],
)
def test_append_refusals(session, role, expected):
    assert type(domain.append_refusal(session, "s1", OWNER, role)) is expected


@pytest.mark.parametrize(
    ("content", "problem"),
    [("", "must not be empty"), ("x" * 16385, "at most 16384"), ("a\x00b", "NUL")],
)
def test_bad_content_is_named(content, problem):
    assert problem in domain.content_problem(content)


def test_content_length_counts_code_points_not_bytes():
    assert domain.content_problem("😀" * 16384) is None
