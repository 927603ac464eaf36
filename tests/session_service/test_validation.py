"""Argument validation: every malformed field is INVALID_ARGUMENT naming it, and nothing is written."""

import grpc
import pytest
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import MALFORMED_UUIDS, create, expect_error, expect_invalid, new_id, user_metadata

DOMAIN = "interview.sessions"
MAX_CONTENT = 16384


async def snapshot(db, owner, session_id):
    """Everything a rejected call on `owner`'s behalf could have touched."""
    owned = await db.fetch("SELECT * FROM sessions.sessions WHERE user_id = $1 ORDER BY session_id", owner)
    chained = await db.fetch("SELECT * FROM sessions.sessions WHERE original_session_id = $1", session_id)
    messages = await db.fetch(
        "SELECT * FROM sessions.messages WHERE session_id = $1 ORDER BY seq", session_id
    )
    return [dict(r) for r in owned], [dict(r) for r in chained], [dict(r) for r in messages]


# --- Malformed and missing ids in every id field of every RPC ------------------------------------

# rpc -> (which stub, request type, the fields of a request that would succeed for the owner).
RPCS = {
    "CreateSession": (
        "public",
        pb.CreateSessionRequest,
        lambda s: {"job_posting_id": new_id(), "partner_user_id": new_id(), "request_id": new_id()},
    ),
    "GetSession": ("public", pb.GetSessionRequest, lambda s: {"session_id": s.session_id}),
    "PauseSession": ("public", pb.PauseSessionRequest, lambda s: {"session_id": s.session_id}),
    "ResumeSession": ("public", pb.ResumeSessionRequest, lambda s: {"session_id": s.session_id}),
    "CompleteSession": ("public", pb.CompleteSessionRequest, lambda s: {"session_id": s.session_id}),
    "RetakeSession": (
        "public",
        pb.RetakeSessionRequest,
        lambda s: {"session_id": s.session_id, "request_id": new_id()},
    ),
    "ListRetakes": ("public", pb.ListRetakesRequest, lambda s: {"session_id": s.session_id}),
    "AppendMessage": (
        "public",
        pb.AppendMessageRequest,
        lambda s: {
            "session_id": s.session_id,
            "role": pb.MESSAGE_ROLE_QUESTION,
            "content": "Why?",
            "request_id": new_id(),
        },
    ),
    "ListMessages": ("public", pb.ListMessagesRequest, lambda s: {"session_id": s.session_id}),
    "LookupSession": ("internal", pb.LookupSessionRequest, lambda s: {"session_id": s.session_id}),
    "CompletePairedSession": (
        "internal",
        pb.CompletePairedSessionRequest,
        lambda s: {"session_id": s.session_id},
    ),
    "ReleaseJobPosting": (
        "internal",
        pb.ReleaseJobPostingRequest,
        lambda s: {"job_posting_id": s.job_posting_id},
    ),
}
ID_FIELDS = [
    ("CreateSession", "job_posting_id"),
    ("CreateSession", "partner_user_id"),
    ("CreateSession", "request_id"),
    ("GetSession", "session_id"),
    ("PauseSession", "session_id"),
    ("ResumeSession", "session_id"),
    ("CompleteSession", "session_id"),
    ("RetakeSession", "session_id"),
    ("RetakeSession", "request_id"),
    ("ListRetakes", "session_id"),
    ("AppendMessage", "session_id"),
    ("AppendMessage", "request_id"),
    ("ListMessages", "session_id"),
    ("LookupSession", "session_id"),
    ("CompletePairedSession", "session_id"),
    ("ReleaseJobPosting", "job_posting_id"),
]
REQUIRED_ID_FIELDS = [(rpc, f) for rpc, f in ID_FIELDS if f in ("session_id", "job_posting_id")]


