"""GetReputation and ListReputationEvents: scores and the ledger behind them, readable by any user."""

import asyncio

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import (
    MALFORMED_UUIDS,
    SAMPLE_ID,
    expect_error,
    expect_invalid,
    get_reputation,
    list_events,
    mutually_confirmed,
    new_id,
    service_metadata,
    stamp,
)

DOMAIN = "interview.reputation"


# --- GetReputation -------------------------------------------------------------------------------


async def test_a_user_never_seen_has_score_zero_and_no_update_time(reputation, as_user):
    unknown = new_id()

    found = await get_reputation(reputation, as_user(new_id()), unknown)

    assert found.user_id == unknown
    assert (found.score, found.confirmed_sessions) == (0, 0)
    assert not found.HasField("update_time")


async def test_an_empty_user_id_means_the_caller(sessions, reputation, as_user, db):
    caller = new_id()
    empty_before = await get_reputation(reputation, as_user(caller))
    assert empty_before.user_id == caller
    assert (empty_before.score, empty_before.confirmed_sessions) == (0, 0)
    assert not empty_before.HasField("update_time")

    await mutually_confirmed(sessions, reputation, as_user, caller)
    mine = await get_reputation(reputation, as_user(caller))

    assert mine.user_id == caller
    assert (mine.score, mine.confirmed_sessions) == (1, 1)
    assert mine.HasField("update_time")
    assert mine == await get_reputation(reputation, as_user(caller), caller)
    stored = await db.fetchrow("SELECT * FROM reputation.scores WHERE user_id = $1", caller)
    assert (stored["score"], stored["confirmed_sessions"]) == (1, 1)
    assert stamp(mine.update_time) == stored["update_time"]


async def test_anyone_can_read_another_users_reputation(sessions, reputation, as_user):
    user, stranger = new_id(), new_id()
    await mutually_confirmed(sessions, reputation, as_user, user)
    await mutually_confirmed(sessions, reputation, as_user, user)

    seen = await get_reputation(reputation, as_user(stranger), user)

    assert seen.user_id == user
    assert (seen.score, seen.confirmed_sessions) == (2, 2)
    assert seen == await get_reputation(reputation, as_user(user))


async def test_the_update_time_moves_with_each_award(sessions, reputation, as_user):
    user = new_id()
    await mutually_confirmed(sessions, reputation, as_user, user)
    first = await get_reputation(reputation, as_user(user))

    await mutually_confirmed(sessions, reputation, as_user, user)
    second = await get_reputation(reputation, as_user(user))

    assert stamp(second.update_time) > stamp(first.update_time)


@pytest.mark.parametrize("value", list(MALFORMED_UUIDS.values()), ids=list(MALFORMED_UUIDS))
async def test_get_reputation_with_a_malformed_user_id_is_an_invalid_argument(reputation, as_user, value):
    await expect_invalid(get_reputation(reputation, as_user(new_id()), value), "user_id", domain=DOMAIN)


# --- ListReputationEvents ------------------------------------------------------------------------


async def test_events_are_listed_newest_first(sessions, reputation, as_user):
    user = new_id()
    completed = [(await mutually_confirmed(sessions, reputation, as_user, user))[0] for _ in range(3)]

    listed = await list_events(reputation, as_user(user), user)

    assert [event.session_id for event in listed.events] == completed[::-1]
    assert listed.next_page_token == ""
    for event in listed.events:
        assert event.event_id
        assert event.user_id == user
        assert (event.delta, event.reason) == (1, "MUTUAL_CONFIRMATION")
        assert event.HasField("create_time")
    assert len({event.event_id for event in listed.events}) == 3
    times = [stamp(event.create_time) for event in listed.events]
    assert times == sorted(times, reverse=True)


