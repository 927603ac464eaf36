"""The confirmation window: a half-confirmed session is closed without awards when the other
participant does not confirm within CONFIRMATION_WINDOW_SECONDS, by a sweeper (two replicas: closed
once) or inline by the next confirmation; `expire_time` while it is open; a late confirmation is
CONFIRMATION_WINDOW_CLOSED.

Each test runs on a database of its own: a short window would otherwise close other tests'
half-confirmed sessions, and no other relay or sweeper touches these rows, so every count is exact."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import (
    confirm,
    create,
    event_lines,
    expect_error,
    get,
    get_confirmation,
    get_reputation,
    holds,
    list_events,
    new_id,
    pause,
    rich_error,
    session_statuses,
    stamp,
    user_metadata,
    wait_for,
    wait_for_delivery_marks,
)
from tests.servers import reputation_config_for, running_reputation

DOMAIN = "interview.reputation"
CLOSED = "PARTNER_DID_NOT_CONFIRM"


async def snapshot(db: asyncpg.Pool, session_id: str, users: list[str]) -> dict[str, list[dict]]:
    """Every reputation row of the session and its participants."""
    rows = {}
    for table in ("paired_sessions", "confirmations", "events", "outbox", "confirmation_requests"):
        found = await db.fetch(
            f"SELECT * FROM reputation.{table} WHERE session_id = $1 ORDER BY 1, 2", session_id
        )
        rows[table] = [dict(r) for r in found]
    for table in ("scores", "user_day_awards"):
        found = await db.fetch(
            f"SELECT * FROM reputation.{table} WHERE user_id = ANY($1::uuid[]) ORDER BY 1", users
        )
        rows[table] = [dict(r) for r in found]
    return rows


async def events_of(db: asyncpg.Pool, session_ids: list[str]) -> list[tuple[str, str, int, str]]:
    rows = await db.fetch(
        "SELECT session_id::text, user_id::text, delta, reason FROM reputation.events "
        "WHERE session_id = ANY($1::uuid[]) ORDER BY 1, 2",
        session_ids,
    )
    return [(r["session_id"], r["user_id"], r["delta"], r["reason"]) for r in rows]


async def outbox_of(db: asyncpg.Pool, session_ids: list[str]) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT session_id::text, attempts, deliver_time, dead_time FROM reputation.outbox "
        "WHERE session_id = ANY($1::uuid[])",
        session_ids,
    )
    return {r["session_id"]: r for r in rows}


def swept(caplog: pytest.LogCaptureFixture) -> int:
    """How many sessions the sweepers say they closed."""
    return sum(line["sessions"] for line in event_lines(caplog, "confirmation_windows_closed"))


async def db_clock_past_window(db: asyncpg.Pool, session_id: str, window: float) -> bool:
    """Whether the database clock is past the session's first confirmation plus `window`."""
    return bool(
        await db.fetchval(
            "SELECT now() >= first_confirm_time + make_interval(secs => $2) "
            "FROM reputation.paired_sessions WHERE session_id = $1",
            session_id,
            window,
        )
    )


def assert_closed(reply, session_id: str, confirmer: str, status, pending: bool) -> None:
    assert reply.session_id == session_id
    assert (reply.closed_unconfirmed, reply.HasField("expire_time")) == (True, False)
    assert list(reply.confirmed_user_ids) == [confirmer]
    assert (reply.both_confirmed, reply.reputation_awarded, list(reply.capped_user_ids)) == (False, False, [])
    assert (reply.session_status, reply.completion_pending, reply.reversed) == (status, pending, False)


# --- expire_time while the window is open ----------------------------------------------------------