async def prepared_session(sessions, as_user, owner, rpc):
    """A session of `owner`, in a state where the valid form of `rpc` would succeed."""
    if rpc in ("CompleteSession", "RetakeSession"):
        created = await create(sessions, as_user(owner))
    else:
        created = await create(sessions, as_user(owner), partner=new_id())
    sid = created.session_id
    if rpc == "ResumeSession":
        await sessions.PauseSession(pb.PauseSessionRequest(session_id=sid), metadata=as_user(owner))
    if rpc == "RetakeSession":
        await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=sid), metadata=as_user(owner))
    return created


def stub_call(rpc, sessions, internal, as_user, as_service, owner, request):
    kind = RPCS[rpc][0]
    stub = sessions if kind == "public" else internal
    metadata = as_user(owner) if kind == "public" else as_service
    return getattr(stub, rpc)(request, metadata=metadata)


def bad_id_cases():
    for rpc, field in ID_FIELDS:
        for name, value in MALFORMED_UUIDS.items():
            yield pytest.param(rpc, field, value, id=f"{rpc}.{field}-{name}")
    for rpc, field in REQUIRED_ID_FIELDS:
        yield pytest.param(rpc, field, "", id=f"{rpc}.{field}-empty")


@pytest.mark.parametrize(("rpc", "field", "value"), list(bad_id_cases()))
async def test_a_malformed_or_missing_id_is_an_invalid_argument_naming_the_field(
    sessions, internal, as_user, as_service, db, rpc, field, value
):
    owner = new_id()
    source = await prepared_session(sessions, as_user, owner, rpc)
    _, request_type, valid = RPCS[rpc]
    fields = valid(source)
    before = await snapshot(db, owner, source.session_id)

    await expect_invalid(
        stub_call(
            rpc, sessions, internal, as_user, as_service, owner, request_type(**{**fields, field: value})
        ),
        field,
        domain=DOMAIN,
    )

    assert await snapshot(db, owner, source.session_id) == before
    # The same request with the field made valid again is served: the field alone was the problem.
    await stub_call(rpc, sessions, internal, as_user, as_service, owner, request_type(**fields))


# --- CreateSession specifics --------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["same", "uppercase"])
async def test_a_partner_equal_to_the_caller_is_an_invalid_argument(sessions, as_user, db, shape):
    owner = new_id()
    partner = owner if shape == "same" else owner.upper()
    await expect_invalid(
        sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=partner, request_id=new_id()),
            metadata=as_user(owner),
        ),
        "partner_user_id",
        domain=DOMAIN,
    )
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 0


async def test_a_rejected_create_does_not_burn_its_request_id(sessions, as_user, db):
    owner, request_id = new_id(), new_id()
    await expect_invalid(
        sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id="bad", request_id=request_id), metadata=as_user(owner)
        ),
        "job_posting_id",
        domain=DOMAIN,
    )
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 0
    posting = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=posting, request_id=request_id), metadata=as_user(owner)
    )
    assert created.job_posting_id == posting


# --- Enums --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [pb.MESSAGE_ROLE_UNSPECIFIED, 3, 99, -1])
async def test_an_unknown_message_role_is_an_invalid_argument(sessions, as_user, db, role):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    before = await snapshot(db, owner, created.session_id)
    await expect_invalid(
        sessions.AppendMessage(
            pb.AppendMessageRequest(session_id=created.session_id, role=role, content="Why?"),
            metadata=as_user(owner),
        ),
        "role",
        domain=DOMAIN,
    )
    assert await snapshot(db, owner, created.session_id) == before


@pytest.mark.parametrize("status", [4, 99, -1])
async def test_an_unknown_status_filter_is_an_invalid_argument(sessions, as_user, status):
    owner = new_id()
    await create(sessions, as_user(owner))
    await expect_invalid(
        sessions.ListSessions(pb.ListSessionsRequest(status=status), metadata=as_user(owner)),
        "status",
        domain=DOMAIN,
    )


# --- Message content ----------------------------------------------------------------------------