async def test_the_events_match_the_ledger_and_the_score(sessions, reputation, as_user, db):
    user = new_id()
    for _ in range(2):
        await mutually_confirmed(sessions, reputation, as_user, user)

    listed = await list_events(reputation, as_user(user), user)
    rows = await db.fetch("SELECT * FROM reputation.events WHERE user_id = $1 ORDER BY seq DESC", user)

    assert [(e.event_id, e.session_id, e.delta, e.reason, stamp(e.create_time)) for e in listed.events] == [
        (str(r["event_id"]), str(r["session_id"]), r["delta"], r["reason"], r["create_time"]) for r in rows
    ]
    # Another user sees the same ledger without the session ids (who was paired with whom).
    seen_by_other = await list_events(reputation, as_user(new_id()), user)
    assert [(e.event_id, e.session_id) for e in seen_by_other.events] == [
        (e.event_id, "") for e in listed.events
    ]
    score = await get_reputation(reputation, as_user(user))
    assert score.score == sum(e.delta for e in listed.events)
    assert score.confirmed_sessions == len(listed.events)


async def test_an_empty_user_id_lists_the_callers_events(sessions, reputation, as_user):
    user = new_id()
    session_id, _, _ = await mutually_confirmed(sessions, reputation, as_user, user)

    mine = await list_events(reputation, as_user(user))

    assert [(e.user_id, e.session_id) for e in mine.events] == [(user, session_id)]
    assert mine == await list_events(reputation, as_user(user), user)


async def test_pages_of_two_cover_every_event_once(sessions, reputation, as_user):
    user = new_id()
    completed = [(await mutually_confirmed(sessions, reputation, as_user, user))[0] for _ in range(3)]

    first = await list_events(reputation, as_user(user), user, page_size=2)
    assert len(first.events) == 2
    assert first.next_page_token
    second = await list_events(reputation, as_user(user), user, page_size=2, page_token=first.next_page_token)

    assert len(second.events) == 1
    assert second.next_page_token == ""
    everything = [*first.events, *second.events]
    assert [event.session_id for event in everything] == completed[::-1]
    assert len({event.event_id for event in everything}) == 3
    assert everything == list((await list_events(reputation, as_user(user), user)).events)


async def test_a_full_page_that_is_the_last_has_no_next_page_token(sessions, reputation, as_user):
    user = new_id()
    for _ in range(2):
        await mutually_confirmed(sessions, reputation, as_user, user)

    only = await list_events(reputation, as_user(user), user, page_size=2)

    assert len(only.events) == 2
    assert only.next_page_token == ""


async def test_page_size_zero_means_fifty_and_above_two_hundred_is_capped(sessions, reputation, as_user):
    user = new_id()
    await asyncio.gather(*(mutually_confirmed(sessions, reputation, as_user, user) for _ in range(51)))

    default = await list_events(reputation, as_user(user), user, page_size=0)
    assert len(default.events) == 50
    assert default.next_page_token
    rest = await list_events(reputation, as_user(user), user, page_token=default.next_page_token)
    assert len(rest.events) == 1
    assert rest.next_page_token == ""
    assert len({e.event_id for e in [*default.events, *rest.events]}) == 51

    huge = await list_events(reputation, as_user(user), user, page_size=1_000_000)
    assert len(huge.events) == 51
    assert huge.next_page_token == ""
    assert (await get_reputation(reputation, as_user(user))).score == 51


@pytest.mark.parametrize("page_size", [-1, -50, -(2**31)])
async def test_a_negative_page_size_is_an_invalid_argument(reputation, as_user, page_size):
    await expect_invalid(
        list_events(reputation, as_user(new_id()), page_size=page_size), "page_size", domain=DOMAIN
    )


async def page_token_for(sessions, reputation, as_user, user):
    """A valid next_page_token of `user`'s own listing of their own events."""
    for _ in range(2):
        await mutually_confirmed(sessions, reputation, as_user, user)
    page = await list_events(reputation, as_user(user), user, page_size=1)
    assert page.next_page_token
    return page.next_page_token


async def test_a_page_token_only_works_for_the_user_it_was_made_for(sessions, reputation, as_user):
    a, b = new_id(), new_id()
    token = await page_token_for(sessions, reputation, as_user, a)
    for _ in range(2):
        await mutually_confirmed(sessions, reputation, as_user, b)

    await expect_invalid(
        list_events(reputation, as_user(a), b, page_size=1, page_token=token), "page_token", domain=DOMAIN
    )
    await expect_invalid(
        list_events(reputation, as_user(b), b, page_size=1, page_token=token), "page_token", domain=DOMAIN
    )
    # The token itself is fine where it belongs.
    assert len((await list_events(reputation, as_user(a), a, page_size=1, page_token=token)).events) == 1