async def test_expire_time_is_the_first_confirmation_plus_the_window_and_only_while_half_confirmed(
    stack, keys, jwt_settings
):
    owner, partner = new_id(), new_id()
    md = {user: user_metadata(jwt_settings, user) for user in (owner, partner)}
    window = 60.0
    config = reputation_config_for(stack.url, keys, stack.session_target, confirmation_window=window)
    async with running_reputation(config) as (_, reputation):
        session_id = (await create(stack.sessions, md[owner], partner=partner)).session_id
        untouched = await get_confirmation(reputation, md[partner], session_id)
        assert not untouched.HasField("expire_time")

        before = datetime.now(UTC)
        first = await confirm(reputation, md[owner], session_id)
        after = datetime.now(UTC)
        first_time = await stack.db.fetchval(
            "SELECT first_confirm_time FROM reputation.paired_sessions WHERE session_id = $1", session_id
        )
        expires = stamp(first.expire_time)
        assert first.HasField("expire_time") and not first.closed_unconfirmed
        assert expires == first_time + timedelta(seconds=window)
        assert (
            before - timedelta(seconds=1)
            <= expires - timedelta(seconds=window)
            <= after + timedelta(seconds=1)
        )

        # Everyone sees the same deadline; a repeat by the confirmer does not move it.
        repeat = await confirm(reputation, md[owner], session_id)
        seen = [await get_confirmation(reputation, md[user], session_id) for user in (owner, partner)]
        for reply in (repeat, *seen):
            assert stamp(reply.expire_time) == expires
            assert (list(reply.confirmed_user_ids), reply.both_confirmed) == ([owner], False)

        # Once both confirmed the window is moot: no expire_time any more.
        second = await confirm(reputation, md[partner], session_id)
        after_all = await get_confirmation(reputation, md[owner], session_id)
    for reply in (second, after_all):
        assert (reply.both_confirmed, reply.reputation_awarded, reply.closed_unconfirmed) == (
            True,
            True,
            False,
        )
        assert not reply.HasField("expire_time")


# --- The sweeper -----------------------------------------------------------------------------------


async def test_two_sweepers_close_a_half_confirmed_session_once_without_any_call_and_complete_it(
    stack, keys, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="reputation_service")
    owner, partner = new_id(), new_id()
    md = {user: user_metadata(jwt_settings, user) for user in (owner, partner)}
    config = reputation_config_for(
        stack.url, keys, stack.session_target, confirmation_window=2, relay_interval=0.2
    )
    async with AsyncExitStack() as servers:
        stubs = [(await servers.enter_async_context(running_reputation(config)))[1] for _ in range(2)]
        session_id = (await create(stack.sessions, md[owner], partner=partner)).session_id
        first = await confirm(stubs[0], md[owner], session_id)
        assert first.HasField("expire_time") and not first.closed_unconfirmed

        async def completed() -> bool:
            return await session_statuses(stack.db, [session_id]) == Counter({"completed": 1})

        await wait_for(completed, within=15, what="a sweeper to close the session and a relay to complete it")

        async def delivered() -> bool:  # the row is marked right after the session service answers
            row = (await outbox_of(stack.db, [session_id])).get(session_id)
            return row is not None and row["deliver_time"] is not None

        await wait_for(delivered, within=5, what="the outbox row to be marked delivered")
        close_time = await stack.db.fetchval(
            "SELECT close_time FROM reputation.paired_sessions WHERE session_id = $1", session_id
        )
        assert close_time is not None
        assert (await get(stack.sessions, md[partner], session_id)).status == pb.SESSION_STATUS_COMPLETED
        assert await events_of(stack.db, [session_id]) == [(session_id, owner, 0, CLOSED)]
        row = (await outbox_of(stack.db, [session_id]))[session_id]
        assert (row["attempts"], row["dead_time"]) == (1, None)

        for user in (owner, partner):
            for stub in stubs:
                assert_closed(
                    await get_confirmation(stub, md[user], session_id),
                    session_id,
                    owner,
                    pb.SESSION_STATUS_COMPLETED,
                    pending=False,
                )
        owner_reputation = await get_reputation(stubs[1], md[owner])
        assert (owner_reputation.score, owner_reputation.confirmed_sessions) == (0, 0)
        (event,) = (await list_events(stubs[1], md[partner], owner)).events
        assert (event.user_id, event.session_id, event.delta, event.reason) == (owner, session_id, 0, CLOSED)

        # Late: the partner is refused and nothing is written; the confirmer gets the closed state.
        before = await snapshot(stack.db, session_id, [owner, partner])
        for stub in stubs:
            error = await expect_error(
                confirm(stub, md[partner], session_id, request_id=new_id()),
                grpc.StatusCode.FAILED_PRECONDITION,
                "CONFIRMATION_WINDOW_CLOSED",
            )
            assert error.domain == DOMAIN, error
            assert_closed(
                await confirm(stub, md[owner], session_id, request_id=new_id()),
                session_id,
                owner,
                pb.SESSION_STATUS_COMPLETED,
                pending=False,
            )
        assert await snapshot(stack.db, session_id, [owner, partner]) == before

    # Closed once, delivered once, across both replicas.
    assert swept(caplog) == 1
    assert Counter(line["session_id"] for line in event_lines(caplog, "delivered")) == Counter(
        {session_id: 1}
    )
    assert (
        await stack.db.fetchval(
            "SELECT close_time FROM reputation.paired_sessions WHERE session_id = $1", session_id
        )
        == close_time
    )
    assert len(await events_of(stack.db, [session_id])) == 1


