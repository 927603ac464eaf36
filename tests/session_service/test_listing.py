"""ListSessions: the caller's sessions as owner or partner, newest first, keyset pages, status filter."""

from __future__ import annotations

import asyncio
import itertools

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import create, expect_error, list_sessions, new_id, walk

CHUNK = 40


async def create_many(sessions, md, count: int, partner: str = "") -> list[pb.Session]:
    created: list[pb.Session] = []
    for start in range(0, count, CHUNK):
        size = min(CHUNK, count - start)
        created += await asyncio.gather(*(create(sessions, md, partner=partner) for _ in range(size)))
    return created


def sort_key(session: pb.Session) -> tuple[int, str]:
    return session.create_time.ToMicroseconds(), session.session_id


def assert_newest_first(listed: list[pb.Session]) -> None:
    keys = [sort_key(s) for s in listed]
    for newer, older in itertools.pairwise(keys):
        # create_time non-increasing; equal times ordered by session_id descending; no repeats.
        assert newer > older, (newer, older)


async def test_walking_all_pages_returns_every_session_once_newest_first(sessions, as_user):
    user, other = new_id(), new_id()
    created, _ = await asyncio.gather(
        create_many(sessions, as_user(user), 120), create_many(sessions, as_user(other), 15)
    )

    pages = await walk(list_sessions, sessions, as_user(user), page_size=50)

    assert [len(p.sessions) for p in pages] == [50, 50, 20]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    listed = [s for p in pages for s in p.sessions]
    ids = [s.session_id for s in listed]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == {s.session_id for s in created}
    assert_newest_first(listed)
    assert {s.user_id for s in listed} == {user}
    by_id = {s.session_id: s for s in created}
    assert all(s == by_id[s.session_id] for s in listed)


async def test_sessions_where_the_caller_is_the_partner_are_listed_and_others_never(sessions, as_user):
    user, buddy, stranger = new_id(), new_id(), new_id()
    owned = await create_many(sessions, as_user(user), 3)
    partnered = await create_many(sessions, as_user(buddy), 4, partner=user)
    buddy_solo = await create_many(sessions, as_user(buddy), 2)
    stranger_with_buddy = await create(sessions, as_user(stranger), partner=buddy)

    listed = [s for p in await walk(list_sessions, sessions, as_user(user), page_size=2) for s in p.sessions]

    assert {s.session_id for s in listed} == {s.session_id for s in owned + partnered}
    assert len(listed) == 7
    assert_newest_first(listed)
    assert all(user in (s.user_id, s.partner_user_id) for s in listed)
    buddy_listed = {
        s.session_id for p in await walk(list_sessions, sessions, as_user(buddy)) for s in p.sessions
    }
    assert buddy_listed == {s.session_id for s in partnered + buddy_solo + [stranger_with_buddy]}
    nobody = await list_sessions(sessions, as_user(new_id()))
    assert list(nobody.sessions) == [] and nobody.next_page_token == ""


async def test_sessions_created_between_pages_do_not_shift_the_next_page(sessions, as_user):
    user = new_id()
    md = as_user(user)
    created = await create_many(sessions, md, 10)
    first = await list_sessions(sessions, md, 4)

    newer = await create_many(sessions, md, 5)
    rest = [
        s
        for p in await walk(list_sessions, sessions, md, page_size=4, page_token=first.next_page_token)
        for s in p.sessions
    ]

    seen = [s.session_id for s in list(first.sessions) + rest]
    assert len(seen) == len(set(seen)) == 10
    assert set(seen) == {s.session_id for s in created}
    assert not set(seen) & {s.session_id for s in newer}


async def test_page_size_zero_means_fifty_and_above_two_hundred_means_two_hundred(sessions, as_user):
    user = new_id()
    md = as_user(user)
    created = await create_many(sessions, md, 205)

    default = await list_sessions(sessions, md, 0)
    capped = await list_sessions(sessions, md, 500)
    tail = await list_sessions(sessions, md, 500, capped.next_page_token)
    exact = await list_sessions(sessions, md, 200)

    assert len(default.sessions) == 50 and default.next_page_token
    assert len(capped.sessions) == 200 and capped.next_page_token
    assert len(tail.sessions) == 5 and tail.next_page_token == ""
    assert len(exact.sessions) == 200
    listed = list(capped.sessions) + list(tail.sessions)
    assert {s.session_id for s in listed} == {s.session_id for s in created}
    assert_newest_first(listed)
    assert list(default.sessions) == list(capped.sessions)[:50]


@pytest.mark.parametrize("page_size", [-1, -50, -(2**31)])
async def test_a_negative_page_size_is_an_invalid_argument(sessions, as_user, page_size):
    error = await expect_error(
        list_sessions(sessions, as_user(new_id()), page_size),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "page_size" in error.fields


async def sessions_in_every_status(sessions, md):
    """Two sessions in each status: ids by status."""
    active = await create_many(sessions, md, 2)
    paused = await create_many(sessions, md, 2)
    completed = await create_many(sessions, md, 2)
    for s in paused:
        await sessions.PauseSession(pb.PauseSessionRequest(session_id=s.session_id), metadata=md)
    for s in completed:
        await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=s.session_id), metadata=md)
    return {
        pb.SESSION_STATUS_ACTIVE: {s.session_id for s in active},
        pb.SESSION_STATUS_PAUSED: {s.session_id for s in paused},
        pb.SESSION_STATUS_COMPLETED: {s.session_id for s in completed},
    }


