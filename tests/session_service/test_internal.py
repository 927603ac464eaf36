"""SessionInternalService: LookupSession, CompletePairedSession and ReleaseJobPosting for other services."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import create, expect_error, new_id


async def lookup(internal, as_service, session_id: str) -> pb.Session:
    return await internal.LookupSession(pb.LookupSessionRequest(session_id=session_id), metadata=as_service)


async def complete_paired(internal, as_service, session_id: str) -> pb.Session:
    request = pb.CompletePairedSessionRequest(session_id=session_id)
    return await internal.CompletePairedSession(request, metadata=as_service)


async def release(internal, as_service, job_posting_id: str) -> int:
    request = pb.ReleaseJobPostingRequest(job_posting_id=job_posting_id)
    return (await internal.ReleaseJobPosting(request, metadata=as_service)).sessions_updated


def without(session: pb.Session, *names: str) -> pb.Session:
    copy = pb.Session()
    copy.CopyFrom(session)
    for name in names:
        copy.ClearField(name)
    return copy


# --- LookupSession ----------------------------------------------------------------------------


@pytest.mark.parametrize("paired", [False, True], ids=["solo", "paired"])
async def test_lookup_returns_any_session_whoever_participates(
    sessions, internal, as_user, as_service, paired
):
    owner = new_id()
    partner = new_id() if paired else ""
    created = await create(sessions, as_user(owner), partner=partner)
    await sessions.AppendMessage(
        pb.AppendMessageRequest(session_id=created.session_id, role=pb.MESSAGE_ROLE_QUESTION, content="q"),
        metadata=as_user(owner),
    )
    current = await sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id), metadata=as_user(owner)
    )

    found = await lookup(internal, as_service, created.session_id)

    assert found == current
    assert found.user_id == owner and found.partner_user_id == partner
    assert found.current_question_number == 1


async def test_lookup_of_an_unknown_session_is_not_found(internal, as_service):
    session_id = new_id()

    error = await expect_error(
        lookup(internal, as_service, session_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )

    assert error.domain == "interview.sessions"
    assert error.metadata.get("session_id") == session_id


@pytest.mark.parametrize("session_id", ["", "not-a-uuid", "0" * 36, "12345678-1234-1234-1234-1234567890123"])
async def test_lookup_of_a_malformed_id_is_an_invalid_argument(internal, as_service, session_id):
    error = await expect_error(
        lookup(internal, as_service, session_id), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"
    )

    assert "session_id" in error.fields


async def test_a_user_token_on_the_internal_service_is_permission_denied(sessions, internal, as_user):
    owner = new_id()
    created = await create(sessions, as_user(owner))

    await expect_error(
        internal.LookupSession(
            pb.LookupSessionRequest(session_id=created.session_id), metadata=as_user(owner)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


# --- CompletePairedSession --------------------------------------------------------------------


@pytest.mark.parametrize("paused", [False, True], ids=["active", "paused"])
async def test_complete_paired_completes_an_active_or_paused_paired_session(
    sessions, internal, as_user, as_service, db, paused
):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    if paused:
        await sessions.PauseSession(
            pb.PauseSessionRequest(session_id=created.session_id), metadata=as_user(partner)
        )
    before = await lookup(internal, as_service, created.session_id)

    done = await complete_paired(internal, as_service, created.session_id)

    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert done.HasField("complete_time")
    assert done.complete_time.ToMicroseconds() >= before.update_time.ToMicroseconds()
    assert done.update_time.ToMicroseconds() >= before.update_time.ToMicroseconds()
    assert without(done, "status", "update_time", "complete_time") == without(
        before, "status", "update_time", "complete_time"
    )
    assert await lookup(internal, as_service, created.session_id) == done
    row = await db.fetchrow(
        "SELECT status, complete_time FROM sessions.sessions WHERE session_id = $1", created.session_id
    )
    assert row["status"] == "completed" and row["complete_time"] is not None
    # Both participants see it completed, and it is terminal for them.
    for user in (owner, partner):
        seen = await sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session_id), metadata=as_user(user)
        )
        assert seen == done
    await expect_error(
        sessions.ResumeSession(
            pb.ResumeSessionRequest(session_id=created.session_id), metadata=as_user(owner)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_ALREADY_COMPLETED",
    )


async def test_complete_paired_again_returns_the_session_unchanged(sessions, internal, as_user, as_service):
    created = await create(sessions, as_user(new_id()), partner=new_id())
    first = await complete_paired(internal, as_service, created.session_id)

    again = await complete_paired(internal, as_service, created.session_id)
    third = await complete_paired(internal, as_service, created.session_id)

    assert again == first and third == first
    assert again.complete_time == first.complete_time
    assert again.update_time == first.update_time


@pytest.mark.parametrize("state", ["active", "completed"])
async def test_complete_paired_on_a_solo_session_is_refused(sessions, internal, as_user, as_service, state):
    md = as_user(new_id())
    created = await create(sessions, md)
    if state == "completed":
        await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=created.session_id), metadata=md)
    before = await lookup(internal, as_service, created.session_id)

    error = await expect_error(
        complete_paired(internal, as_service, created.session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_A_PAIRED_SESSION",
    )

    assert error.metadata.get("session_id") == created.session_id
    assert await lookup(internal, as_service, created.session_id) == before


async def test_complete_paired_on_an_unknown_session_is_not_found(internal, as_service, db):
    session_id = new_id()

    await expect_error(
        complete_paired(internal, as_service, session_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )

    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE session_id = $1", session_id) == 0


@pytest.mark.parametrize("session_id", ["", "garbage"])
async def test_complete_paired_with_a_malformed_id_is_an_invalid_argument(internal, as_service, session_id):
    error = await expect_error(
        complete_paired(internal, as_service, session_id),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "session_id" in error.fields


async def test_ten_concurrent_complete_paired_calls_all_succeed_with_one_completion(
    sessions, internal, as_user, as_service
):
    created = await create(sessions, as_user(new_id()), partner=new_id())

    results = await asyncio.gather(
        *(complete_paired(internal, as_service, created.session_id) for _ in range(10)),
        return_exceptions=True,
    )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures
    assert {r.status for r in results} == {pb.SESSION_STATUS_COMPLETED}
    assert len({r.complete_time.ToMicroseconds() for r in results}) == 1
    assert all(r == results[0] for r in results)
    assert await lookup(internal, as_service, created.session_id) == results[0]


# --- ReleaseJobPosting ------------------------------------------------------------------------


async def test_release_clears_the_posting_on_exactly_the_sessions_that_reference_it(
    sessions, internal, as_user, as_service, db
):
    alice, bob = new_id(), new_id()
    posting, other_posting = new_id(), new_id()
    alice_md = as_user(alice)
    first = await create(sessions, alice_md, job_posting_id=posting)
    await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=first.session_id), metadata=alice_md)
    retake = await sessions.RetakeSession(
        pb.RetakeSessionRequest(session_id=first.session_id), metadata=alice_md
    )
    bobs = await create(sessions, as_user(bob), partner=alice, job_posting_id=posting)
    untouched = [
        await create(sessions, alice_md, job_posting_id=other_posting),
        await create(sessions, as_user(bob), job_posting_id=other_posting),
    ]
    referencing = [first.session_id, retake.session_id, bobs.session_id]
    before = {s: await lookup(internal, as_service, s) for s in referencing}
    untouched_before = [await lookup(internal, as_service, s.session_id) for s in untouched]

    updated = await release(internal, as_service, posting)

    assert updated == 3
    for session_id, old in before.items():
        new = await lookup(internal, as_service, session_id)
        assert new.job_posting_id == ""
        assert new.update_time.ToMicroseconds() > old.update_time.ToMicroseconds()
        assert without(new, "job_posting_id", "update_time") == without(old, "job_posting_id", "update_time")
    assert [await lookup(internal, as_service, s.session_id) for s in untouched] == untouched_before
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE job_posting_id = $1", posting) == 0
    assert (
        await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE job_posting_id = $1", other_posting)
        == 2
    )
    cleared = await db.fetch(
        "SELECT session_id::text FROM sessions.sessions WHERE session_id = ANY($1::uuid[]) "
        "AND job_posting_id IS NULL",
        referencing,
    )
    assert {r["session_id"] for r in cleared} == set(referencing)

    # Nothing references the posting any more: a second release changes nothing.
    after_first = {s: await lookup(internal, as_service, s) for s in referencing}
    assert await release(internal, as_service, posting) == 0
    assert {s: await lookup(internal, as_service, s) for s in referencing} == after_first


async def test_release_of_a_posting_nobody_references_updates_nothing(internal, as_service):
    assert await release(internal, as_service, new_id()) == 0


@pytest.mark.parametrize("job_posting_id", ["", "posting-1"])
async def test_release_with_a_malformed_posting_id_is_an_invalid_argument(
    internal, as_service, job_posting_id
):
    error = await expect_error(
        internal.ReleaseJobPosting(
            pb.ReleaseJobPostingRequest(job_posting_id=job_posting_id), metadata=as_service
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "job_posting_id" in error.fields
