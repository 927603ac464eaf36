"""Session lifecycle through the public API: create, read, pause, resume, complete, and their races."""

import asyncio

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import (
    append,
    complete,
    create,
    expect_error,
    list_sessions,
    new_id,
    pause,
    resume,
    rich_error,
    stamp,
)

DOMAIN = "interview.sessions"


async def db_row(db, session_id):
    return await db.fetchrow("SELECT * FROM sessions.sessions WHERE session_id = $1", session_id)


# --- CreateSession and GetSession ---------------------------------------------------------------


async def test_creating_a_solo_session_starts_it_active_at_question_zero(sessions, as_user, db):
    owner, posting = new_id(), new_id()
    created = await create(sessions, as_user(owner), job_posting_id=posting)

    assert created.session_id
    assert created.user_id == owner
    assert created.partner_user_id == ""
    assert created.job_posting_id == posting
    assert created.status == pb.SESSION_STATUS_ACTIVE
    assert created.current_question_number == 0
    assert created.retake_number == 1
    assert created.original_session_id == ""
    assert created.HasField("create_time")
    assert created.HasField("update_time")
    assert not created.HasField("complete_time")
    assert stamp(created.update_time) >= stamp(created.create_time)

    row = await db_row(db, created.session_id)
    assert str(row["user_id"]) == owner
    assert row["partner_user_id"] is None
    assert str(row["job_posting_id"]) == posting
    assert row["status"] == "active"
    assert row["current_question_number"] == 0
    assert row["retake_number"] == 1
    assert row["original_session_id"] is None
    assert row["complete_time"] is None
    assert row["create_time"] == stamp(created.create_time)


async def test_creating_a_paired_session_records_the_partner(sessions, as_user, db):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)

    assert created.user_id == owner
    assert created.partner_user_id == partner
    assert created.status == pb.SESSION_STATUS_ACTIVE
    assert created.current_question_number == 0
    assert created.retake_number == 1
    assert created.original_session_id == ""
    assert not created.HasField("complete_time")
    row = await db_row(db, created.session_id)
    assert str(row["partner_user_id"]) == partner


async def test_the_owner_and_the_partner_can_both_get_a_paired_session(sessions, as_user):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)

    for caller in (owner, partner):
        got = await sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session_id), metadata=as_user(caller)
        )
        assert got == created


async def test_the_owner_can_get_a_solo_session(sessions, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    got = await sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id), metadata=as_user(owner)
    )
    assert got == created


async def test_the_same_request_id_sent_twice_returns_one_session(sessions, as_user, db):
    owner, request_id, posting = new_id(), new_id(), new_id()
    first = await create(sessions, as_user(owner), request_id=request_id, job_posting_id=posting)
    second = await create(sessions, as_user(owner), request_id=request_id, job_posting_id=posting)

    assert second == first
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM sessions.sessions WHERE user_id = $1 AND request_id = $2", owner, request_id
        )
        == 1
    )


@pytest.mark.parametrize("copies", [2, 5])
async def test_the_same_request_id_sent_concurrently_returns_one_session(sessions, as_user, db, copies):
    owner, request_id, posting = new_id(), new_id(), new_id()
    results = await asyncio.gather(
        *(
            create(sessions, as_user(owner), request_id=request_id, job_posting_id=posting)
            for _ in range(copies)
        )
    )

    assert {r.session_id for r in results} == {results[0].session_id}
    assert all(r == results[0] for r in results)
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 1


async def test_a_repeated_request_id_with_other_fields_returns_the_first_result(sessions, as_user, db):
    owner, request_id, posting = new_id(), new_id(), new_id()
    first = await create(sessions, as_user(owner), request_id=request_id, job_posting_id=posting)
    second = await create(sessions, as_user(owner), partner=new_id(), request_id=request_id)

    assert second == first
    assert second.job_posting_id == posting
    assert second.partner_user_id == ""
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 1


async def test_the_same_request_id_from_two_users_makes_two_sessions(sessions, as_user):
    request_id = new_id()
    alice, bob = new_id(), new_id()
    a = await create(sessions, as_user(alice), request_id=request_id)
    b = await create(sessions, as_user(bob), request_id=request_id)
    assert a.session_id != b.session_id
    assert (a.user_id, b.user_id) == (alice, bob)


# --- Allowed transitions ------------------------------------------------------------------------