@pytest.mark.parametrize(
    "status",
    [
        pb.SESSION_STATUS_ACTIVE,
        pb.SESSION_STATUS_PAUSED,
        pb.SESSION_STATUS_COMPLETED,
        pb.SESSION_STATUS_UNSPECIFIED,
    ],
    ids=["active", "paused", "completed", "unset"],
)
async def test_the_status_filter_lists_only_sessions_in_that_status(sessions, as_user, status):
    user, buddy = new_id(), new_id()
    md = as_user(user)
    by_status = await sessions_in_every_status(sessions, md)
    # A paired session in which the caller is partner, paused by the partner, counts as well.
    paired = await create(sessions, as_user(buddy), partner=user)
    await sessions.PauseSession(pb.PauseSessionRequest(session_id=paired.session_id), metadata=md)
    by_status[pb.SESSION_STATUS_PAUSED].add(paired.session_id)
    expected = (
        set().union(*by_status.values()) if status == pb.SESSION_STATUS_UNSPECIFIED else by_status[status]
    )

    listed = [
        s for p in await walk(list_sessions, sessions, md, page_size=1, status=status) for s in p.sessions
    ]

    assert {s.session_id for s in listed} == expected
    assert len(listed) == len(expected)
    assert_newest_first(listed)
    if status != pb.SESSION_STATUS_UNSPECIFIED:
        assert {s.status for s in listed} == {status}


async def test_an_unknown_status_is_an_invalid_argument(sessions, as_user):
    error = await expect_error(
        list_sessions(sessions, as_user(new_id()), status=42),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "status" in error.fields


@pytest.mark.parametrize(
    "misuse",
    [
        "ACTIVE token with COMPLETED",
        "ACTIVE token with no status",
        "unfiltered token with ACTIVE",
        "another user's token",
        "garbage",
        "tampered",
    ],
)
async def test_a_page_token_only_works_with_its_own_status_and_caller(sessions, as_user, misuse):
    alice, bob = new_id(), new_id()
    await asyncio.gather(create_many(sessions, as_user(alice), 3), create_many(sessions, as_user(bob), 3))
    active_token = (
        await list_sessions(sessions, as_user(alice), 1, status=pb.SESSION_STATUS_ACTIVE)
    ).next_page_token
    any_token = (await list_sessions(sessions, as_user(alice), 1)).next_page_token
    assert active_token and any_token
    tampered = any_token[:4] + ("B" if any_token[4] != "B" else "C") + any_token[5:]

    caller, token, status = {
        "ACTIVE token with COMPLETED": (alice, active_token, pb.SESSION_STATUS_COMPLETED),
        "ACTIVE token with no status": (alice, active_token, pb.SESSION_STATUS_UNSPECIFIED),
        "unfiltered token with ACTIVE": (alice, any_token, pb.SESSION_STATUS_ACTIVE),
        "another user's token": (bob, any_token, pb.SESSION_STATUS_UNSPECIFIED),
        "garbage": (alice, "garbage-token", pb.SESSION_STATUS_UNSPECIFIED),
        "tampered": (alice, tampered, pb.SESSION_STATUS_UNSPECIFIED),
    }[misuse]
    error = await expect_error(
        list_sessions(sessions, as_user(caller), 1, token, status),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "page_token" in error.fields
    # Used as issued, both tokens still work.
    assert len((await list_sessions(sessions, as_user(alice), 1, any_token)).sessions) == 1
    active_page = await list_sessions(sessions, as_user(alice), 1, active_token, pb.SESSION_STATUS_ACTIVE)
    assert len(active_page.sessions) == 1


async def test_sessions_created_in_the_same_microsecond_are_ordered_by_session_id_descending(
    sessions, as_user, db
):
    user = new_id()
    md = as_user(user)
    created = await create_many(sessions, md, 11)
    # Ties cannot be forced through the API: give most sessions one create_time in the database.
    tied = [s.session_id for s in created[:9]]
    await db.execute(
        "UPDATE sessions.sessions SET create_time = '2030-01-01T00:00:00.123456Z' "
        "WHERE session_id = ANY($1::uuid[])",
        tied,
    )

    pages = await walk(list_sessions, sessions, md, page_size=2)
    listed = [s for p in pages for s in p.sessions]

    assert [len(p.sessions) for p in pages] == [2, 2, 2, 2, 2, 1]
    assert [s.session_id for s in listed[:9]] == sorted(tied, reverse=True)
    assert {s.create_time.ToMicroseconds() for s in listed[:9]} == {listed[0].create_time.ToMicroseconds()}
    assert {s.session_id for s in listed} == {s.session_id for s in created}
    assert_newest_first(listed)