BAD_CONTENT = {
    "empty": "",
    "one ascii char too long": "a" * (MAX_CONTENT + 1),
    "one emoji too long": "😀" * (MAX_CONTENT + 1),
    "NUL in the middle": "before\x00after",
    "only NUL": "\x00",
}


@pytest.mark.parametrize("content", list(BAD_CONTENT.values()), ids=list(BAD_CONTENT))
@pytest.mark.parametrize(
    "role", [pb.MESSAGE_ROLE_QUESTION, pb.MESSAGE_ROLE_ANSWER], ids=["question", "answer"]
)
async def test_bad_message_content_is_an_invalid_argument(sessions, as_user, db, content, role):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    sid = created.session_id
    await sessions.AppendMessage(
        pb.AppendMessageRequest(session_id=sid, role=pb.MESSAGE_ROLE_QUESTION, content="Q1?"),
        metadata=as_user(owner),
    )
    before = await snapshot(db, owner, sid)

    await expect_invalid(
        sessions.AppendMessage(
            pb.AppendMessageRequest(session_id=sid, role=role, content=content, request_id=new_id()),
            metadata=as_user(owner),
        ),
        "content",
        domain=DOMAIN,
    )

    assert await snapshot(db, owner, sid) == before
    got = await sessions.GetSession(pb.GetSessionRequest(session_id=sid), metadata=as_user(owner))
    assert got.current_question_number == 1


@pytest.mark.parametrize("char", ["a", "😀", "é"], ids=["ascii", "emoji", "two-byte"])
async def test_content_of_exactly_the_maximum_code_points_is_accepted(sessions, as_user, db, char):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    content = char * MAX_CONTENT

    message = await sessions.AppendMessage(
        pb.AppendMessageRequest(
            session_id=created.session_id, role=pb.MESSAGE_ROLE_QUESTION, content=content
        ),
        metadata=as_user(owner),
    )

    assert message.content == content
    assert message.question_number == 1
    stored = await db.fetchrow(
        "SELECT content, char_length(content) AS n FROM sessions.messages WHERE message_id = $1",
        message.message_id,
    )
    assert stored["n"] == MAX_CONTENT
    assert stored["content"] == content
    listed = await sessions.ListMessages(
        pb.ListMessagesRequest(session_id=created.session_id), metadata=as_user(owner)
    )
    assert [m.content for m in listed.messages] == [content]


# --- Page sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [-1, -2147483648])
async def test_a_negative_page_size_on_list_sessions_is_an_invalid_argument(sessions, as_user, page_size):
    owner = new_id()
    await create(sessions, as_user(owner))
    await expect_invalid(
        sessions.ListSessions(pb.ListSessionsRequest(page_size=page_size), metadata=as_user(owner)),
        "page_size",
        domain=DOMAIN,
    )


@pytest.mark.parametrize("page_size", [-1, -2147483648])
async def test_a_negative_page_size_on_list_messages_is_an_invalid_argument(sessions, as_user, page_size):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    await expect_invalid(
        sessions.ListMessages(
            pb.ListMessagesRequest(session_id=created.session_id, page_size=page_size),
            metadata=as_user(owner),
        ),
        "page_size",
        domain=DOMAIN,
    )


# --- Several bad fields at once -----------------------------------------------------------------


async def test_every_bad_field_of_a_create_is_named_in_one_error(sessions, as_user, db):
    owner = new_id()
    await expect_invalid(
        sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id="x", partner_user_id="y", request_id="z"),
            metadata=as_user(owner),
        ),
        "job_posting_id",
        "partner_user_id",
        "request_id",
        domain=DOMAIN,
    )
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 0


async def test_every_bad_field_of_an_append_is_named_in_one_error(sessions, as_user, db):
    owner = new_id()
    created = await create(sessions, as_user(owner))
    before = await snapshot(db, owner, created.session_id)
    await expect_invalid(
        sessions.AppendMessage(
            pb.AppendMessageRequest(session_id="nope", role=99, content="", request_id="nope"),
            metadata=as_user(owner),
        ),
        "session_id",
        "role",
        "content",
        "request_id",
        domain=DOMAIN,
    )
    assert await snapshot(db, owner, created.session_id) == before


