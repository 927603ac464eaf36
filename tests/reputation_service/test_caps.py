"""Caps against farming: PAIR_DAILY_AWARD_LIMIT and USER_DAILY_AWARD_LIMIT, replayed as a farmer
would (one user and a second account), from a user with many partners, and under races.

Each test runs its own reputation server with the caps on, on the run's database and session
service: every user is fresh, so the day's counters of one test are never another's. (The shared
reputation server, caps off, may relay these tests' outbox rows too; that changes nothing here.)"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb

from common.app import AppServer
from common.auth import MODERATE_ROLE
from common.client import channel_options
from tests.helpers import (
    confirm,
    create,
    get,
    get_confirmation,
    get_reputation,
    list_events,
    new_id,
    paired,
    service_metadata,
    session_statuses,
    together,
    wait_for,
    wait_for_delivery_marks,
    walk,
)
from tests.servers import reputation_config_for, running_reputation

AWARD, CAPPED_PAIR, CAPPED_USER = "MUTUAL_CONFIRMATION", "CAPPED_PAIR_DAILY_LIMIT", "CAPPED_USER_DAILY_LIMIT"


@asynccontextmanager
async def capped_reputation(
    database_url: str, keys: Any, session_server: AppServer, pair: int, user: int
) -> AsyncIterator[
    tuple[reputation_pb2_grpc.ReputationServiceStub, reputation_pb2_grpc.ReputationInternalServiceStub]
]:
    """A reputation server of the test's own with the given caps, and a stub on it whose channel
    retries a refused stream (many calls at once on one connection), as internal callers do; and
    the moderators' stub on the same channel."""
    config = reputation_config_for(
        database_url,
        keys,
        f"127.0.0.1:{session_server.port}",
        pair_daily_award_limit=pair,
        user_daily_award_limit=user,
    )
    async with (
        running_reputation(config) as (app, _),
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}", options=channel_options()) as channel,
    ):
        yield (
            reputation_pb2_grpc.ReputationServiceStub(channel),
            reputation_pb2_grpc.ReputationInternalServiceStub(channel),
        )


async def ledger(db, session_ids: list[str]) -> dict[tuple[str, str], tuple[str, int]]:
    """(session_id, user_id) -> (reason, delta) of every event of the sessions; fails on two events
    for one participant of one session."""
    rows = await db.fetch(
        "SELECT session_id::text, user_id::text, reason, delta FROM reputation.events "
        "WHERE session_id = ANY($1::uuid[])",
        session_ids,
    )
    found = {(r["session_id"], r["user_id"]): (r["reason"], r["delta"]) for r in rows}
    assert len(found) == len(rows), rows
    return found


async def scores(db, users: list[str]) -> dict[str, tuple[int, int]]:
    """user -> (score, confirmed_sessions) as the scores table holds them (absent: never scored)."""
    rows = await db.fetch(
        "SELECT user_id::text, score, confirmed_sessions FROM reputation.scores "
        "WHERE user_id = ANY($1::uuid[])",
        users,
    )
    return {r["user_id"]: (r["score"], r["confirmed_sessions"]) for r in rows}


async def event_sums(db, users: list[str]) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT user_id::text, sum(delta) AS total FROM reputation.events "
        "WHERE user_id = ANY($1::uuid[]) GROUP BY user_id",
        users,
    )
    return {r["user_id"]: r["total"] for r in rows}


async def pair_counters(db, users: list[str]) -> dict[tuple[str, str], int]:
    rows = await db.fetch(
        "SELECT low_user::text, high_user::text, sessions FROM reputation.pair_day_awards "
        "WHERE low_user = ANY($1::uuid[]) OR high_user = ANY($1::uuid[])",
        users,
    )
    return {(r["low_user"], r["high_user"]): r["sessions"] for r in rows}


async def user_counters(db, users: list[str]) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT user_id::text, points FROM reputation.user_day_awards WHERE user_id = ANY($1::uuid[])",
        users,
    )
    return {r["user_id"]: r["points"] for r in rows}


