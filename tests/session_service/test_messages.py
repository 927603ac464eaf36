"""AppendMessage and ListMessages: question numbering, idempotent appends, stable paginated history."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import append, create, expect_error, get, list_messages, new_id, walk

Q, A = pb.MESSAGE_ROLE_QUESTION, pb.MESSAGE_ROLE_ANSWER


async def message_count(db, session_id: str) -> int:
    return await db.fetchval("SELECT count(*) FROM sessions.messages WHERE session_id = $1", session_id)


async def stored_question_number(db, session_id: str) -> int:
    return await db.fetchval(
        "SELECT current_question_number FROM sessions.sessions WHERE session_id = $1", session_id
    )


# --- AppendMessage: numbering -----------------------------------------------------------------


async def test_a_question_opens_the_next_question_number_and_carries_it(sessions, as_user, db):
    owner = new_id()
    md = as_user(owner)
    created = await create(sessions, md)

    first = await append(sessions, md, created.session_id, Q, "What is a race condition?")
    after_first = await get(sessions, md, created.session_id)
    second = await append(sessions, md, created.session_id, Q, "And a deadlock?")

    assert first.session_id == created.session_id
    assert first.role == Q
    assert first.content == "What is a race condition?"
    assert first.question_number == 1
    assert first.message_id and first.HasField("create_time")
    assert after_first.current_question_number == 1
    assert after_first.update_time.ToMicroseconds() > created.update_time.ToMicroseconds()
    assert second.question_number == 2
    assert second.message_id != first.message_id
    assert (await get(sessions, md, created.session_id)).current_question_number == 2
    assert await stored_question_number(db, created.session_id) == 2
    rows = await db.fetch(
        "SELECT message_id::text, author_user_id::text, role, question_number FROM sessions.messages "
        "WHERE session_id = $1 ORDER BY seq",
        created.session_id,
    )
    assert [tuple(r) for r in rows] == [
        (first.message_id, owner, "question", 1),
        (second.message_id, owner, "question", 2),
    ]


async def test_an_answer_carries_the_current_question_number_and_does_not_increment_it(sessions, as_user, db):
    md = as_user(new_id())
    created = await create(sessions, md)

    await append(sessions, md, created.session_id, Q)
    answer = await append(sessions, md, created.session_id, A, "My answer")
    another = await append(sessions, md, created.session_id, A, "Adding to it")
    await append(sessions, md, created.session_id, Q)
    later = await append(sessions, md, created.session_id, A)

    assert (answer.role, answer.content, answer.question_number) == (A, "My answer", 1)
    assert another.question_number == 1
    assert later.question_number == 2
    assert (await get(sessions, md, created.session_id)).current_question_number == 2
    assert await stored_question_number(db, created.session_id) == 2
    assert await message_count(db, created.session_id) == 5


async def test_an_answer_before_any_question_is_refused(sessions, as_user, db):
    md = as_user(new_id())
    created = await create(sessions, md)

    error = await expect_error(
        append(sessions, md, created.session_id, A),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_OPEN_QUESTION",
    )

    assert error.metadata.get("session_id") == created.session_id
    assert await message_count(db, created.session_id) == 0
    assert (await get(sessions, md, created.session_id)).current_question_number == 0


@pytest.mark.parametrize("role", [Q, A], ids=["question", "answer"])
@pytest.mark.parametrize(
    ("state", "reason"),
    [("paused", "SESSION_NOT_ACTIVE"), ("completed", "SESSION_ALREADY_COMPLETED")],
)
async def test_append_outside_an_active_session_is_refused(sessions, as_user, db, role, state, reason):
    md = as_user(new_id())
    created = await create(sessions, md)
    await append(sessions, md, created.session_id, Q)
    if state == "paused":
        await sessions.PauseSession(pb.PauseSessionRequest(session_id=created.session_id), metadata=md)
    else:
        await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=created.session_id), metadata=md)
    before = await get(sessions, md, created.session_id)

    error = await expect_error(
        append(sessions, md, created.session_id, role, request_id=new_id()),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason,
    )

    assert error.metadata.get("session_id") == created.session_id
    assert await get(sessions, md, created.session_id) == before
    assert await message_count(db, created.session_id) == 1


async def test_append_after_resume_works_again(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)
    await append(sessions, md, created.session_id, Q)
    await sessions.PauseSession(pb.PauseSessionRequest(session_id=created.session_id), metadata=md)
    await sessions.ResumeSession(pb.ResumeSessionRequest(session_id=created.session_id), metadata=md)

    answer = await append(sessions, md, created.session_id, A)

    assert answer.question_number == 1


async def test_both_participants_of_a_paired_session_may_append(sessions, as_user, db):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)

    question = await append(sessions, as_user(partner), created.session_id, Q, "Partner asks")
    answer = await append(sessions, as_user(owner), created.session_id, A, "Owner answers")

    assert (question.question_number, answer.question_number) == (1, 1)
    rows = await db.fetch(
        "SELECT author_user_id::text, role FROM sessions.messages WHERE session_id = $1 ORDER BY seq",
        created.session_id,
    )
    assert [tuple(r) for r in rows] == [(partner, "question"), (owner, "answer")]


@pytest.mark.parametrize("target", ["another user's session", "unknown session"])
async def test_append_by_a_non_participant_is_not_found(sessions, as_user, db, target):
    owner, stranger = new_id(), new_id()
    created = await create(sessions, as_user(owner))
    session_id = created.session_id if target == "another user's session" else new_id()

    error = await expect_error(
        append(sessions, as_user(stranger), session_id, Q),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )

    assert error.metadata.get("session_id") == session_id
    assert await message_count(db, created.session_id) == 0
    assert await stored_question_number(db, created.session_id) == 0


@pytest.mark.parametrize(
    ("role", "content", "field"),
    [
        (pb.MESSAGE_ROLE_UNSPECIFIED, "text", "role"),
        (99, "text", "role"),
        (Q, "", "content"),
        (Q, "x" * 16385, "content"),
        (Q, "\u00e9" * 16385, "content"),
        (Q, "a\x00b", "content"),
    ],
    ids=["unspecified role", "unknown role", "empty", "too long", "too long in code points", "NUL"],
)
async def test_append_with_a_bad_role_or_content_is_an_invalid_argument(
    sessions, as_user, db, role, content, field
):
    md = as_user(new_id())
    created = await create(sessions, md)

    error = await expect_error(
        append(sessions, md, created.session_id, role, content),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert field in error.fields
    assert await message_count(db, created.session_id) == 0


async def test_content_of_16384_code_points_is_accepted_even_when_multibyte(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)
    content = "\U0001f600" * 16384  # 4 bytes each in UTF-8, one code point each

    message = await append(sessions, md, created.session_id, Q, content)

    assert message.content == content


# --- AppendMessage: request_id and concurrency ------------------------------------------------


async def test_the_same_request_id_twice_returns_the_first_message_and_increments_once(sessions, as_user, db):
    md = as_user(new_id())
    created = await create(sessions, md)
    request_id = new_id()

    first = await append(sessions, md, created.session_id, Q, "first", request_id)
    second = await append(sessions, md, created.session_id, Q, "a different text", request_id)

    assert second == first
    assert second.content == "first" and second.question_number == 1
    assert (await get(sessions, md, created.session_id)).current_question_number == 1
    assert await message_count(db, created.session_id) == 1
    assert await stored_question_number(db, created.session_id) == 1
    # A fresh request_id is a new message.
    assert (await append(sessions, md, created.session_id, Q, "next", new_id())).question_number == 2


async def test_a_request_id_reused_on_another_session_returns_the_first_message_and_changes_nothing(
    sessions, as_user, db
):
    md = as_user(new_id())
    first_session, second_session = await create(sessions, md), await create(sessions, md)
    request_id = new_id()

    first = await append(sessions, md, first_session.session_id, Q, "first", request_id)
    repeated = await append(sessions, md, second_session.session_id, Q, "elsewhere", request_id)

    assert repeated == first
    assert repeated.session_id == first_session.session_id
    assert await message_count(db, second_session.session_id) == 0
    assert (await get(sessions, md, second_session.session_id)).current_question_number == 0


async def test_concurrent_appends_with_one_request_id_make_one_message_and_one_increment(
    sessions, as_user, db
):
    md = as_user(new_id())
    created = await create(sessions, md)
    request_id = new_id()

    results = await asyncio.gather(
        *(append(sessions, md, created.session_id, Q, f"try {i}", request_id) for i in range(5))
    )

    assert all(r == results[0] for r in results)
    assert results[0].question_number == 1
    assert await message_count(db, created.session_id) == 1
    assert await stored_question_number(db, created.session_id) == 1
    assert (await get(sessions, md, created.session_id)).current_question_number == 1


async def test_twenty_concurrent_questions_get_numbers_one_to_twenty(sessions, as_user, db):
    md = as_user(new_id())
    created = await create(sessions, md)

    results = await asyncio.gather(
        *(append(sessions, md, created.session_id, Q, f"question {i}", new_id()) for i in range(20))
    )

    assert sorted(r.question_number for r in results) == list(range(1, 21))
    assert len({r.message_id for r in results}) == 20
    assert (await get(sessions, md, created.session_id)).current_question_number == 20
    stored = await db.fetch(
        "SELECT question_number FROM sessions.messages WHERE session_id = $1 ORDER BY seq", created.session_id
    )
    # Stored order (seq) follows the numbering: number k was committed k-th.
    assert [r["question_number"] for r in stored] == list(range(1, 21))


# --- ListMessages -----------------------------------------------------------------------------


async def appended_history(sessions, md, session_id: str, count: int) -> list[pb.SessionMessage]:
    history = [await append(sessions, md, session_id, Q, "question 1")]
    for i in range(2, count + 1):
        role = A if i % 2 == 0 else Q
        history.append(await append(sessions, md, session_id, role, f"message {i}"))
    return history


async def test_list_messages_pages_oldest_first_until_an_empty_token(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)
    history = await appended_history(sessions, md, created.session_id, 7)

    pages = await walk(list_messages, sessions, md, created.session_id, page_size=3)

    assert [len(p.messages) for p in pages] == [3, 3, 1]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    listed = [m for p in pages for m in p.messages]
    assert listed == history
    assert [m.question_number for m in listed] == [1, 1, 2, 2, 3, 3, 4]


async def test_list_messages_page_size_zero_means_fifty_and_negative_is_invalid(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)
    await asyncio.gather(*(append(sessions, md, created.session_id, Q, f"q{i}") for i in range(51)))

    first = await list_messages(sessions, md, created.session_id, 0)
    rest = await list_messages(sessions, md, created.session_id, 0, first.next_page_token)

    assert len(first.messages) == 50 and first.next_page_token
    assert len(rest.messages) == 1 and rest.next_page_token == ""
    error = await expect_error(
        list_messages(sessions, md, created.session_id, -1),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert "page_size" in error.fields


async def test_list_messages_is_byte_identical_before_and_after_completion(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)
    await appended_history(sessions, md, created.session_id, 7)
    before_all = await list_messages(sessions, md, created.session_id, 200)
    before_pages = await walk(list_messages, sessions, md, created.session_id, page_size=3)

    done = await sessions.CompleteSession(
        pb.CompleteSessionRequest(session_id=created.session_id), metadata=md
    )
    assert done.status == pb.SESSION_STATUS_COMPLETED

    after_all = await list_messages(sessions, md, created.session_id, 200)
    after_pages = await walk(list_messages, sessions, md, created.session_id, page_size=3)
    assert after_all.SerializeToString() == before_all.SerializeToString()
    assert [[m.SerializeToString() for m in p.messages] for p in after_pages] == [
        [m.SerializeToString() for m in p.messages] for p in before_pages
    ]


async def test_messages_of_a_completed_paired_session_stay_listable_by_both_participants(
    sessions, internal, as_user, as_service
):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    question = await append(sessions, as_user(partner), created.session_id, Q, "asked")
    answer = await append(sessions, as_user(owner), created.session_id, A, "answered")
    await internal.CompletePairedSession(
        pb.CompletePairedSessionRequest(session_id=created.session_id), metadata=as_service
    )

    for user in (owner, partner):
        page = await list_messages(sessions, as_user(user), created.session_id)
        assert list(page.messages) == [question, answer]
        assert page.next_page_token == ""


async def test_list_messages_of_a_session_without_messages_is_empty(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)

    page = await list_messages(sessions, md, created.session_id)

    assert list(page.messages) == [] and page.next_page_token == ""


@pytest.mark.parametrize("target", ["another user's session", "unknown session"])
async def test_list_messages_for_a_non_participant_is_not_found(sessions, as_user, target):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    await append(sessions, as_user(owner), created.session_id, Q)
    session_id = created.session_id if target == "another user's session" else new_id()

    error = await expect_error(
        list_messages(sessions, as_user(new_id()), session_id),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )

    assert error.metadata.get("session_id") == session_id


def flip(token: str, index: int) -> str:
    """The token with one base64url character replaced by another (every bit of it is used)."""
    replacement = "B" if token[index] != "B" else "C"
    return token[:index] + replacement + token[index + 1 :]


@pytest.mark.parametrize(
    "misuse", ["another session's token", "another user's token", "tampered token", "garbage token"]
)
async def test_list_messages_rejects_a_page_token_it_did_not_issue_for_this_call(sessions, as_user, misuse):
    owner, partner = new_id(), new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    other = await create(sessions, as_user(owner))
    for session in (created, other):
        await appended_history(sessions, as_user(owner), session.session_id, 3)
    token_of = {}
    for user in (owner, partner):
        token_of[user] = (await list_messages(sessions, as_user(user), created.session_id, 1)).next_page_token
    other_token = (await list_messages(sessions, as_user(owner), other.session_id, 1)).next_page_token
    assert token_of[owner] and token_of[partner] and other_token

    caller, token = {
        "another session's token": (owner, other_token),
        "another user's token": (owner, token_of[partner]),
        "tampered token": (owner, flip(token_of[owner], 5)),
        "garbage token": (owner, "not a token at all"),
    }[misuse]
    error = await expect_error(
        list_messages(sessions, as_user(caller), created.session_id, 1, token),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert "page_token" in error.fields
    # The untouched token still works for the caller it was made for.
    page = await list_messages(sessions, as_user(owner), created.session_id, 1, token_of[owner])
    assert [m.content for m in page.messages] == ["message 2"]


async def test_a_tampered_token_is_rejected_wherever_the_character_is_flipped(sessions, as_user):
    md = as_user(new_id())
    created = await create(sessions, md)
    await appended_history(sessions, md, created.session_id, 3)
    token = (await list_messages(sessions, md, created.session_id, 1)).next_page_token

    # Whole characters only: the last one may carry padding bits that decode to the same bytes.
    for index in (0, len(token) // 2, len(token) - 2):
        error = await expect_error(
            list_messages(sessions, md, created.session_id, 1, flip(token, index)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert "page_token" in error.fields, index


async def test_a_page_of_the_largest_messages_stays_under_the_grpc_message_limit(sessions, as_user, db):
    # 200 messages of 16,384 four-byte characters are 12.8 MB: more than one gRPC message carries.
    owner = as_user(new_id())
    created = await create(sessions, owner)
    content = "\N{GRINNING FACE}" * 16_384
    for _ in range(200):
        await append(sessions, owner, created.session_id, pb.MESSAGE_ROLE_QUESTION, content)

    pages = await walk(list_messages, sessions, owner, created.session_id, page_size=200)
    for reply in pages:
        assert 0 < len(reply.messages) < 200 and reply.ByteSize() < 4 * 1024 * 1024
    seen = [message.question_number for reply in pages for message in reply.messages]
    assert seen == list(range(1, 201))
    assert len(pages) >= 4