async def test_every_bad_field_of_a_list_is_named_in_one_error(sessions, as_user):
    owner = new_id()
    await expect_invalid(
        sessions.ListSessions(
            pb.ListSessionsRequest(status=99, page_size=-5, page_token="not-a-token"), metadata=as_user(owner)
        ),
        "status",
        "page_size",
        "page_token",
        domain=DOMAIN,
    )
    await expect_invalid(
        sessions.ListMessages(
            pb.ListMessagesRequest(session_id="nope", page_size=-5, page_token="not-a-token"),
            metadata=as_user(owner),
        ),
        "session_id",
        "page_size",
        "page_token",
        domain=DOMAIN,
    )


async def test_a_partner_equal_to_the_caller_is_reported_with_the_other_bad_fields(sessions, as_user):
    owner = new_id()
    await expect_invalid(
        sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id="", partner_user_id=owner, request_id="nope"),
            metadata=as_user(owner),
        ),
        "job_posting_id",
        "partner_user_id",
        "request_id",
        domain=DOMAIN,
    )


# --- Uppercase UUIDs ----------------------------------------------------------------------------


async def test_uppercase_uuids_are_accepted_and_returned_lowercase(
    sessions, internal, as_user, as_service, db
):
    owner, partner, posting, request_id = new_id(), new_id(), new_id(), new_id()

    created = await sessions.CreateSession(
        pb.CreateSessionRequest(
            job_posting_id=posting.upper(), partner_user_id=partner.upper(), request_id=request_id.upper()
        ),
        metadata=as_user(owner),
    )
    assert created.job_posting_id == posting
    assert created.partner_user_id == partner
    assert created.session_id == created.session_id.lower()
    sid = created.session_id

    again = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), request_id=request_id), metadata=as_user(owner)
    )
    assert again == created
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 1

    got = await sessions.GetSession(pb.GetSessionRequest(session_id=sid.upper()), metadata=as_user(partner))
    assert got == created
    paused = await sessions.PauseSession(
        pb.PauseSessionRequest(session_id=sid.upper()), metadata=as_user(owner)
    )
    assert paused.session_id == sid
    resumed = await sessions.ResumeSession(
        pb.ResumeSessionRequest(session_id=sid.upper()), metadata=as_user(partner)
    )
    assert resumed.status == pb.SESSION_STATUS_ACTIVE
    message = await sessions.AppendMessage(
        pb.AppendMessageRequest(session_id=sid.upper(), role=pb.MESSAGE_ROLE_QUESTION, content="Q?"),
        metadata=as_user(owner),
    )
    assert message.session_id == sid
    assert message.message_id == message.message_id.lower()
    listed = await sessions.ListMessages(
        pb.ListMessagesRequest(session_id=sid.upper()), metadata=as_user(owner)
    )
    assert list(listed.messages) == [message]
    looked_up = await internal.LookupSession(
        pb.LookupSessionRequest(session_id=sid.upper()), metadata=as_service
    )
    assert looked_up.session_id == sid
    released = await internal.ReleaseJobPosting(
        pb.ReleaseJobPostingRequest(job_posting_id=posting.upper()), metadata=as_service
    )
    assert released.sessions_updated == 1
    assert (
        await db.fetchval("SELECT job_posting_id FROM sessions.sessions WHERE session_id = $1", sid) is None
    )


async def test_a_user_id_in_the_token_that_is_not_canonical_is_unauthenticated(sessions, jwt_settings, db):
    # One user, one spelling: an uppercase subject would otherwise be a second name for the same user.
    owner = new_id()
    await expect_error(
        sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id()),
            metadata=user_metadata(jwt_settings, owner.upper()),
        ),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE user_id = $1", owner) == 0