async def test_pausing_an_active_session_pauses_it(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    paused = await pause(sessions, as_user(owner), created.session_id)

    assert paused.status == pb.SESSION_STATUS_PAUSED
    assert not paused.HasField("complete_time")
    assert stamp(paused.update_time) > stamp(created.update_time)
    assert paused.create_time == created.create_time
    row = await db_row(db, created.session_id)
    assert row["status"] == "paused"
    assert row["update_time"] == stamp(paused.update_time)


async def test_resuming_a_paused_session_makes_it_active_again(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    paused = await pause(sessions, as_user(owner), created.session_id)
    resumed = await resume(sessions, as_user(owner), created.session_id)

    assert resumed.status == pb.SESSION_STATUS_ACTIVE
    assert stamp(resumed.update_time) > stamp(paused.update_time)
    assert (await db_row(db, created.session_id))["status"] == "active"


async def test_completing_an_active_session_completes_it(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    done = await complete(sessions, as_user(owner), created.session_id)

    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert done.HasField("complete_time")
    assert stamp(done.complete_time) >= stamp(created.create_time)
    assert stamp(done.update_time) > stamp(created.update_time)
    assert done.session_id == created.session_id
    assert done.create_time == created.create_time
    row = await db_row(db, created.session_id)
    assert row["status"] == "completed"
    assert row["complete_time"] == stamp(done.complete_time)


async def test_completing_a_paused_session_completes_it(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    paused = await pause(sessions, as_user(owner), created.session_id)
    done = await complete(sessions, as_user(owner), created.session_id)

    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert done.HasField("complete_time")
    assert stamp(done.update_time) > stamp(paused.update_time)
    row = await db_row(db, created.session_id)
    assert row["status"] == "completed"
    assert row["complete_time"] == stamp(done.complete_time)


async def test_the_partner_can_pause_and_resume_a_paired_session(sessions, as_user, db):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)

    paused = await pause(sessions, as_user(partner), created.session_id)
    assert paused.status == pb.SESSION_STATUS_PAUSED
    assert (await db_row(db, created.session_id))["status"] == "paused"

    resumed = await resume(sessions, as_user(partner), created.session_id)
    assert resumed.status == pb.SESSION_STATUS_ACTIVE
    assert resumed.user_id == owner
    assert resumed.partner_user_id == partner
    assert (await db_row(db, created.session_id))["status"] == "active"


async def test_the_owner_can_pause_and_resume_a_paired_session(sessions, as_user):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    assert (await pause(sessions, as_user(owner), created.session_id)).status == pb.SESSION_STATUS_PAUSED
    assert (await resume(sessions, as_user(owner), created.session_id)).status == pb.SESSION_STATUS_ACTIVE


# --- Refused transitions ------------------------------------------------------------------------


async def test_pausing_a_paused_session_is_refused_as_not_active(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    paused = await pause(sessions, as_user(owner), created.session_id)

    error = await expect_error(
        pause(sessions, as_user(owner), created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_NOT_ACTIVE",
    )
    assert error.domain == DOMAIN
    assert error.metadata.get("session_id") == created.session_id
    row = await db_row(db, created.session_id)
    assert row["status"] == "paused"
    assert row["update_time"] == stamp(paused.update_time)


async def test_resuming_an_active_session_is_refused_as_not_paused(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))

    error = await expect_error(
        resume(sessions, as_user(owner), created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_NOT_PAUSED",
    )
    assert error.domain == DOMAIN
    row = await db_row(db, created.session_id)
    assert row["status"] == "active"
    assert row["update_time"] == stamp(created.update_time)


@pytest.mark.parametrize("action", [complete, pause, resume], ids=["complete", "pause", "resume"])
async def test_any_transition_on_a_completed_session_is_refused_as_already_completed(
    sessions, as_user, db, action
):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    done = await complete(sessions, as_user(owner), created.session_id)

    error = await expect_error(
        action(sessions, as_user(owner), created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_ALREADY_COMPLETED",
    )
    assert error.domain == DOMAIN
    row = await db_row(db, created.session_id)
    assert row["status"] == "completed"
    assert row["complete_time"] == stamp(done.complete_time)
    assert row["update_time"] == stamp(done.update_time)


@pytest.mark.parametrize("who", ["owner", "partner"])
@pytest.mark.parametrize("paused_first", [False, True], ids=["active", "paused"])
async def test_completing_a_paired_session_requires_mutual_confirmation(
    sessions, as_user, db, who, paused_first
):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    if paused_first:
        await pause(sessions, as_user(owner), created.session_id)
    before = await db_row(db, created.session_id)

    error = await expect_error(
        complete(sessions, as_user(owner if who == "owner" else partner), created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "MUTUAL_CONFIRMATION_REQUIRED",
    )
    assert error.domain == DOMAIN
    after = await db_row(db, created.session_id)
    assert after == before
    assert after["complete_time"] is None


@pytest.mark.parametrize("action", [complete, pause, resume], ids=["complete", "pause", "resume"])
async def test_a_transition_on_another_users_session_looks_like_a_missing_one(sessions, as_user, db, action):
    owner, stranger = new_id(), new_id()
    created = await create(sessions, as_user(owner))
    if action is resume:
        await pause(sessions, as_user(owner), created.session_id)
    before = await db_row(db, created.session_id)
    missing_id = new_id()

    theirs = await expect_error(
        action(sessions, as_user(stranger), created.session_id),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )
    missing = await expect_error(
        action(sessions, as_user(stranger), missing_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )

    assert theirs.domain == missing.domain == DOMAIN
    assert theirs.message == missing.message
    assert theirs.fields == missing.fields == {}
    assert theirs.metadata == {"session_id": created.session_id}
    assert missing.metadata == {"session_id": missing_id}
    assert await db_row(db, created.session_id) == before


# --- Seed 000: completing a session (REST story translated to gRPC) ---------------------------


async def test_seed_completing_an_active_session_updates_its_status(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    done = await complete(sessions, as_user(owner), created.session_id)
    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert (await db_row(db, created.session_id))["status"] == "completed"


async def test_seed_completing_a_paused_session_updates_its_status(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    await pause(sessions, as_user(owner), created.session_id)
    done = await complete(sessions, as_user(owner), created.session_id)
    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert (await db_row(db, created.session_id))["status"] == "completed"


async def test_seed_an_already_completed_session_cannot_be_completed_again(sessions, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    await complete(sessions, as_user(owner), created.session_id)
    error = await expect_error(
        complete(sessions, as_user(owner), created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_ALREADY_COMPLETED",
    )
    assert error.domain == DOMAIN


async def list_ids(sessions, md, status):
    reply = await list_sessions(sessions, md, status=status)
    return [s.session_id for s in reply.sessions]


async def test_seed_a_completed_session_appears_in_the_completed_list(sessions, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    still_active = await create(sessions, as_user(owner))
    done = await complete(sessions, as_user(owner), created.session_id)

    completed = await sessions.ListSessions(
        pb.ListSessionsRequest(status=pb.SESSION_STATUS_COMPLETED), metadata=as_user(owner)
    )
    assert list(completed.sessions) == [done]
    assert still_active.session_id not in [s.session_id for s in completed.sessions]


async def test_seed_a_completed_session_is_not_in_the_active_list(sessions, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    still_active = await create(sessions, as_user(owner))
    assert created.session_id in await list_ids(sessions, as_user(owner), pb.SESSION_STATUS_ACTIVE)

    await complete(sessions, as_user(owner), created.session_id)

    assert await list_ids(sessions, as_user(owner), pb.SESSION_STATUS_ACTIVE) == [still_active.session_id]
    assert await list_ids(sessions, as_user(owner), pb.SESSION_STATUS_PAUSED) == []
    everything = await list_ids(sessions, as_user(owner), pb.SESSION_STATUS_UNSPECIFIED)
    assert sorted(everything) == sorted([created.session_id, still_active.session_id])


async def test_seed_completing_a_session_preserves_its_messages(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    sid = created.session_id
    appended = [
        await append(sessions, as_user(owner), sid, pb.MESSAGE_ROLE_QUESTION, "Tell me about yourself."),
        await append(sessions, as_user(owner), sid, pb.MESSAGE_ROLE_ANSWER, "I build services. 😀"),
        await append(sessions, as_user(owner), sid, pb.MESSAGE_ROLE_QUESTION, "Why this job?"),
        await append(sessions, as_user(owner), sid, pb.MESSAGE_ROLE_ANSWER, "Line one\nline two\ttab"),
    ]
    list_request = pb.ListMessagesRequest(session_id=sid)
    before = await sessions.ListMessages(list_request, metadata=as_user(owner))
    rows_before = await db.fetch("SELECT * FROM sessions.messages WHERE session_id = $1 ORDER BY seq", sid)
    assert list(before.messages) == appended
    assert [m.question_number for m in before.messages] == [1, 1, 2, 2]

    done = await complete(sessions, as_user(owner), sid)
    assert done.current_question_number == 2

    after = await sessions.ListMessages(list_request, metadata=as_user(owner))
    assert after.SerializeToString(deterministic=True) == before.SerializeToString(deterministic=True)
    assert [(m.message_id, m.content, m.question_number, m.create_time) for m in after.messages] == [
        (m.message_id, m.content, m.question_number, m.create_time) for m in appended
    ]
    rows_after = await db.fetch("SELECT * FROM sessions.messages WHERE session_id = $1 ORDER BY seq", sid)
    assert rows_after == rows_before


async def test_seed_a_completed_session_and_its_messages_can_still_be_read(sessions, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    sid = created.session_id
    await append(sessions, as_user(owner), sid, pb.MESSAGE_ROLE_QUESTION, "What is a B-tree?")
    await append(sessions, as_user(owner), sid, pb.MESSAGE_ROLE_ANSWER, "A balanced search tree.")
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=sid), metadata=as_user(owner))
    assert got.status == pb.SESSION_STATUS_ACTIVE

    done = await complete(sessions, as_user(owner), sid)
    assert done.status == pb.SESSION_STATUS_COMPLETED

    got = await sessions.GetSession(pb.GetSessionRequest(session_id=sid), metadata=as_user(owner))
    assert got == done
    messages = await sessions.ListMessages(pb.ListMessagesRequest(session_id=sid), metadata=as_user(owner))
    assert [m.content for m in messages.messages] == ["What is a B-tree?", "A balanced search tree."]


async def test_seed_completing_a_session_that_does_not_exist_is_not_found(sessions, as_user):
    missing = new_id()
    error = await expect_error(
        complete(sessions, as_user(new_id()), missing), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )
    assert error.domain == DOMAIN
    assert error.metadata == {"session_id": missing}


async def test_seed_completing_a_session_without_a_token_is_unauthenticated(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    error = await expect_error(
        sessions.CompleteSession(pb.CompleteSessionRequest(session_id=created.session_id)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert error.domain == DOMAIN
    assert (await db_row(db, created.session_id))["status"] == "active"


# --- Races --------------------------------------------------------------------------------------


def outcomes(results):
    """Splits gather(return_exceptions=True) results into successes and decoded errors."""
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    for error in failed:
        assert isinstance(error, grpc.aio.AioRpcError), repr(error)
    return ok, [rich_error(e) for e in failed]


@pytest.mark.parametrize("paused_first", [False, True], ids=["active", "paused"])
async def test_twenty_concurrent_completes_let_exactly_one_win(sessions, as_user, db, paused_first):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    if paused_first:
        await pause(sessions, as_user(owner), created.session_id)

    results = await asyncio.gather(
        *(complete(sessions, as_user(owner), created.session_id) for _ in range(20)), return_exceptions=True
    )
    ok, errors = outcomes(results)

    assert len(ok) == 1
    assert len(errors) == 19
    assert {(e.code, e.reason, e.domain) for e in errors} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_ALREADY_COMPLETED", DOMAIN)
    }
    winner = ok[0]
    assert winner.status == pb.SESSION_STATUS_COMPLETED
    row = await db_row(db, created.session_id)
    assert row["status"] == "completed"
    assert row["complete_time"] == stamp(winner.complete_time)
    assert row["update_time"] == stamp(winner.update_time)


async def test_ten_concurrent_pauses_let_exactly_one_win(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))

    results = await asyncio.gather(
        *(pause(sessions, as_user(owner), created.session_id) for _ in range(10)), return_exceptions=True
    )
    ok, errors = outcomes(results)

    assert len(ok) == 1
    assert ok[0].status == pb.SESSION_STATUS_PAUSED
    assert len(errors) == 9
    assert {(e.code, e.reason, e.domain) for e in errors} == {
        (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_ACTIVE", DOMAIN)
    }
    row = await db_row(db, created.session_id)
    assert row["status"] == "paused"
    assert row["update_time"] == stamp(ok[0].update_time)