async def assert_counters_dated_by_their_awards(db, users: list[str], session_ids: list[str]) -> None:
    """The counters' `day` is the UTC date of the award events they count (all from one day here)."""
    event_days = {
        r["day"]
        for r in await db.fetch(
            "SELECT DISTINCT (create_time AT TIME ZONE 'UTC')::date AS day FROM reputation.events "
            "WHERE session_id = ANY($1::uuid[])",
            session_ids,
        )
    }
    counter_days = {
        r["day"]
        for r in await db.fetch(
            "SELECT day FROM reputation.user_day_awards WHERE user_id = ANY($1::uuid[]) "
            "UNION SELECT day FROM reputation.pair_day_awards "
            "WHERE low_user = ANY($1::uuid[]) OR high_user = ANY($1::uuid[])",
            users,
        )
    }
    assert len(event_days) == 1, event_days  # a run straddling UTC midnight would see two
    assert counter_days == event_days


def ordered(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


# --- The farming replay ----------------------------------------------------------------------------


async def test_farming_replay_ten_sessions_of_one_pair_in_a_day_earn_each_only_the_pair_limit(
    database_url, keys, session_server, sessions, as_user, db
):
    me, alt = new_id(), new_id()
    async with capped_reputation(database_url, keys, session_server, pair=3, user=20) as (reputation, _):
        started = time.perf_counter()
        ids, replies = [], []
        for i in range(10):
            owner, partner = (me, alt) if i % 2 == 0 else (alt, me)  # either account creates
            session_id, _, _ = await paired(sessions, as_user, owner, partner)
            first = await confirm(reputation, as_user(owner), session_id)
            assert not first.both_confirmed and list(first.capped_user_ids) == []
            replies.append(await confirm(reputation, as_user(partner), session_id))
            ids.append(session_id)
        taken = time.perf_counter() - started
        looked = [await get_confirmation(reputation, as_user(me), s) for s in ids]
        reputations = {u: await get_reputation(reputation, as_user(me), u) for u in (me, alt)}
        listed = {
            u: [e for page in await walk(list_events, reputation, as_user(u), u) for e in page.events]
            for u in (me, alt)
        }

    both = sorted([me, alt])
    for reply in replies + looked:
        assert (reply.both_confirmed, reply.session_status, reply.completion_pending) == (
            True,
            pb.SESSION_STATUS_COMPLETED,
            False,
        )
        assert list(reply.confirmed_user_ids) == both
        assert not reply.closed_unconfirmed and not reply.HasField("expire_time")
    assert [(r.reputation_awarded, list(r.capped_user_ids)) for r in replies] == [(True, [])] * 3 + [
        (False, both)
    ] * 7
    assert [(r.reputation_awarded, list(r.capped_user_ids)) for r in looked] == [
        (r.reputation_awarded, list(r.capped_user_ids)) for r in replies
    ]

    # The ledger: the first three sessions award each +1, the other seven note the pair's cap.
    events = await ledger(db, ids)
    assert events == {
        (s, u): (AWARD, 1) if i < 3 else (CAPPED_PAIR, 0) for i, s in enumerate(ids) for u in (me, alt)
    }
    for user in (me, alt):
        assert (reputations[user].score, reputations[user].confirmed_sessions) == (3, 3)
        assert Counter((e.reason, e.delta) for e in listed[user]) == Counter(
            {(AWARD, 1): 3, (CAPPED_PAIR, 0): 7}
        )
        assert sum(e.delta for e in listed[user]) == reputations[user].score
        assert {e.session_id for e in listed[user]} == set(ids)  # their own sessions: ids shown
    assert await scores(db, [me, alt]) == {me: (3, 3), alt: (3, 3)}
    assert await event_sums(db, [me, alt]) == {me: 3, alt: 3}

    # Every session completed anyway, capped or not.
    assert await session_statuses(db, ids) == Counter({"completed": 10})
    for session_id in ids:
        assert (await get(sessions, as_user(me), session_id)).status == pb.SESSION_STATUS_COMPLETED

    assert await pair_counters(db, [me, alt]) == {ordered(me, alt): 3}
    assert await user_counters(db, [me, alt]) == {me: 3, alt: 3}
    await assert_counters_dated_by_their_awards(db, [me, alt], ids)

    capped = {u: sum(1 for e in listed[u] if e.reason == CAPPED_PAIR) for u in (me, alt)}
    print(
        f"\nfarming replay (PAIR_DAILY_AWARD_LIMIT=3, USER_DAILY_AWARD_LIMIT=20): 10 sessions, "
        f"20 confirmations in {taken:.2f} s; points: user {reputations[me].score}, second account "
        f"{reputations[alt].score}; CAPPED_PAIR_DAILY_LIMIT (0-delta) events: user {capped[me]}, "
        f"second account {capped[alt]}; 10/10 sessions COMPLETED"
    )


# --- The user's daily limit ------------------------------------------------------------------------


async def test_the_users_daily_limit_withholds_only_that_users_point_and_the_fresh_partner_still_earns(
    database_url, keys, session_server, sessions, as_user, db
):
    user = new_id()
    partners = [new_id() for _ in range(21)]
    async with capped_reputation(database_url, keys, session_server, pair=3, user=20) as (reputation, _):
        ids = []
        for partner in partners[:20]:
            session_id, _, _ = await paired(sessions, as_user, user, partner)
            await confirm(reputation, as_user(user), session_id)
            reply = await confirm(reputation, as_user(partner), session_id)
            assert (reply.reputation_awarded, list(reply.capped_user_ids)) == (True, [])
            ids.append(session_id)
        assert (await get_reputation(reputation, as_user(user))).score == 20

        fresh = partners[20]
        last, _, _ = await paired(sessions, as_user, fresh, user)  # the partner creates this one
        await confirm(reputation, as_user(fresh), last)
        reply = await confirm(reputation, as_user(user), last)
        looked = await get_confirmation(reputation, as_user(fresh), last)
        mine = await get_reputation(reputation, as_user(user))
        theirs = await get_reputation(reputation, as_user(user), fresh)

    for seen in (reply, looked):
        assert (seen.both_confirmed, seen.reputation_awarded, list(seen.capped_user_ids)) == (
            True,
            True,
            [user],
        )
        assert (seen.session_status, seen.completion_pending) == (pb.SESSION_STATUS_COMPLETED, False)
    events = await ledger(db, [last])
    assert events == {(last, user): (CAPPED_USER, 0), (last, fresh): (AWARD, 1)}
    assert (mine.score, mine.confirmed_sessions) == (20, 20)
    assert (theirs.score, theirs.confirmed_sessions) == (1, 1)
    assert await event_sums(db, [user, fresh]) == {user: 20, fresh: 1}
    assert await session_statuses(db, [*ids, last]) == Counter({"completed": 21})
    assert await user_counters(db, [user, fresh]) == {user: 20, fresh: 1}
    # The session awarded one of the pair, so it counts toward the pair's limit.
    assert (await pair_counters(db, [fresh]))[ordered(user, fresh)] == 1
    await assert_counters_dated_by_their_awards(db, [user], [*ids, last])


# --- Caps under races ------------------------------------------------------------------------------


async def test_thirty_sessions_of_one_pair_confirmed_at_once_with_repeats_award_exactly_the_pair_limit(
    database_url, keys, session_server, sessions, as_user, db
):
    me, alt = new_id(), new_id()
    created = await asyncio.gather(*(create(sessions, as_user(me), partner=alt) for _ in range(30)))
    ids = [session.session_id for session in created]
    async with capped_reputation(database_url, keys, session_server, pair=3, user=20) as (reputation, _):
        calls = [
            confirm(reputation, as_user(who), session_id)
            for i, session_id in enumerate(ids)
            for who, repeats in ((me, 2 + i % 2), (alt, 3 - i % 2))
            for _ in range(repeats)
        ]
        assert len(calls) == 150
        replies = await together(calls)

        async def all_completed() -> bool:
            return await session_statuses(db, ids) == Counter({"completed": 30})

        await wait_for(all_completed, within=20, what="all 30 sessions to complete")
        looked = {s: await get_confirmation(reputation, as_user(alt), s) for s in ids}

    events = await ledger(db, ids)
    assert len(events) == 60
    awarded = sorted(s for s in ids if events[(s, me)] == (AWARD, 1))
    # The pair's cap withholds both points at once: each session awards both or neither.
    assert all(events[(s, alt)] == events[(s, me)] for s in ids)
    assert len(awarded) == 3, f"{len(awarded)} sessions awarded, the limit is 3"
    assert Counter(events.values()) == Counter({(AWARD, 1): 6, (CAPPED_PAIR, 0): 54})
    assert await scores(db, [me, alt]) == {me: (3, 3), alt: (3, 3)}
    assert await event_sums(db, [me, alt]) == {me: 3, alt: 3}
    assert await pair_counters(db, [me, alt]) == {ordered(me, alt): 3}
    assert await user_counters(db, [me, alt]) == {me: 3, alt: 3}
    await assert_counters_dated_by_their_awards(db, [me, alt], ids)

    both = sorted([me, alt])
    for session_id, seen in looked.items():
        expected = (True, []) if session_id in awarded else (False, both)
        assert (seen.reputation_awarded, list(seen.capped_user_ids)) == expected, session_id
        assert (seen.both_confirmed, seen.completion_pending) == (True, False)
    # A reply that saw both confirmations tells the same story as the ledger.
    for reply in replies:
        if reply.both_confirmed:
            expected = (True, []) if reply.session_id in awarded else (False, both)
            assert (reply.reputation_awarded, list(reply.capped_user_ids)) == expected
    stored = await db.fetch(
        "SELECT session_id::text, awarded_user_ids::text[] AS awarded, capped_user_ids::text[] AS capped "
        "FROM reputation.paired_sessions WHERE session_id = ANY($1::uuid[])",
        ids,
    )
    assert sorted(r["session_id"] for r in stored if r["awarded"] == both and r["capped"] == []) == awarded
    assert sum(1 for r in stored if r["awarded"] == [] and r["capped"] == both) == 27


async def test_concurrent_awards_from_twelve_partners_never_take_a_user_past_the_daily_limit(
    database_url, keys, session_server, sessions, as_user, db
):
    user = new_id()
    partners = [new_id() for _ in range(12)]
    created = await asyncio.gather(*(create(sessions, as_user(user), partner=p) for p in partners))
    ids = [session.session_id for session in created]
    async with capped_reputation(database_url, keys, session_server, pair=0, user=5) as (reputation, _):
        # Half the sessions see the user confirm second, half the partner.
        calls = [
            confirm(reputation, as_user(who), session_id)
            for session_id, partner in zip(ids, partners, strict=True)
            for who in (user, partner)
            for _ in range(2)
        ]
        replies = await together(calls)
        mine = await get_reputation(reputation, as_user(user))

    events = await ledger(db, ids)
    assert len(events) == 24
    mine_by_session = Counter(events[(s, user)] for s in ids)
    assert mine_by_session == Counter({(AWARD, 1): 5, (CAPPED_USER, 0): 7}), mine_by_session
    # Each partner is far from any limit: all twelve earn their point.
    assert all(events[(s, p)] == (AWARD, 1) for s, p in zip(ids, partners, strict=True))
    assert (mine.score, mine.confirmed_sessions) == (5, 5)
    assert await scores(db, [user]) == {user: (5, 5)}
    assert await scores(db, partners) == dict.fromkeys(partners, (1, 1))
    assert await event_sums(db, [user, *partners]) == {user: 5, **dict.fromkeys(partners, 1)}
    assert await user_counters(db, [user, *partners]) == {user: 5, **dict.fromkeys(partners, 1)}
    # Every session awarded at least the partner: each counts toward its pair (no limit here).
    assert await pair_counters(db, [user]) == {ordered(user, p): 1 for p in partners}
    await assert_counters_dated_by_their_awards(db, [user], ids)
    assert await session_statuses(db, ids) == Counter({"completed": 12})
    for reply in replies:
        if reply.both_confirmed:
            capped = events[(reply.session_id, user)][0] == CAPPED_USER
            assert reply.reputation_awarded is True
            assert list(reply.capped_user_ids) == ([user] if capped else [])


# --- Exactly once, with the caps on ----------------------------------------------------------------


async def test_fifty_sessions_confirmed_by_both_at_once_three_times_each_award_exactly_once_with_caps_on(
    database_url, keys, session_server, sessions, as_user, db
):
    pairs = [(new_id(), new_id()) for _ in range(50)]
    created = await asyncio.gather(*(create(sessions, as_user(o), partner=b) for o, b in pairs))
    ids = [session.session_id for session in created]
    async with capped_reputation(database_url, keys, session_server, pair=3, user=20) as (reputation, _):
        calls = [
            confirm(reputation, as_user(user), session_id)
            for session_id, pair in zip(ids, pairs, strict=True)
            for user in pair
            for _ in range(3)
        ]
        replies = await together(calls)

    users = [user for pair in pairs for user in pair]
    assert await scores(db, users) == dict.fromkeys(users, (1, 1))
    events = await ledger(db, ids)
    assert Counter(events.values()) == Counter({(AWARD, 1): 100})
    assert await session_statuses(db, ids) == Counter({"completed": 50})
    await wait_for_delivery_marks(db, ids)
    assert await user_counters(db, users) == dict.fromkeys(users, 1)
    assert await pair_counters(db, users) == {ordered(a, b): 1 for a, b in pairs}
    awarded = {r.session_id for r in replies if r.both_confirmed and r.reputation_awarded}
    assert awarded == set(ids)
    assert all(list(r.capped_user_ids) == [] for r in replies)


# --- Settled details -------------------------------------------------------------------------------


async def test_a_session_that_awarded_neither_does_not_count_toward_the_pairs_limit(
    database_url, keys, session_server, sessions, as_user, db
):
    me, alt = new_id(), new_id()
    async with capped_reputation(database_url, keys, session_server, pair=2, user=1) as (reputation, _):
        ids, replies = [], []
        for _ in range(3):
            session_id, _, _ = await paired(sessions, as_user, me, alt)
            await confirm(reputation, as_user(me), session_id)
            replies.append(await confirm(reputation, as_user(alt), session_id))
            ids.append(session_id)

    # The first session takes both to the user limit; the next two each user's cap withholds
    # (the pair, at 1 of 2, never reaches its limit: sessions that awarded nobody do not count).
    both = sorted([me, alt])
    assert [(r.reputation_awarded, list(r.capped_user_ids)) for r in replies] == [
        (True, []),
        (False, both),
        (False, both),
    ]
    events = await ledger(db, ids)
    assert [events[(s, me)] for s in ids] == [(AWARD, 1), (CAPPED_USER, 0), (CAPPED_USER, 0)]
    assert [events[(s, alt)] for s in ids] == [(AWARD, 1), (CAPPED_USER, 0), (CAPPED_USER, 0)]
    assert await pair_counters(db, [me, alt]) == {ordered(me, alt): 1}
    assert await user_counters(db, [me, alt]) == {me: 1, alt: 1}
    assert await scores(db, [me, alt]) == {me: (1, 1), alt: (1, 1)}
    assert await session_statuses(db, ids) == Counter({"completed": 3})


async def test_a_reversed_award_frees_no_slot_under_the_pairs_limit(
    database_url, keys, session_server, sessions, as_user, db
):
    me, alt = new_id(), new_id()
    moderator = service_metadata(keys.service, roles=[MODERATE_ROLE])
    async with capped_reputation(database_url, keys, session_server, pair=1, user=0) as stubs:
        reputation, moderation = stubs
        first, _, _ = await paired(sessions, as_user, me, alt)
        await confirm(reputation, as_user(me), first)
        assert (await confirm(reputation, as_user(alt), first)).reputation_awarded
        request = rpb.ReverseSessionAwardsRequest(session_id=first, reason="serial confirmation")
        reversed_ = await moderation.ReverseSessionAwards(request, metadata=moderator)
        assert sorted((e.user_id, e.delta) for e in reversed_.events) == sorted([(me, -1), (alt, -1)])

        second, _, _ = await paired(sessions, as_user, alt, me)
        await confirm(reputation, as_user(alt), second)
        reply = await confirm(reputation, as_user(me), second)
        mine = await get_reputation(reputation, as_user(me))

    assert (reply.reputation_awarded, list(reply.capped_user_ids)) == (False, sorted([me, alt]))
    assert (await ledger(db, [second])) == {(second, me): (CAPPED_PAIR, 0), (second, alt): (CAPPED_PAIR, 0)}
    assert (mine.score, mine.confirmed_sessions) == (0, 0)
    assert await event_sums(db, [me, alt]) == {me: 0, alt: 0}
    assert await pair_counters(db, [me, alt]) == {ordered(me, alt): 1}
    assert await user_counters(db, [me, alt]) == {me: 1, alt: 1}