async def test_two_sweepers_close_many_expired_sessions_each_once_and_leave_open_and_decided_ones(
    stack, keys, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="reputation_service")
    pairs = [(new_id(), new_id()) for _ in range(16)]
    md = {user: user_metadata(jwt_settings, user) for pair in pairs for user in pair}
    config = reputation_config_for(
        stack.url, keys, stack.session_target, confirmation_window=2, relay_interval=0.2
    )
    async with AsyncExitStack() as servers:
        stubs = [(await servers.enter_async_context(running_reputation(config)))[1] for _ in range(2)]
        ids = [(await create(stack.sessions, md[o], partner=p)).session_id for o, p in pairs]
        # Twelve half-confirmed (by either side), two confirmed by both, two never confirmed.
        confirmers = {}
        for i, (session_id, (owner, partner)) in enumerate(zip(ids[:12], pairs[:12], strict=True)):
            confirmers[session_id] = owner if i % 2 else partner
            await confirm(stubs[i % 2], md[confirmers[session_id]], session_id)
        for session_id, (owner, partner) in zip(ids[12:14], pairs[12:14], strict=True):
            await confirm(stubs[0], md[owner], session_id)
            assert (await confirm(stubs[1], md[partner], session_id)).reputation_awarded
        half = ids[:12]

        async def all_completed() -> bool:
            return await session_statuses(stack.db, ids[:14]) == Counter({"completed": 14})

        await wait_for(
            all_completed, within=15, what="the sweepers to close the twelve and the relays to deliver"
        )

        async def all_delivered() -> bool:
            rows = await outbox_of(stack.db, ids)
            return len(rows) == 14 and all(r["deliver_time"] is not None for r in rows.values())

        await wait_for(all_delivered, within=5, what="every outbox row to be marked delivered")

    assert swept(caplog) == 12
    assert await events_of(stack.db, half) == sorted((s, confirmers[s], 0, CLOSED) for s in half)
    assert {r["attempts"] for r in (await outbox_of(stack.db, half)).values()} == {1}
    delivered = Counter(line["session_id"] for line in event_lines(caplog, "delivered"))
    assert {s: delivered[s] for s in ids[:14]} == dict.fromkeys(ids[:14], 1)
    # The decided sessions keep their awards and were never closed; the unconfirmed ones are untouched.
    assert [(e[2], e[3]) for e in await events_of(stack.db, ids[12:14])] == [(1, "MUTUAL_CONFIRMATION")] * 4
    closed = await stack.db.fetch(
        "SELECT session_id::text FROM reputation.paired_sessions WHERE close_time IS NOT NULL"
    )
    assert sorted(r["session_id"] for r in closed) == sorted(half)
    assert await session_statuses(stack.db, ids[14:]) == Counter({"active": 2})


