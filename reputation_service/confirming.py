"""The confirmation use cases: ConfirmCompletion (look the session up, decide and record in one
transaction, deliver after commit) and GetConfirmation. Their rules are in domain.py; the
servicer validates, calls one of these and converts the View."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from common import tracing
from common.db import connection
from reputation_service import domain, relay, store
from reputation_service.domain import SessionFacts
from reputation_service.marks import DeliveryMarks
from reputation_service.sessions_client import SessionsClient


@dataclass(frozen=True)
class Rules:
    """The settings the confirmation rules run with."""

    caps: domain.Caps
    window: timedelta
    lease: float  # OUTBOX_LEASE_SECONDS: the award's outbox row is born claimed for this long
    max_backoff: float


@dataclass(frozen=True)
class View:
    """What a caller sees of a session's confirmation: our rows (None before any confirmation),
    the session's current status, and when the window closes while it is open."""

    session_id: str
    state: store.ConfirmationState | None
    status: str
    expire_time: datetime | None

    @property
    def completion_pending(self) -> bool:
        """Decided or closed, and the session service not told yet (as far as we know)."""
        state = self.state
        return (
            state is not None
            and (state.decided or state.closed)
            and not state.delivered
            and self.status != domain.COMPLETED
        )


async def _state(db: AsyncEngine, session_id: str) -> store.ConfirmationState | None:
    async with connection(db) as conn:
        return await store.confirmation_state(conn, session_id)


async def _participant_view(
    db: AsyncEngine,
    sessions: SessionsClient,
    session_id: str,
    caller: str,
    known: store.ConfirmationState | None,
    for_confirming: bool,
    deadline: float,
) -> tuple[SessionFacts, store.ConfirmationState | None, str | None]:
    """The session as far as `caller` may act on it, our rows for it if any (`known`, as just
    read), and the status the session service gave if it was asked. Participants come from our
    rows when we have them (they never change), otherwise from the session service."""
    looked_up = None
    if known is None:
        session = await sessions.lookup(session_id, deadline)
        looked_up = session.status
        if session.status == domain.COMPLETED:
            # A concurrent confirmation may have completed it since we looked: our rows are
            # committed before any delivery, so a second look tells the two cases apart.
            known = await _state(db, session_id)
    if known is not None:
        session = known.session
    refusal = domain.confirmation_refusal(session, caller, known is not None or not for_confirming)
    if refusal is not None:
        raise refusal
    return session, known, looked_up


async def readable_view(
    db: AsyncEngine, sessions: SessionsClient, session_id: str, caller: str, deadline: float
) -> tuple[SessionFacts, store.ConfirmationState | None, str | None]:
    """`_participant_view` for a call that reads the confirmation (GetConfirmation, RatePartner):
    our rows read first, the status not checked."""
    known = await _state(db, session_id)
    return await _participant_view(db, sessions, session_id, caller, known, False, deadline)


async def _status(
    sessions: SessionsClient, state: store.ConfirmationState, looked_up: str | None, deadline: float
) -> str:
    """The session's status now: COMPLETED once our completion was delivered (terminal); otherwise
    the session service's word (pauses and resumes happen there), from the lookup this call
    already made or asked now. No answer: SESSIONS_UNAVAILABLE."""
    if state.delivered:
        return domain.COMPLETED
    if looked_up is not None:
        return looked_up
    return (await sessions.lookup(state.session.session_id, deadline)).status


def _view(state: store.ConfirmationState, status: str, rules: Rules) -> View:
    expires = (
        None if state.closed else domain.expire_time(state.first_confirm_time, rules.window, state.decided)
    )
    return View(state.session.session_id, state, status, expires)


async def confirm_completion(
    db: AsyncEngine,
    sessions: SessionsClient,
    marks: DeliveryMarks,
    rules: Rules,
    caller: str,
    session_id: str,
    request_id: str | None,
    deadline: float,
) -> View:
    """Records `caller`'s confirmation of `session_id`; the second participant's decides the
    awards and completes the session in the session service (now if it answers within `deadline`
    else through the relay). A repeated `request_id` answers for its first call's session.

    A session we hold rows for is confirmed in one statement; one we do not know yet is looked up
    in the session service first, and confirmed with the participants it gave. The completion it
    queues keeps this call's trace context, for the relay's delivery to link to."""
    traceparent = tracing.traceparent()

    async def record(facts: SessionFacts | None) -> tuple[store.ConfirmationState | None, bool, float]:
        # The lease's end is taken before the statement whose now() starts it.
        lease_end = asyncio.get_running_loop().time() + rules.lease
        async with connection(db) as conn:
            state, queued = await store.confirm(
                conn,
                session_id,
                caller,
                request_id,
                facts,
                rules.caps,
                rules.window,
                rules.lease,
                traceparent,
            )
        return state, queued, lease_end

    state, queued, lease_end = await record(None)
    looked_up = None
    if state is None:
        session, _, looked_up = await _participant_view(
            db, sessions, session_id, caller, None, True, deadline
        )
        state, queued, lease_end = await record(session)
        assert state is not None
    session_id = state.session.session_id
    refusal = domain.confirmation_refusal(state.session, caller, known_locally=True)
    if refusal is None and state.closed:
        refusal = domain.closed_refusal(session_id, state.confirmed_user_ids, caller)
    if refusal is not None:
        raise refusal
    if queued:
        delivered = await relay.deliver(
            db, sessions, marks, session_id, 1, deadline, lease_end, rules.max_backoff
        )
        state = replace(state, delivered=delivered)
        if not delivered:
            # This call decided the award: its reply reports it although the session service just
            # failed us, with the last status we saw; the relay finishes the job.
            return _view(state, looked_up or state.session.status, rules)
    return _view(state, await _status(sessions, state, looked_up, deadline), rules)


async def get_confirmation(
    db: AsyncEngine, sessions: SessionsClient, rules: Rules, caller: str, session_id: str, deadline: float
) -> View:
    """Where the confirmation of `session_id` stands, changing nothing."""
    # The view may have found our rows on a second look (a confirmation completed it meanwhile).
    session, known, looked_up = await readable_view(db, sessions, session_id, caller, deadline)
    if known is None:
        return View(session_id, None, session.status, None)
    return _view(known, await _status(sessions, known, looked_up, deadline), rules)
