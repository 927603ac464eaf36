"""RetakeSession and ListRetakes: chains rooted at the original, numbered once each, even under races.

Seed 002 (the REST retake story) lists these tests; each has a gRPC counterpart here:
first retake, second+ retake, retake_number increments, original_session_id propagates,
400 not completed (FAILED_PRECONDITION SESSION_NOT_COMPLETED), 403 unauthorized (PERMISSION_DENIED for
the partner; a stranger gets NOT_FOUND because existence is never leaked), 404 non-existent
(NOT_FOUND SESSION_NOT_FOUND), 400 missing job posting (FAILED_PRECONDITION MISSING_JOB_POSTING), the
database persists the retake, and chain integrity (1 -> 2 -> 3 all pointing at session 1).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import complete, create, expect_error, list_retakes, new_id, retake, walk

DOMAIN = "interview.sessions"


async def completed_session(sessions, md, job_posting_id: str | None = None) -> pb.Session:
    created = await create(sessions, md, job_posting_id=job_posting_id)
    return await complete(sessions, md, created.session_id)


async def completed_paired_session(sessions, internal, as_user, as_service, owner: str, partner: str):
    created = await create(sessions, as_user(owner), partner=partner)
    request = pb.CompletePairedSessionRequest(session_id=created.session_id)
    return await internal.CompletePairedSession(request, metadata=as_service)


async def chain_rows(db, root_id: str):
    return await db.fetch(
        "SELECT session_id::text, retake_number, original_session_id::text FROM sessions.sessions "
        "WHERE COALESCE(original_session_id, session_id) = $1 ORDER BY retake_number",
        root_id,
    )


# --- RetakeSession: success -------------------------------------------------------------------


async def test_retake_of_a_completed_original_starts_an_active_solo_session_in_its_chain(
    sessions, as_user, db
):
    owner, posting = new_id(), new_id()
    original = await completed_session(sessions, as_user(owner), posting)

    taken = await retake(sessions, as_user(owner), original.session_id)

    assert taken.session_id not in ("", original.session_id)
    assert taken.user_id == owner
    assert taken.partner_user_id == ""
    assert taken.job_posting_id == posting
    assert taken.status == pb.SESSION_STATUS_ACTIVE
    assert taken.current_question_number == 0
    assert taken.retake_number == 2
    assert taken.original_session_id == original.session_id
    assert taken.HasField("create_time") and taken.HasField("update_time")
    assert not taken.HasField("complete_time")
    assert taken.create_time.ToMicroseconds() >= original.complete_time.ToMicroseconds()
    # Read back as the owner: the stored session is what RetakeSession returned.
    fetched = await sessions.GetSession(
        pb.GetSessionRequest(session_id=taken.session_id), metadata=as_user(owner)
    )
    assert fetched == taken
    row = await db.fetchrow(
        "SELECT user_id::text, partner_user_id, job_posting_id::text, status, current_question_number, "
        "retake_number, original_session_id::text, complete_time FROM sessions.sessions "
        "WHERE session_id = $1",
        taken.session_id,
    )
    assert dict(row) == {
        "user_id": owner,
        "partner_user_id": None,
        "job_posting_id": posting,
        "status": "active",
        "current_question_number": 0,
        "retake_number": 2,
        "original_session_id": original.session_id,
        "complete_time": None,
    }
    # The original itself is untouched by being retaken.
    again = await sessions.GetSession(
        pb.GetSessionRequest(session_id=original.session_id), metadata=as_user(owner)
    )
    assert again == original


async def test_retake_of_a_retake_points_at_the_root_never_at_its_parent(sessions, as_user, db):
    owner, posting = new_id(), new_id()
    md = as_user(owner)
    root = await completed_session(sessions, md, posting)
    second = await retake(sessions, md, root.session_id)
    await complete(sessions, md, second.session_id)

    third = await retake(sessions, md, second.session_id)

    assert (second.retake_number, second.original_session_id) == (2, root.session_id)
    assert (third.retake_number, third.original_session_id) == (3, root.session_id)
    assert third.original_session_id != second.session_id
    assert third.job_posting_id == posting
    assert third.status == pb.SESSION_STATUS_ACTIVE and third.current_question_number == 0
    rows = await chain_rows(db, root.session_id)
    assert [(r["session_id"], r["retake_number"], r["original_session_id"]) for r in rows] == [
        (root.session_id, 1, None),
        (second.session_id, 2, root.session_id),
        (third.session_id, 3, root.session_id),
    ]


async def test_retake_numbers_increment_along_a_chain_of_retakes(sessions, as_user):
    owner = new_id()
    md = as_user(owner)
    latest = await completed_session(sessions, md)
    root_id = latest.session_id
    numbers = []
    for _ in range(4):
        latest = await retake(sessions, md, latest.session_id)
        numbers.append(latest.retake_number)
        assert latest.original_session_id == root_id
        await complete(sessions, md, latest.session_id)
    assert numbers == [2, 3, 4, 5]


async def test_retaking_an_older_member_of_the_chain_takes_the_chain_s_next_number(sessions, as_user, db):
    owner = new_id()
    md = as_user(owner)
    root = await completed_session(sessions, md)
    second = await retake(sessions, md, root.session_id)
    await complete(sessions, md, second.session_id)

    # The root is retaken again: the number is the highest in the chain + 1, not the source's + 1.
    again = await retake(sessions, md, root.session_id)

    assert (again.retake_number, again.original_session_id) == (3, root.session_id)
    assert [r["retake_number"] for r in await chain_rows(db, root.session_id)] == [1, 2, 3]


async def test_owner_retake_of_a_completed_paired_session_is_a_solo_session(
    sessions, internal, as_user, as_service, db
):
    owner, partner = new_id(), new_id()
    paired = await completed_paired_session(sessions, internal, as_user, as_service, owner, partner)
    assert paired.status == pb.SESSION_STATUS_COMPLETED and paired.partner_user_id == partner

    taken = await retake(sessions, as_user(owner), paired.session_id)

    assert taken.user_id == owner
    assert taken.partner_user_id == ""
    assert taken.job_posting_id == paired.job_posting_id
    assert (taken.retake_number, taken.original_session_id) == (2, paired.session_id)
    assert taken.status == pb.SESSION_STATUS_ACTIVE
    stored = await db.fetchval(
        "SELECT partner_user_id FROM sessions.sessions WHERE session_id = $1", taken.session_id
    )
    assert stored is None
    # The former partner does not participate in the solo retake.
    await expect_error(
        sessions.GetSession(pb.GetSessionRequest(session_id=taken.session_id), metadata=as_user(partner)),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )


# --- RetakeSession: refusals ------------------------------------------------------------------


@pytest.mark.parametrize("status", ["active", "paused", "active retake"])
async def test_retake_of_a_session_that_is_not_completed_is_refused(sessions, as_user, db, status):
    owner = new_id()
    md = as_user(owner)
    if status == "active retake":
        root = await completed_session(sessions, md)
        source = await retake(sessions, md, root.session_id)
        root_id = root.session_id
    else:
        source = await create(sessions, md)
        root_id = source.session_id
        if status == "paused":
            await sessions.PauseSession(pb.PauseSessionRequest(session_id=source.session_id), metadata=md)

    error = await expect_error(
        retake(sessions, md, source.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_NOT_COMPLETED",
    )

    assert error.domain == DOMAIN
    assert error.metadata.get("session_id") == source.session_id
    before = 2 if status == "active retake" else 1
    assert len(await chain_rows(db, root_id)) == before


@pytest.mark.parametrize("completed", [True, False], ids=["completed", "active"])
async def test_partner_of_a_paired_session_may_not_retake_it(
    sessions, internal, as_user, as_service, db, completed
):
    owner, partner = new_id(), new_id()
    if completed:
        paired = await completed_paired_session(sessions, internal, as_user, as_service, owner, partner)
    else:
        # Permission is checked before state: an active paired session gives the same answer.
        paired = await create(sessions, as_user(owner), partner=partner)

    error = await expect_error(
        retake(sessions, as_user(partner), paired.session_id),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )

    assert error.domain == DOMAIN
    assert len(await chain_rows(db, paired.session_id)) == 1


@pytest.mark.parametrize("who", ["another user", "unknown session id"])
async def test_retake_by_a_non_participant_or_of_an_unknown_session_is_not_found(sessions, as_user, db, who):
    owner, stranger = new_id(), new_id()
    original = await completed_session(sessions, as_user(owner))
    target = original.session_id if who == "another user" else new_id()

    error = await expect_error(
        retake(sessions, as_user(stranger), target),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )

    assert error.metadata.get("session_id") == target
    assert len(await chain_rows(db, original.session_id)) == 1
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", stranger) == 0


@pytest.mark.parametrize(
    ("session_id", "request_id", "field"),
    [
        ("", "", "session_id"),
        ("not-a-uuid", "", "session_id"),
        ("VALID", "not-a-uuid", "request_id"),
    ],
)
async def test_retake_with_a_malformed_id_is_an_invalid_argument(
    sessions, as_user, session_id, request_id, field
):
    owner = new_id()
    if session_id == "VALID":
        session_id = (await completed_session(sessions, as_user(owner))).session_id

    error = await expect_error(
        retake(sessions, as_user(owner), session_id, request_id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert field in error.fields


async def test_retake_after_the_job_posting_was_released_is_refused_and_changes_nothing(
    sessions, internal, as_user, as_service, db
):
    owner, posting = new_id(), new_id()
    md = as_user(owner)
    created = await create(sessions, md, job_posting_id=posting)
    for role, content in [
        (pb.MESSAGE_ROLE_QUESTION, "Tell me about yourself."),
        (pb.MESSAGE_ROLE_ANSWER, "I write tests."),
        (pb.MESSAGE_ROLE_QUESTION, "Why gRPC?"),
    ]:
        await sessions.AppendMessage(
            pb.AppendMessageRequest(session_id=created.session_id, role=role, content=content), metadata=md
        )
    done = await complete(sessions, md, created.session_id)
    messages_before = await sessions.ListMessages(
        pb.ListMessagesRequest(session_id=created.session_id), metadata=md
    )
    assert len(messages_before.messages) == 3

    released = await internal.ReleaseJobPosting(
        pb.ReleaseJobPostingRequest(job_posting_id=posting), metadata=as_service
    )
    assert released.sessions_updated == 1

    error = await expect_error(
        retake(sessions, md, created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MISSING_JOB_POSTING",
    )
    assert error.metadata.get("session_id") == created.session_id

    after = await sessions.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=md)
    assert after.job_posting_id == ""
    assert after.update_time.ToMicroseconds() >= done.update_time.ToMicroseconds()
    expected, actual = pb.Session(), pb.Session()
    expected.CopyFrom(done)
    actual.CopyFrom(after)
    for message in (expected, actual):
        message.ClearField("job_posting_id")
        message.ClearField("update_time")
    assert actual == expected
    assert actual.status == pb.SESSION_STATUS_COMPLETED and actual.current_question_number == 2
    messages_after = await sessions.ListMessages(
        pb.ListMessagesRequest(session_id=created.session_id), metadata=md
    )
    assert messages_after.SerializeToString() == messages_before.SerializeToString()
    assert len(await chain_rows(db, created.session_id)) == 1


# --- RetakeSession: request_id and races ------------------------------------------------------


async def test_the_same_request_id_twice_returns_the_same_retake(sessions, as_user, db):
    owner = new_id()
    md = as_user(owner)
    original = await completed_session(sessions, md)
    request_id = new_id()

    first = await retake(sessions, md, original.session_id, request_id)
    second = await retake(sessions, md, original.session_id, request_id)

    assert second == first
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sessions.sessions WHERE user_id = $1 AND request_id = $2", owner, request_id
        )
        == 1
    )
    assert [r["retake_number"] for r in await chain_rows(db, original.session_id)] == [1, 2]
    # A fresh request_id is a new retake.
    third = await retake(sessions, md, original.session_id, new_id())
    assert third.retake_number == 3


async def test_a_repeated_request_id_returns_the_first_retake_whatever_the_session_id_says(
    sessions, as_user, db
):
    owner = new_id()
    md = as_user(owner)
    first_source = await completed_session(sessions, md)
    other_source = await completed_session(sessions, md)
    request_id = new_id()

    first = await retake(sessions, md, first_source.session_id, request_id)
    repeated = await retake(sessions, md, other_source.session_id, request_id)

    assert repeated == first
    assert len(await chain_rows(db, other_source.session_id)) == 1


async def test_concurrent_retakes_with_one_request_id_create_one_session(sessions, as_user, db):
    owner = new_id()
    md = as_user(owner)
    original = await completed_session(sessions, md)
    request_id = new_id()

    results = await asyncio.gather(*(retake(sessions, md, original.session_id, request_id) for _ in range(5)))

    assert {r.session_id for r in results} == {results[0].session_id}
    assert all(r == results[0] for r in results)
    assert results[0].retake_number == 2
    rows = await chain_rows(db, original.session_id)
    assert [(r["session_id"], r["retake_number"]) for r in rows] == [
        (original.session_id, 1),
        (results[0].session_id, 2),
    ]


async def test_thirty_concurrent_retakes_each_get_their_own_number(sessions, as_user, db):
    owner = new_id()
    md = as_user(owner)
    original = await completed_session(sessions, md)

    results = await asyncio.gather(
        *(retake(sessions, md, original.session_id, new_id()) for _ in range(30)), return_exceptions=True
    )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures
    assert sorted(r.retake_number for r in results) == list(range(2, 32))
    assert len({r.session_id for r in results}) == 30
    assert {r.original_session_id for r in results} == {original.session_id}
    rows = await chain_rows(db, original.session_id)
    assert len(rows) == 31
    assert [r["retake_number"] for r in rows] == list(range(1, 32))
    assert {r["session_id"] for r in rows} == {original.session_id} | {r.session_id for r in results}


# --- ListRetakes ------------------------------------------------------------------------------


async def test_list_retakes_returns_the_whole_chain_root_first_from_any_member(sessions, as_user):
    owner = new_id()
    md = as_user(owner)
    root = await completed_session(sessions, md)
    second = await retake(sessions, md, root.session_id)
    second = await complete(sessions, md, second.session_id)
    third = await retake(sessions, md, second.session_id)
    root = await sessions.GetSession(pb.GetSessionRequest(session_id=root.session_id), metadata=md)

    for member in (root, second, third):
        chain = (await list_retakes(sessions, md, member.session_id)).sessions
        assert chain == [root, second, third], member.retake_number
        assert [s.retake_number for s in chain] == [1, 2, 3]
        assert [s.original_session_id for s in chain] == ["", root.session_id, root.session_id]


async def test_list_retakes_of_an_original_without_retakes_is_just_that_session(sessions, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))

    assert (await list_retakes(sessions, as_user(owner), created.session_id)).sessions == [created]


async def test_list_retakes_orders_by_retake_number_after_concurrent_retakes(sessions, as_user):
    owner = new_id()
    md = as_user(owner)
    root = await completed_session(sessions, md)
    await asyncio.gather(*(retake(sessions, md, root.session_id, new_id()) for _ in range(6)))

    chain = (await list_retakes(sessions, md, root.session_id)).sessions

    assert [s.retake_number for s in chain] == [1, 2, 3, 4, 5, 6, 7]
    assert chain[0].session_id == root.session_id


async def test_list_retakes_shows_the_partner_only_the_sessions_they_take_part_in(
    sessions, internal, as_user, as_service
):
    owner, partner = new_id(), new_id()
    root = await completed_paired_session(sessions, internal, as_user, as_service, owner, partner)
    second = await retake(sessions, as_user(owner), root.session_id)

    owner_view = (await list_retakes(sessions, as_user(owner), root.session_id)).sessions
    partner_view = (await list_retakes(sessions, as_user(partner), root.session_id)).sessions

    assert [s.session_id for s in owner_view] == [root.session_id, second.session_id]
    assert partner_view == [root]
    # Through the owner's solo retake the partner is a stranger: existence is not leaked.
    await expect_error(
        sessions.ListRetakes(pb.ListRetakesRequest(session_id=second.session_id), metadata=as_user(partner)),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )


@pytest.mark.parametrize("who", ["stranger on the root", "stranger on a retake", "unknown id"])
async def test_list_retakes_for_a_non_participant_is_not_found(sessions, as_user, who):
    owner, stranger = new_id(), new_id()
    root = await completed_session(sessions, as_user(owner))
    second = await retake(sessions, as_user(owner), root.session_id)
    target = {
        "stranger on the root": root.session_id,
        "stranger on a retake": second.session_id,
        "unknown id": new_id(),
    }[who]

    error = await expect_error(
        sessions.ListRetakes(pb.ListRetakesRequest(session_id=target), metadata=as_user(stranger)),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )

    assert error.metadata.get("session_id") == target


@pytest.mark.parametrize("session_id", ["", "nope", "12345678-1234-1234-1234-12345678901"])
async def test_list_retakes_with_a_malformed_session_id_is_an_invalid_argument(sessions, as_user, session_id):
    error = await expect_error(
        sessions.ListRetakes(pb.ListRetakesRequest(session_id=session_id), metadata=as_user(new_id())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "session_id" in error.fields


async def test_list_retakes_pages_a_thousand_retake_chain_without_gaps_or_duplicates(sessions, as_user):
    owner = as_user(new_id())
    root = await completed_session(sessions, owner)
    for _ in range(1000):
        await retake(sessions, owner, root.session_id)

    pages = await walk(list_retakes, sessions, owner, root.session_id, page_size=200)
    assert [len(page.sessions) for page in pages] == [200, 200, 200, 200, 200, 1]
    numbers = [session.retake_number for page in pages for session in page.sessions]
    assert numbers == list(range(1, 1002))
    assert pages[0].sessions[0].session_id == root.session_id

    default = await sessions.ListRetakes(pb.ListRetakesRequest(session_id=root.session_id), metadata=owner)
    assert len(default.sessions) == 50 and default.next_page_token


async def test_list_retakes_pages_from_any_member_of_the_chain(sessions, as_user):
    owner = as_user(new_id())
    root = await completed_session(sessions, owner)
    retakes = [await retake(sessions, owner, root.session_id) for _ in range(4)]
    pages = await walk(list_retakes, sessions, owner, retakes[-1].session_id, page_size=2)
    assert [[s.retake_number for s in page.sessions] for page in pages] == [[1, 2], [3, 4], [5]]


async def test_a_partner_pages_through_the_root_alone(sessions, internal, as_user, as_service):
    owner, partner = new_id(), new_id()
    root = await completed_paired_session(sessions, internal, as_user, as_service, owner, partner)
    for _ in range(3):
        await retake(sessions, as_user(owner), root.session_id)
    pages = await walk(list_retakes, sessions, as_user(partner), root.session_id, page_size=1)
    assert [[s.session_id for s in page.sessions] for page in pages] == [[root.session_id]]


@pytest.mark.parametrize(
    ("field", "value"), [("page_size", -1), ("page_token", "not-a-token"), ("page_token", "A" * 600)]
)
async def test_list_retakes_refuses_a_bad_page_size_or_token(sessions, as_user, field, value):
    owner = as_user(new_id())
    root = await completed_session(sessions, owner)
    error = await expect_error(
        sessions.ListRetakes(
            pb.ListRetakesRequest(session_id=root.session_id, **{field: value}), metadata=owner
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert set(error.fields) == {field}


async def test_a_retakes_page_token_works_only_for_its_own_chain_and_caller(sessions, as_user):
    alice, bob = as_user(new_id()), as_user(new_id())
    first, second = await completed_session(sessions, alice), await completed_session(sessions, alice)
    for _ in range(2):
        await retake(sessions, alice, first.session_id)
    page = await sessions.ListRetakes(
        pb.ListRetakesRequest(session_id=first.session_id, page_size=1), metadata=alice
    )
    assert page.next_page_token
    for session_id, md in ((second.session_id, alice), (first.session_id, bob)):
        request = pb.ListRetakesRequest(session_id=session_id, page_token=page.next_page_token)
        expected = ("INVALID_ARGUMENT", grpc.StatusCode.INVALID_ARGUMENT)
        error = await expect_error(sessions.ListRetakes(request, metadata=md), expected[1], expected[0])
        assert set(error.fields) == {"page_token"}


async def test_one_request_id_on_create_then_retake_gives_two_independent_sessions(sessions, as_user, db):
    owner = as_user(new_id())
    request_id = new_id()
    source = await completed_session(sessions, owner)
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), request_id=request_id), metadata=owner
    )
    retaken = await retake(sessions, owner, source.session_id, request_id=request_id)
    assert retaken.session_id != created.session_id
    assert retaken.original_session_id == source.session_id and retaken.retake_number == 2
    # Each repeat returns its own RPC's first result.
    again = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), request_id=request_id), metadata=owner
    )
    assert again == created
    assert await retake(sessions, owner, source.session_id, request_id=request_id) == retaken
    count = "SELECT count(*) FROM sessions.sessions WHERE request_id = $1"
    assert await db.fetchval(count, request_id) == 2


async def test_one_request_id_on_retake_then_create_gives_two_independent_sessions(sessions, as_user):
    owner = as_user(new_id())
    request_id = new_id()
    source = await completed_session(sessions, owner)
    retaken = await retake(sessions, owner, source.session_id, request_id=request_id)
    posting = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=posting, request_id=request_id), metadata=owner
    )
    assert created.session_id != retaken.session_id
    assert created.job_posting_id == posting and created.retake_number == 1