async def test_a_session_paused_after_the_first_confirmation_is_closed_and_completed_all_the_same(
    stack, keys, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="reputation_service")
    owner, partner = new_id(), new_id()
    md = {user: user_metadata(jwt_settings, user) for user in (owner, partner)}
    config = reputation_config_for(
        stack.url, keys, stack.session_target, confirmation_window=2, relay_interval=0.2
    )
    async with running_reputation(config) as (_, reputation):
        session_id = (await create(stack.sessions, md[owner], partner=partner)).session_id
        first = await confirm(reputation, md[partner], session_id)
        await pause(stack.sessions, md[owner], session_id)
        seen = await get_confirmation(reputation, md[owner], session_id)
        assert seen.session_status == pb.SESSION_STATUS_PAUSED
        assert seen.expire_time == first.expire_time and not seen.closed_unconfirmed

        async def completed() -> bool:
            return await session_statuses(stack.db, [session_id]) == Counter({"completed": 1})

        await wait_for(completed, within=15, what="the paused session to be closed and completed")

        async def delivered() -> bool:
            row = (await outbox_of(stack.db, [session_id])).get(session_id)
            return row is not None and row["deliver_time"] is not None

        await wait_for(delivered, within=5, what="the outbox row to be marked delivered")
        assert_closed(
            await get_confirmation(reputation, md[owner], session_id),
            session_id,
            partner,
            pb.SESSION_STATUS_COMPLETED,
            pending=False,
        )
    assert await events_of(stack.db, [session_id]) == [(session_id, partner, 0, CLOSED)]
    assert swept(caplog) == 1


# --- Closed inline ---------------------------------------------------------------------------------


@pytest.mark.parametrize("first_back", ["partner", "confirmer"])
async def test_after_the_window_passed_the_next_confirmation_closes_it_inline_before_any_sweeper(
    stack, keys, jwt_settings, caplog, first_back
):
    caplog.set_level(logging.INFO, logger="reputation_service")
    owner, partner = new_id(), new_id()
    md = {user: user_metadata(jwt_settings, user) for user in (owner, partner)}
    # The sweeper and the relay pass once at start, then not for 30 s: whatever closes the
    # session within this test is the confirmation's own transaction.
    config = reputation_config_for(
        stack.url, keys, stack.session_target, confirmation_window=1, relay_interval=30
    )
    async with running_reputation(config) as (_, reputation):
        session_id = (await create(stack.sessions, md[owner], partner=partner)).session_id
        await confirm(reputation, md[owner], session_id)

        async def passed() -> bool:
            return await db_clock_past_window(stack.db, session_id, 1)

        await wait_for(passed, within=10, what="the one-second window to pass")
        assert (await get_confirmation(reputation, md[owner], session_id)).closed_unconfirmed is False

        if first_back == "partner":
            error = await expect_error(
                confirm(reputation, md[partner], session_id, request_id=new_id()),
                grpc.StatusCode.FAILED_PRECONDITION,
                "CONFIRMATION_WINDOW_CLOSED",
            )
            assert error.domain == DOMAIN, error
        else:
            reply = await confirm(reputation, md[owner], session_id)
            assert_closed(reply, session_id, owner, pb.SESSION_STATUS_ACTIVE, pending=True)

        assert swept(caplog) == 0
        assert await events_of(stack.db, [session_id]) == [(session_id, owner, 0, CLOSED)]
        confirmed = await stack.db.fetch(
            "SELECT user_id::text FROM reputation.confirmations WHERE session_id = $1", session_id
        )
        assert [r["user_id"] for r in confirmed] == [owner]
        assert await stack.db.fetchval("SELECT count(*) FROM reputation.confirmation_requests") == 0
        row = (await outbox_of(stack.db, [session_id]))[session_id]
        assert (row["deliver_time"], row["dead_time"]) == (None, None)  # for the relay, in its time

        # Either way, from now on: the confirmer sees the closed state, the partner is refused.
        assert_closed(
            await confirm(reputation, md[owner], session_id),
            session_id,
            owner,
            pb.SESSION_STATUS_ACTIVE,
            pending=True,
        )
        assert_closed(
            await get_confirmation(reputation, md[partner], session_id),
            session_id,
            owner,
            pb.SESSION_STATUS_ACTIVE,
            pending=True,
        )
        error = await expect_error(
            confirm(reputation, md[partner], session_id),
            grpc.StatusCode.FAILED_PRECONDITION,
            "CONFIRMATION_WINDOW_CLOSED",
        )
        assert error.domain == DOMAIN, error
        assert await events_of(stack.db, [session_id]) == [(session_id, owner, 0, CLOSED)]
        assert swept(caplog) == 0