async def test_a_page_token_only_works_for_the_caller_it_was_given_to(sessions, reputation, as_user):
    a, other_caller = new_id(), new_id()
    token = await page_token_for(sessions, reputation, as_user, a)

    await expect_invalid(
        list_events(reputation, as_user(other_caller), a, page_size=1, page_token=token),
        "page_token",
        domain=DOMAIN,
    )


async def test_a_page_token_of_an_implicit_user_id_works_with_the_same_request(sessions, reputation, as_user):
    user = new_id()
    for _ in range(2):
        await mutually_confirmed(sessions, reputation, as_user, user)

    first = await list_events(reputation, as_user(user), page_size=1)
    second = await list_events(reputation, as_user(user), page_size=1, page_token=first.next_page_token)

    assert len(second.events) == 1
    assert second.events[0].event_id != first.events[0].event_id


@pytest.mark.parametrize(
    "token",
    ["garbage", "!!!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "é", "eyJzZXEiOjF9", "a" * 5000],
    ids=["word", "punctuation", "zeros", "non-ascii", "unsigned json", "long"],
)
async def test_a_garbage_page_token_is_an_invalid_argument(reputation, as_user, token):
    await expect_invalid(
        list_events(reputation, as_user(new_id()), page_token=token), "page_token", domain=DOMAIN
    )


async def test_a_tampered_page_token_is_an_invalid_argument(sessions, reputation, as_user):
    user = new_id()
    token = await page_token_for(sessions, reputation, as_user, user)
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")

    await expect_invalid(
        list_events(reputation, as_user(user), user, page_token=tampered), "page_token", domain=DOMAIN
    )


@pytest.mark.parametrize("value", list(MALFORMED_UUIDS.values()), ids=list(MALFORMED_UUIDS))
async def test_list_events_with_a_malformed_user_id_is_an_invalid_argument(reputation, as_user, value):
    await expect_invalid(list_events(reputation, as_user(new_id()), value), "user_id", domain=DOMAIN)


async def test_an_unknown_user_has_no_events(reputation, as_user):
    listed = await list_events(reputation, as_user(new_id()), new_id())

    assert list(listed.events) == []
    assert listed.next_page_token == ""


async def test_a_first_confirmation_alone_adds_no_event(sessions, reputation, as_user):
    user = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=new_id()), metadata=as_user(user)
    )
    await reputation.ConfirmCompletion(
        rpb.ConfirmCompletionRequest(session_id=created.session_id), metadata=as_user(user)
    )

    assert list((await list_events(reputation, as_user(user))).events) == []
    assert (await get_reputation(reputation, as_user(user))).score == 0


# --- Auth ----------------------------------------------------------------------------------------


READS = {
    "GetReputation": lambda user: rpb.GetReputationRequest(user_id=user),
    "ListReputationEvents": lambda user: rpb.ListReputationEventsRequest(user_id=user),
}


@pytest.mark.parametrize("user_id", ["", SAMPLE_ID], ids=["caller", "explicit user"])
@pytest.mark.parametrize("rpc", list(READS))
async def test_reads_without_a_token_are_unauthenticated(reputation, rpc, user_id):
    error = await expect_error(
        getattr(reputation, rpc)(READS[rpc](user_id)), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"
    )
    assert error.domain == DOMAIN


@pytest.mark.parametrize("rpc", list(READS))
async def test_reads_with_a_garbage_token_are_unauthenticated(reputation, rpc):
    error = await expect_error(
        getattr(reputation, rpc)(READS[rpc](SAMPLE_ID), metadata=(("authorization", "Bearer not-a-jwt"),)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert error.domain == DOMAIN


@pytest.mark.parametrize("rpc", list(READS))
async def test_reads_with_a_service_token_are_permission_denied(reputation, service_keys, rpc):
    error = await expect_error(
        getattr(reputation, rpc)(READS[rpc](SAMPLE_ID), metadata=service_metadata(service_keys)),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )
    assert error.domain == DOMAIN


async def test_a_malformed_user_id_without_a_token_is_unauthenticated_first(reputation):
    await expect_error(
        reputation.GetReputation(rpb.GetReputationRequest(user_id="not-a-uuid")),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
