"""ListReputationEvents keeps pairings private: anyone reads anyone's ledger, but an event's
session_id is shown only to the participants of that session (else ""), page after page."""

from dataclasses import dataclass

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc

from tests.helpers import (
    expect_invalid,
    list_events,
    mutually_confirmed,
    new_id,
    service_metadata,
    walk,
)

DOMAIN = "interview.reputation"


@dataclass(frozen=True)
class Ledger:
    """User X's history: session S with partner P (awarded), session T with Q (awarded, then
    reversed by a moderator), and a second session S2 with P (awarded)."""

    x: str
    p: str
    q: str
    s: str
    t: str
    s2: str


@pytest.fixture(scope="module")
async def ledger(sessions, reputation, reputation_server, as_user, service_keys):
    x, p, q = new_id(), new_id(), new_id()
    s, _, _ = await mutually_confirmed(sessions, reputation, as_user, x, p)
    t, _, _ = await mutually_confirmed(sessions, reputation, as_user, q, x)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reputation_server.port}") as channel:
        moderation = reputation_pb2_grpc.ReputationInternalServiceStub(channel)
        await moderation.ReverseSessionAwards(
            rpb.ReverseSessionAwardsRequest(session_id=t, reason="farming"),
            metadata=service_metadata(service_keys, roles=["reputation.moderate"], name="moderation"),
        )
    s2, _, _ = await mutually_confirmed(sessions, reputation, as_user, p, x)
    return Ledger(x, p, q, s, t, s2)


def shown(listing):
    """(event_id, session_id) of each listed event, in order."""
    return [(e.event_id, e.session_id) for e in listing.events]


def without_session(event):
    copy = rpb.ReputationEvent()
    copy.CopyFrom(event)
    copy.session_id = ""
    return copy


async def test_the_user_sees_every_session_id_of_their_own_ledger(reputation, as_user, db, ledger):
    own = await list_events(reputation, as_user(ledger.x))
    named = await list_events(reputation, as_user(ledger.x), ledger.x)

    rows = await db.fetch("SELECT * FROM reputation.events WHERE user_id = $1 ORDER BY seq DESC", ledger.x)
    assert shown(own) == [(str(r["event_id"]), str(r["session_id"])) for r in rows]
    assert [(e.session_id, e.reason, e.delta, e.note) for e in own.events] == [
        (ledger.s2, "MUTUAL_CONFIRMATION", 1, ""),
        (ledger.t, "REVERSAL", -1, "farming"),
        (ledger.t, "MUTUAL_CONFIRMATION", 1, ""),
        (ledger.s, "MUTUAL_CONFIRMATION", 1, ""),
    ]
    assert named == own


async def test_a_stranger_sees_every_event_but_no_session_id(reputation, as_user, ledger):
    own = await list_events(reputation, as_user(ledger.x))

    seen = await list_events(reputation, as_user(new_id()), ledger.x)

    assert list(seen.events) == [without_session(e) for e in own.events]
    assert all(e.session_id == "" for e in seen.events)
    # Nothing else is withheld: the note and the reason of the reversal show.
    assert [(e.reason, e.note) for e in seen.events][1] == ("REVERSAL", "farming")


async def test_a_partner_sees_the_ids_of_the_shared_sessions_only(reputation, as_user, ledger):
    own = await list_events(reputation, as_user(ledger.x))

    by_p = await list_events(reputation, as_user(ledger.p), ledger.x)
    by_q = await list_events(reputation, as_user(ledger.q), ledger.x)

    assert [e.session_id for e in by_p.events] == [ledger.s2, "", "", ledger.s]
    assert [e.session_id for e in by_q.events] == ["", ledger.t, ledger.t, ""]
    for seen in (by_p, by_q):
        assert [without_session(e) for e in seen.events] == [without_session(e) for e in own.events]


async def test_the_rule_is_the_same_reading_the_partners_ledger(reputation, as_user, ledger):
    by_x = await list_events(reputation, as_user(ledger.x), ledger.p)
    by_q = await list_events(reputation, as_user(ledger.q), ledger.p)

    assert [e.session_id for e in by_x.events] == [ledger.s2, ledger.s]
    assert [e.session_id for e in by_q.events] == ["", ""]
    assert [e.event_id for e in by_q.events] == [e.event_id for e in by_x.events]


@pytest.mark.parametrize("page_size", [1, 2, 3])
async def test_paging_works_for_a_stranger_and_still_hides_the_ids(reputation, as_user, ledger, page_size):
    stranger = as_user(new_id())
    whole = await list_events(reputation, stranger, ledger.x)

    pages = await walk(list_events, reputation, stranger, ledger.x, page_size=page_size)

    assert len(pages) == -(-4 // page_size)
    assert [e for page in pages for e in page.events] == list(whole.events)
    assert all(page.next_page_token for page in pages[:-1])
    assert pages[-1].next_page_token == ""


async def test_paging_works_for_a_partner_with_the_ids_on_the_right_events(reputation, as_user, ledger):
    pages = await walk(list_events, reputation, as_user(ledger.p), ledger.x, page_size=1)

    assert [e.session_id for page in pages for e in page.events] == [ledger.s2, "", "", ledger.s]


async def test_a_strangers_page_token_does_not_work_for_a_participant(reputation, as_user, ledger):
    """A token is bound to its caller: no one gets at another caller's view by presenting it."""
    first = await list_events(reputation, as_user(new_id()), ledger.x, page_size=1)
    assert first.next_page_token

    await expect_invalid(
        list_events(reputation, as_user(ledger.p), ledger.x, page_size=1, page_token=first.next_page_token),
        "page_token",
        domain=DOMAIN,
    )
