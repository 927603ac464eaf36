"""Lookups of one session that overlap in a reputation process share one LookupSession call:
partners confirming at the same instant ask once, and repeated calls about a session we hold no
rows for do not multiply the calls the session service gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.config import PLAINTEXT
from reputation_service import domain
from reputation_service.sessions_client import SessionsClient
from tests.helpers import create, new_id, wait_for
from tests.reputation_service.gate import Gate, running_gate

LOOKUP = "LookupSession"
WAITERS = 5


@pytest.fixture
async def gated(session_server, service_keys) -> AsyncIterator[tuple[Gate, SessionsClient]]:
    """The reputation service's client, reaching the session service through a Gate that holds
    every LookupSession until the test opens it."""
    async with running_gate(f"127.0.0.1:{session_server.port}") as gate:
        gate.holding.add(LOOKUP)
        client = SessionsClient(f"127.0.0.1:{gate.port}", service_keys.reputation, PLAINTEXT, 5.0)
        try:
            yield gate, client
        finally:
            await client.close()


async def started(gate: Gate, session_id: str, lookups: list[asyncio.Task]) -> None:
    """Waits until the gate holds the first lookup; the others were started before it, in the
    same turn of the event loop, so each has joined a call by then."""

    async def held() -> bool:
        return gate.calls[(LOOKUP, session_id)] >= 1

    await wait_for(held, 5, "the first LookupSession to reach the gate")
    assert not any(lookup.done() for lookup in lookups)


async def test_overlapping_lookups_of_one_session_make_one_call_and_all_get_its_answer(
    gated, sessions, as_user
):
    gate, client = gated
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    lookups = [asyncio.create_task(client.lookup(created.session_id)) for _ in range(WAITERS)]
    await started(gate, created.session_id, lookups)

    gate.opened.set()
    found = await asyncio.gather(*lookups)

    assert {(f.session_id, f.user_id, f.partner_user_id, f.status) for f in found} == {
        (created.session_id, owner, partner, domain.ACTIVE)
    }
    assert gate.calls[(LOOKUP, created.session_id)] == 1
    # Nothing is kept once the call is answered: the next lookup asks again.
    await client.lookup(created.session_id)
    assert gate.calls[(LOOKUP, created.session_id)] == 2


async def test_the_first_caller_going_away_leaves_the_shared_call_to_the_others(gated, sessions, as_user):
    gate, client = gated
    created = await create(sessions, as_user(new_id()), partner=new_id())
    first, *others = [asyncio.create_task(client.lookup(created.session_id)) for _ in range(WAITERS)]
    await started(gate, created.session_id, [first, *others])

    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.opened.set()
    found = await asyncio.gather(*others)

    assert {f.session_id for f in found} == {created.session_id}
    assert gate.calls[(LOOKUP, created.session_id)] == 1
    assert gate.forwarded[(LOOKUP, created.session_id)] == 1


async def test_the_shared_calls_refusal_is_every_waiters(gated):
    gate, client = gated
    missing = new_id()
    lookups = [asyncio.create_task(client.lookup(missing)) for _ in range(WAITERS)]
    await started(gate, missing, lookups)

    gate.opened.set()
    outcomes = await asyncio.gather(*lookups, return_exceptions=True)

    assert all(isinstance(outcome, domain.SessionNotFound) for outcome in outcomes), outcomes
    assert {outcome.metadata["session_id"] for outcome in outcomes} == {missing}
    assert gate.calls[(LOOKUP, missing)] == 1
