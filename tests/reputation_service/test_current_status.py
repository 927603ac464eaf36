"""Confirmation.session_status is the session's status now, as the session service says it, and
every call to the session service carries what is left of the caller's deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import confirm, expect_error, get_confirmation, paired, wait_for
from tests.reputation_service.gate import Gate, running_gate
from tests.servers import reputation_config_for, running_reputation

LOOKUP, COMPLETE = "LookupSession", "CompletePairedSession"
# What the gate may see above the deadline the caller set: the two hosts' clocks are one, but the
# deadline travels as a rounded grpc-timeout.
SLACK = 0.05


@asynccontextmanager
async def behind_gate(
    database_url, keys, session_server, **overrides
) -> AsyncIterator[tuple[Gate, reputation_pb2_grpc.ReputationServiceStub]]:
    """A reputation server of the test's own that reaches the session service through a Gate."""
    async with running_gate(f"127.0.0.1:{session_server.port}") as gate:
        config = reputation_config_for(database_url, keys, f"127.0.0.1:{gate.port}", **overrides)
        async with running_reputation(config) as (_, stub):
            yield gate, stub


# --- The status now ----------------------------------------------------------------------------


async def test_a_pause_after_the_first_confirmation_shows_in_get_confirmation_and_a_resume_too(
    sessions, reputation, as_user
):
    session_id, owner, partner = await paired(sessions, as_user)
    first = await confirm(reputation, as_user(owner), session_id)
    assert first.session_status == pb.SESSION_STATUS_ACTIVE

    await sessions.PauseSession(pb.PauseSessionRequest(session_id=session_id), metadata=as_user(partner))

    for caller in (owner, partner):
        seen = await get_confirmation(reputation, as_user(caller), session_id)
        assert seen.session_status == pb.SESSION_STATUS_PAUSED
        assert list(seen.confirmed_user_ids) == [owner]
    again = await confirm(reputation, as_user(owner), session_id)
    assert again.session_status == pb.SESSION_STATUS_PAUSED

    await sessions.ResumeSession(pb.ResumeSessionRequest(session_id=session_id), metadata=as_user(owner))

    assert (await get_confirmation(reputation, as_user(partner), session_id)).session_status == (
        pb.SESSION_STATUS_ACTIVE
    )
    completed = await confirm(reputation, as_user(partner), session_id)
    assert (completed.session_status, completed.completion_pending) == (pb.SESSION_STATUS_COMPLETED, False)
    assert (await get_confirmation(reputation, as_user(owner), session_id)).session_status == (
        pb.SESSION_STATUS_COMPLETED
    )


async def test_a_known_session_whose_status_cannot_be_had_is_sessions_unavailable_until_delivered(
    database_url, keys, session_server, sessions, as_user
):
    async with behind_gate(
        database_url, keys, session_server, session_service_timeout=0.3, outbox_lease=1.0
    ) as (gate, stub):
        pending, owner, partner = await paired(sessions, as_user)
        await confirm(stub, as_user(owner), pending)
        done, done_owner, done_partner = await paired(sessions, as_user)
        await confirm(stub, as_user(done_owner), done)
        completed = await confirm(stub, as_user(done_partner), done)
        assert completed.session_status == pb.SESSION_STATUS_COMPLETED

        gate.holding.update({LOOKUP, COMPLETE})  # the session service stops answering
        for call in (
            get_confirmation(stub, as_user(partner), pending),
            confirm(stub, as_user(owner), pending),  # a repeat: it records nothing new
        ):
            error = await expect_error(call, grpc.StatusCode.UNAVAILABLE, "SESSIONS_UNAVAILABLE")
            assert error.domain == "interview.reputation"
            assert error.metadata == {"session_id": pending}

        # Delivered: COMPLETED is terminal, nothing to ask.
        lookups = sum(n for (method, _), n in gate.calls.items() if method == LOOKUP)
        for caller in (done_owner, done_partner):
            seen = await get_confirmation(stub, as_user(caller), done)
            assert (seen.session_status, seen.completion_pending) == (pb.SESSION_STATUS_COMPLETED, False)
            again = await confirm(stub, as_user(caller), done)
            assert again.session_status == pb.SESSION_STATUS_COMPLETED
        assert sum(n for (method, _), n in gate.calls.items() if method == LOOKUP) == lookups


# --- Deadlines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", ["ConfirmCompletion", "GetConfirmation"])
async def test_a_short_client_deadline_bounds_the_lookup_the_call_makes(
    database_url, keys, session_server, sessions, as_user, rpc
):
    session_id, owner, _ = await paired(sessions, as_user)
    call = confirm if rpc == "ConfirmCompletion" else get_confirmation
    async with behind_gate(
        database_url, keys, session_server, session_service_timeout=5.0, outbox_lease=10.0
    ) as (gate, stub):
        gate.holding.add(LOOKUP)  # a slow session service

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(stub, as_user(owner), session_id, timeout=0.6)

        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        (budget,) = gate.budgets[LOOKUP]
        assert budget is not None and 0 < budget <= 0.6 + SLACK


async def test_without_a_client_deadline_the_lookup_carries_the_configured_timeout(
    database_url, keys, session_server, sessions, as_user
):
    session_id, owner, _ = await paired(sessions, as_user)
    async with behind_gate(
        database_url, keys, session_server, session_service_timeout=5.0, outbox_lease=10.0
    ) as (gate, stub):
        reply = await get_confirmation(stub, as_user(owner), session_id)

    assert reply.session_status == pb.SESSION_STATUS_ACTIVE
    (budget,) = gate.budgets[LOOKUP]
    assert budget is not None and 4.0 < budget <= 5.0 + SLACK


async def test_the_completion_after_the_award_carries_what_is_left_of_the_callers_deadline(
    database_url, keys, session_server, sessions, as_user
):
    session_id, owner, partner = await paired(sessions, as_user)
    async with behind_gate(
        database_url, keys, session_server, session_service_timeout=5.0, outbox_lease=1.5
    ) as (gate, stub):
        await confirm(stub, as_user(owner), session_id)
        gate.holding.add(COMPLETE)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await confirm(stub, as_user(partner), session_id, timeout=1.0)

        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        (budget,) = gate.budgets[COMPLETE]
        assert budget is not None and 0 < budget <= 1.0 + SLACK

        # Nothing left pending for the rest of the run: a relay delivers it once the lease is over.
        gate.holding.discard(COMPLETE)

        async def delivered() -> bool:
            return (await get_confirmation(stub, as_user(owner), session_id)).session_status == (
                pb.SESSION_STATUS_COMPLETED
            )

        await wait_for(delivered, within=20, what="a relay to deliver the completion")