# --- The window's edge, raced ----------------------------------------------------------------------


async def test_late_confirmations_racing_two_sweepers_at_the_windows_edge_either_award_or_close_never_both(
    stack, keys, jwt_settings
):
    pairs = [(new_id(), new_id()) for _ in range(30)]
    md = {user: user_metadata(jwt_settings, user) for pair in pairs for user in pair}
    config = reputation_config_for(
        stack.url, keys, stack.session_target, confirmation_window=1, relay_interval=0.05
    )
    async with AsyncExitStack() as servers:
        stubs = [(await servers.enter_async_context(running_reputation(config)))[1] for _ in range(2)]
        ids = [(await create(stack.sessions, md[o], partner=p)).session_id for o, p in pairs]
        # First confirmations paced 50 ms apart, so the windows close one after another.
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, (session_id, (owner, _)) in enumerate(zip(ids, pairs, strict=True)):
            await wait_for(lambda i=i: holds(loop.time() >= start + 0.05 * i), within=10, what="its turn")
            await confirm(stubs[i % 2], md[owner], session_id)

        # The partners come back as the middle session's window closes: the earliest windows have
        # passed (closed by a sweeper or inline), the latest have not, those between race.
        async def middle_passed() -> bool:
            return await db_clock_past_window(stack.db, ids[len(ids) // 2], 1)

        await wait_for(middle_passed, within=10, what="the middle session's window to pass", interval=0.01)
        outcomes = await asyncio.gather(
            *(
                confirm(stubs[i % 2], md[partner], session_id)
                for i, (session_id, (_, partner)) in enumerate(zip(ids, pairs, strict=True))
            ),
            return_exceptions=True,
        )

        async def all_completed() -> bool:
            return await session_statuses(stack.db, ids) == Counter({"completed": len(ids)})

        await wait_for(all_completed, within=15, what="every session to be completed, awarded or closed")

    refused = set()
    for session_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, grpc.aio.AioRpcError), outcome
            error = rich_error(outcome)
            assert (error.code, error.reason, error.domain) == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "CONFIRMATION_WINDOW_CLOSED",
                DOMAIN,
            )
            refused.add(session_id)
        else:
            assert (outcome.both_confirmed, outcome.reputation_awarded, outcome.closed_unconfirmed) == (
                True,
                True,
                False,
            )
    rows = {
        r["session_id"]: r
        for r in await stack.db.fetch(
            "SELECT session_id::text, award_time, close_time, "
            "(SELECT count(*) FROM reputation.confirmations c WHERE c.session_id = p.session_id) "
            "AS confirmed "
            "FROM reputation.paired_sessions p WHERE session_id = ANY($1::uuid[])",
            ids,
        )
    }
    events = Counter((e[0], e[3]) for e in await events_of(stack.db, ids))
    for session_id in ids:
        row = rows[session_id]
        if session_id in refused:
            assert (row["close_time"] is not None, row["award_time"], row["confirmed"]) == (True, None, 1)
            assert events[(session_id, CLOSED)] == 1
            assert events[(session_id, "MUTUAL_CONFIRMATION")] == 0
        else:
            assert (row["close_time"], row["award_time"] is not None, row["confirmed"]) == (None, True, 2)
            assert events[(session_id, "MUTUAL_CONFIRMATION")] == 2
            assert events[(session_id, CLOSED)] == 0
    assert sum(events.values()) == len(refused) + 2 * (len(ids) - len(refused))
    assert refused, "no late confirmation was refused: the race was not exercised"
    assert len(refused) < len(ids), "every confirmation was late: the race was not exercised"
    await wait_for_delivery_marks(stack.db, ids)
    print(f"\nwindow edge: {len(refused)} of {len(ids)} late confirmations refused, the rest awarded")
