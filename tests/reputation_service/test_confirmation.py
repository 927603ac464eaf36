"""ConfirmCompletion and GetConfirmation: mutual confirmation of paired sessions, awards, repeats, errors."""

import asyncio

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.auth import mint
from tests.helpers import (
    MALFORMED_UUIDS,
    confirm,
    create,
    expect_reputation_error,
    get,
    get_confirmation,
    get_reputation,
    new_id,
    paired,
    service_metadata,
    wait_for_delivery_mark,
)

DOMAIN = "interview.reputation"
REPUTATION_TABLES = ("paired_sessions", "confirmations", "events", "outbox")


# --- helpers -------------------------------------------------------------------------------------


async def row_counts(db, session_id):
    """How many rows each reputation table holds for the session."""
    return {
        table: await db.fetchval(f"SELECT count(*) FROM reputation.{table} WHERE session_id = $1", session_id)
        for table in REPUTATION_TABLES
    }


async def db_snapshot(db, session_id, users):
    """Every reputation row the session or its users could have, once its delivery is marked."""
    await wait_for_delivery_mark(db, session_id)
    rows = {}
    for table in REPUTATION_TABLES:
        found = await db.fetch(
            f"SELECT * FROM reputation.{table} WHERE session_id = $1 ORDER BY 1, 2", session_id
        )
        rows[table] = [dict(r) for r in found]
    found = await db.fetch("SELECT * FROM reputation.scores WHERE user_id = ANY($1::uuid[])", list(users))
    rows["scores"] = sorted((dict(r) for r in found), key=lambda r: str(r["user_id"]))
    return rows


NOTHING = dict.fromkeys(REPUTATION_TABLES, 0)


def assert_first_confirmation(reply, session_id, caller, status=pb.SESSION_STATUS_ACTIVE):
    assert reply.session_id == session_id
    assert list(reply.confirmed_user_ids) == [caller]
    assert reply.both_confirmed is False
    assert reply.reputation_awarded is False
    assert reply.completion_pending is False
    assert reply.session_status == status


def assert_completed(reply, session_id, owner, partner):
    assert reply.session_id == session_id
    assert list(reply.confirmed_user_ids) == sorted([owner, partner])
    assert reply.both_confirmed is True
    assert reply.reputation_awarded is True
    assert reply.completion_pending is False
    assert reply.session_status == pb.SESSION_STATUS_COMPLETED


# --- First confirmation --------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["owner", "partner"])
async def test_the_first_confirmation_is_recorded_and_nothing_else_happens(
    sessions, reputation, as_user, db, first
):
    session_id, owner, partner = await paired(sessions, as_user)
    caller = owner if first == "owner" else partner

    reply = await confirm(reputation, as_user(caller), session_id)

    assert_first_confirmation(reply, session_id, caller)
    seen = await get(sessions, as_user(owner), session_id)
    assert seen.status == pb.SESSION_STATUS_ACTIVE
    assert not seen.HasField("complete_time")
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(new_id()), user)
        assert (score.score, score.confirmed_sessions) == (0, 0)
        assert not score.HasField("update_time")
    assert await row_counts(db, session_id) == {**NOTHING, "paired_sessions": 1, "confirmations": 1}
    stored = await db.fetchrow("SELECT * FROM reputation.confirmations WHERE session_id = $1", session_id)
    assert str(stored["user_id"]) == caller
    assert (
        await db.fetchval(
            "SELECT count(*) FROM reputation.confirmation_requests WHERE session_id = $1", session_id
        )
        == 0
    )


# --- Second confirmation -------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["owner", "partner"])
async def test_the_second_confirmation_completes_the_session_and_awards_both_once(
    sessions, reputation, as_user, db, first
):
    session_id, owner, partner = await paired(sessions, as_user)
    one, other = (owner, partner) if first == "owner" else (partner, owner)
    await confirm(reputation, as_user(one), session_id)

    reply = await confirm(reputation, as_user(other), session_id)

    assert_completed(reply, session_id, owner, partner)
    for caller in (owner, partner):
        seen = await get(sessions, as_user(caller), session_id)
        assert seen.status == pb.SESSION_STATUS_COMPLETED
        assert seen.HasField("complete_time")
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(new_id()), user)
        assert score.user_id == user
        assert (score.score, score.confirmed_sessions) == (1, 1)
        assert score.HasField("update_time")

    events = await db.fetch(
        "SELECT user_id, delta, reason FROM reputation.events WHERE session_id = $1 ORDER BY user_id",
        session_id,
    )
    assert [(str(e["user_id"]), e["delta"], e["reason"]) for e in events] == [
        (user, 1, "MUTUAL_CONFIRMATION") for user in sorted([owner, partner])
    ]
    await wait_for_delivery_mark(db, session_id)
    outbox = await db.fetch("SELECT * FROM reputation.outbox WHERE session_id = $1", session_id)
    assert len(outbox) == 1
    # Marked after the reply, and for the inline delivery: a relay's attempt would count a second.
    assert outbox[0]["deliver_time"] is not None and outbox[0]["attempts"] == 1
    stored = await db.fetchrow("SELECT * FROM reputation.paired_sessions WHERE session_id = $1", session_id)
    assert stored["award_time"] is not None
    assert stored["last_known_status"] == "completed"


async def test_a_paused_paired_session_can_be_confirmed_and_ends_completed(sessions, reputation, as_user, db):
    session_id, owner, partner = await paired(sessions, as_user)
    await sessions.PauseSession(pb.PauseSessionRequest(session_id=session_id), metadata=as_user(partner))

    first = await confirm(reputation, as_user(owner), session_id)
    assert_first_confirmation(first, session_id, owner, status=pb.SESSION_STATUS_PAUSED)
    assert (await get(sessions, as_user(owner), session_id)).status == pb.SESSION_STATUS_PAUSED

    second = await confirm(reputation, as_user(partner), session_id)

    assert_completed(second, session_id, owner, partner)
    seen = await get(sessions, as_user(owner), session_id)
    assert seen.status == pb.SESSION_STATUS_COMPLETED
    assert seen.HasField("complete_time")
    for user in (owner, partner):
        assert (await get_reputation(reputation, as_user(new_id()), user)).score == 1
    assert await row_counts(db, session_id) == {
        "paired_sessions": 1,
        "confirmations": 2,
        "events": 2,
        "outbox": 1,
    }


async def test_both_participants_confirming_at_once_award_each_exactly_once(
    sessions, reputation, as_user, db
):
    session_id, owner, partner = await paired(sessions, as_user)

    replies = await asyncio.gather(
        confirm(reputation, as_user(owner), session_id), confirm(reputation, as_user(partner), session_id)
    )

    assert all(reply.session_id == session_id for reply in replies)
    final = await get_confirmation(reputation, as_user(owner), session_id)
    assert_completed(final, session_id, owner, partner)
    assert (await get(sessions, as_user(owner), session_id)).status == pb.SESSION_STATUS_COMPLETED
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(new_id()), user)
        assert (score.score, score.confirmed_sessions) == (1, 1)
    assert await row_counts(db, session_id) == {
        "paired_sessions": 1,
        "confirmations": 2,
        "events": 2,
        "outbox": 1,
    }


# --- Repeats -------------------------------------------------------------------------------------


async def test_confirming_twice_before_the_other_participant_keeps_one_confirmation(
    sessions, reputation, as_user, db
):
    session_id, owner, partner = await paired(sessions, as_user)
    first = await confirm(reputation, as_user(owner), session_id)

    again = await confirm(reputation, as_user(owner), session_id)
    with_new_request_id = await confirm(reputation, as_user(owner), session_id, request_id=new_id())

    assert again == first
    assert with_new_request_id == first
    assert_first_confirmation(again, session_id, owner)
    assert await row_counts(db, session_id) == {**NOTHING, "paired_sessions": 1, "confirmations": 1}
    assert (await get(sessions, as_user(owner), session_id)).status == pb.SESSION_STATUS_ACTIVE
    for user in (owner, partner):
        assert (await get_reputation(reputation, as_user(new_id()), user)).score == 0


async def test_confirming_again_after_completion_returns_the_same_state_and_awards_nothing_more(
    sessions, reputation, as_user, db
):
    session_id, owner, partner = await paired(sessions, as_user)
    await confirm(reputation, as_user(owner), session_id)
    completed = await confirm(reputation, as_user(partner), session_id)
    before = await db_snapshot(db, session_id, [owner, partner])
    completed_at = (await get(sessions, as_user(owner), session_id)).complete_time

    for _ in range(3):
        for caller in (owner, partner):
            again = await confirm(reputation, as_user(caller), session_id)
            assert again == completed
            assert_completed(again, session_id, owner, partner)
        again = await confirm(reputation, as_user(partner), session_id, request_id=new_id())
        assert again == completed

    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(new_id()), user)
        assert (score.score, score.confirmed_sessions) == (1, 1)
    assert await db_snapshot(db, session_id, [owner, partner]) == before
    seen = await get(sessions, as_user(owner), session_id)
    assert seen.status == pb.SESSION_STATUS_COMPLETED
    assert seen.complete_time == completed_at


async def test_a_users_score_counts_each_completed_session(sessions, reputation, as_user, db):
    user, first_buddy, second_buddy = new_id(), new_id(), new_id()
    first, _, _ = await paired(sessions, as_user, owner=user, partner=first_buddy)
    second, _, _ = await paired(sessions, as_user, owner=second_buddy, partner=user)

    for session_id, buddy in ((first, first_buddy), (second, second_buddy)):
        await confirm(reputation, as_user(user), session_id)
        await confirm(reputation, as_user(buddy), session_id)

    score = await get_reputation(reputation, as_user(new_id()), user)
    assert (score.score, score.confirmed_sessions) == (2, 2)
    for buddy in (first_buddy, second_buddy):
        assert (await get_reputation(reputation, as_user(new_id()), buddy)).score == 1
    events = await db.fetch("SELECT session_id FROM reputation.events WHERE user_id = $1", user)
    assert sorted(str(e["session_id"]) for e in events) == sorted([first, second])


# --- request_id ----------------------------------------------------------------------------------


async def test_the_same_request_id_twice_gives_the_same_answer(sessions, reputation, as_user, db):
    session_id, owner, _ = await paired(sessions, as_user)
    request_id = new_id()

    first = await confirm(reputation, as_user(owner), session_id, request_id)
    second = await confirm(reputation, as_user(owner), session_id, request_id)

    assert second == first
    assert_first_confirmation(second, session_id, owner)
    stored = await db.fetch(
        "SELECT user_id, request_id FROM reputation.confirmation_requests WHERE session_id = $1", session_id
    )
    assert [(str(r["user_id"]), str(r["request_id"])) for r in stored] == [(owner, request_id)]
    assert (
        await db.fetchval("SELECT count(*) FROM reputation.confirmations WHERE session_id = $1", session_id)
        == 1
    )


async def test_a_request_id_reused_with_another_session_answers_for_the_first_session(
    sessions, reputation, as_user, db
):
    user = new_id()
    first_id, _, _ = await paired(sessions, as_user, owner=user)
    other_id, _, _ = await paired(sessions, as_user, owner=user)
    request_id = new_id()
    first = await confirm(reputation, as_user(user), first_id, request_id)

    reused = await confirm(reputation, as_user(user), other_id, request_id)

    assert reused == first
    assert reused.session_id == first_id
    assert await row_counts(db, other_id) == NOTHING
    assert list((await get_confirmation(reputation, as_user(user), other_id)).confirmed_user_ids) == []


async def test_a_request_id_reused_after_completion_with_another_session_still_answers_for_the_first(
    sessions, reputation, as_user, db
):
    session_id, owner, partner = await paired(sessions, as_user)
    other_id, _, _ = await paired(sessions, as_user, owner=owner)
    request_id = new_id()
    await confirm(reputation, as_user(owner), session_id, request_id)
    completed = await confirm(reputation, as_user(partner), session_id)

    reused = await confirm(reputation, as_user(owner), other_id, request_id)

    assert reused == completed
    assert await row_counts(db, other_id) == NOTHING


async def test_a_request_id_first_sent_on_a_repeat_confirmation_answers_for_that_session_when_reused(
    sessions, reputation, as_user, db
):
    """The first call carrying this request_id was a (harmless) repeat on `session_id`; its reuse
    with another session must still answer for `session_id` and record nothing elsewhere."""
    session_id, owner, _ = await paired(sessions, as_user)
    other_id, _, _ = await paired(sessions, as_user, owner=owner)
    await confirm(reputation, as_user(owner), session_id)
    request_id = new_id()
    first = await confirm(reputation, as_user(owner), session_id, request_id)

    reused = await confirm(reputation, as_user(owner), other_id, request_id)

    assert reused == first
    assert await row_counts(db, other_id) == NOTHING


async def test_request_ids_belong_to_their_caller(sessions, reputation, as_user, db):
    session_id, owner, partner = await paired(sessions, as_user)
    request_id = new_id()
    await confirm(reputation, as_user(owner), session_id, request_id)

    reply = await confirm(reputation, as_user(partner), session_id, request_id)

    assert reply.both_confirmed and reply.reputation_awarded
    stored = await db.fetch(
        "SELECT user_id, request_id FROM reputation.confirmation_requests "
        "WHERE session_id = $1 ORDER BY user_id",
        session_id,
    )
    assert [(str(r["user_id"]), str(r["request_id"])) for r in stored] == [
        (user, request_id) for user in sorted([owner, partner])
    ]


# --- Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("confirmed_by", ["nobody", "owner", "both"])
async def test_a_non_participant_gets_session_not_found(sessions, reputation, as_user, db, confirmed_by):
    session_id, owner, partner = await paired(sessions, as_user)
    for caller in {"nobody": [], "owner": [owner], "both": [owner, partner]}[confirmed_by]:
        await confirm(reputation, as_user(caller), session_id)
    stranger = new_id()
    before = await db_snapshot(db, session_id, [owner, partner, stranger])

    for call in (
        confirm(reputation, as_user(stranger), session_id),
        confirm(reputation, as_user(stranger), session_id, request_id=new_id()),
        get_confirmation(reputation, as_user(stranger), session_id),
    ):
        error = await expect_reputation_error(call, grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
        assert error.metadata.get("session_id") == session_id

    assert await db_snapshot(db, session_id, [owner, partner, stranger]) == before
    assert (await get_reputation(reputation, as_user(new_id()), stranger)).score == 0


async def test_an_unknown_session_is_session_not_found(reputation, as_user, db):
    missing, caller = new_id(), new_id()

    for call in (
        confirm(reputation, as_user(caller), missing),
        get_confirmation(reputation, as_user(caller), missing),
    ):
        error = await expect_reputation_error(call, grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
        assert error.metadata.get("session_id") == missing
    assert await row_counts(db, missing) == NOTHING


async def test_non_participant_and_unknown_session_errors_look_the_same(sessions, reputation, as_user):
    session_id, _, _ = await paired(sessions, as_user)
    stranger, missing = new_id(), new_id()

    hidden = await expect_reputation_error(
        confirm(reputation, as_user(stranger), session_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )
    absent = await expect_reputation_error(
        confirm(reputation, as_user(stranger), missing), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )

    assert hidden.message == absent.message
    assert hidden.metadata.keys() == absent.metadata.keys()


async def test_confirming_a_solo_session_is_not_a_paired_session_and_writes_nothing(
    sessions, reputation, as_user, db
):
    owner = new_id()
    session_id = (await create(sessions, as_user(owner))).session_id

    for _ in range(2):
        await expect_reputation_error(
            confirm(reputation, as_user(owner), session_id),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_A_PAIRED_SESSION",
        )

    assert await row_counts(db, session_id) == NOTHING
    assert await db.fetchval("SELECT count(*) FROM reputation.scores WHERE user_id = $1", owner) == 0
    assert (await get(sessions, as_user(owner), session_id)).status == pb.SESSION_STATUS_ACTIVE


async def test_confirming_a_solo_session_as_a_stranger_is_session_not_found(sessions, reputation, as_user):
    session_id = (await create(sessions, as_user(new_id()))).session_id

    await expect_reputation_error(
        confirm(reputation, as_user(new_id()), session_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )


@pytest.mark.parametrize("caller_role", ["owner", "partner"])
async def test_confirming_a_session_completed_elsewhere_is_session_already_completed(
    sessions, internal, reputation, as_user, as_service, db, caller_role
):
    session_id, owner, partner = await paired(sessions, as_user)
    await internal.CompletePairedSession(
        pb.CompletePairedSessionRequest(session_id=session_id), metadata=as_service
    )
    caller = owner if caller_role == "owner" else partner

    await expect_reputation_error(
        confirm(reputation, as_user(caller), session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "SESSION_ALREADY_COMPLETED",
    )

    assert await row_counts(db, session_id) == NOTHING
    for user in (owner, partner):
        assert (await get_reputation(reputation, as_user(new_id()), user)).score == 0


def malformed_cases():
    for name, value in MALFORMED_UUIDS.items():
        yield pytest.param("session_id", value, id=f"session_id-{name}")
        yield pytest.param("request_id", value, id=f"request_id-{name}")
    yield pytest.param("session_id", "", id="session_id-empty")


@pytest.mark.parametrize(("field", "value"), list(malformed_cases()))
async def test_a_malformed_id_is_an_invalid_argument_naming_the_field(
    sessions, reputation, as_user, db, field, value
):
    session_id, owner, _ = await paired(sessions, as_user)
    fields = {"session_id": session_id, "request_id": new_id(), field: value}

    error = await expect_reputation_error(
        reputation.ConfirmCompletion(rpb.ConfirmCompletionRequest(**fields), metadata=as_user(owner)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert set(error.fields) == {field}, error
    assert error.fields[field]
    assert await row_counts(db, session_id) == NOTHING


async def test_every_malformed_field_is_named_at_once(reputation, as_user):
    error = await expect_reputation_error(
        reputation.ConfirmCompletion(
            rpb.ConfirmCompletionRequest(session_id="nope", request_id="nope either"),
            metadata=as_user(new_id()),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert set(error.fields) == {"session_id", "request_id"}


def bad_tokens(settings):
    return {
        "no metadata": (),
        "garbage token": (("authorization", "Bearer not-a-jwt"),),
        "not bearer": (("authorization", "Basic dXNlcjpwYXNzd29yZA=="),),
        "expired": (("authorization", "Bearer " + mint(settings, settings.key, new_id(), -300)),),
        "another key": (
            (
                "authorization",
                "Bearer " + mint(settings, "another-key-that-is-long-enough-for-hs256-0123", new_id(), 300),
            ),
        ),
    }


@pytest.mark.parametrize("case", ["no metadata", "garbage token", "not bearer", "expired", "another key"])
@pytest.mark.parametrize("rpc", ["ConfirmCompletion", "GetConfirmation"])
async def test_a_missing_or_bad_token_is_unauthenticated(
    sessions, reputation, as_user, jwt_settings, db, rpc, case
):
    session_id, _, _ = await paired(sessions, as_user)
    request = (
        rpb.ConfirmCompletionRequest(session_id=session_id)
        if rpc == "ConfirmCompletion"
        else rpb.GetConfirmationRequest(session_id=session_id)
    )

    await expect_reputation_error(
        getattr(reputation, rpc)(request, metadata=bad_tokens(jwt_settings)[case]),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )

    assert await row_counts(db, session_id) == NOTHING


async def test_authentication_is_checked_before_arguments(reputation):
    await expect_reputation_error(
        reputation.ConfirmCompletion(rpb.ConfirmCompletionRequest(session_id="not-a-uuid")),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


@pytest.mark.parametrize("roles", [None, []], ids=["with sessions.internal", "without roles"])
async def test_a_service_token_is_permission_denied(sessions, reputation, as_user, service_keys, db, roles):
    session_id, _, _ = await paired(sessions, as_user)
    metadata = service_metadata(service_keys, roles=roles)

    for call in (
        reputation.ConfirmCompletion(rpb.ConfirmCompletionRequest(session_id=session_id), metadata=metadata),
        reputation.GetConfirmation(rpb.GetConfirmationRequest(session_id=session_id), metadata=metadata),
    ):
        await expect_reputation_error(call, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")

    assert await row_counts(db, session_id) == NOTHING


# --- GetConfirmation -----------------------------------------------------------------------------


async def test_get_confirmation_follows_the_confirmations_and_changes_nothing(
    sessions, reputation, as_user, db
):
    session_id, owner, partner = await paired(sessions, as_user)

    for caller in (owner, partner):
        before = await get_confirmation(reputation, as_user(caller), session_id)
        assert before.session_id == session_id
        assert list(before.confirmed_user_ids) == []
        assert (before.both_confirmed, before.reputation_awarded, before.completion_pending) == (
            False,
            False,
            False,
        )
        assert before.session_status == pb.SESSION_STATUS_ACTIVE
    assert await row_counts(db, session_id) == NOTHING

    first = await confirm(reputation, as_user(partner), session_id)
    snapshot = await db_snapshot(db, session_id, [owner, partner])
    for caller in (owner, partner):
        after_one = await get_confirmation(reputation, as_user(caller), session_id)
        assert after_one == first
        assert_first_confirmation(after_one, session_id, partner)
    assert await db_snapshot(db, session_id, [owner, partner]) == snapshot
    assert (await get(sessions, as_user(owner), session_id)).status == pb.SESSION_STATUS_ACTIVE

    completed = await confirm(reputation, as_user(owner), session_id)
    snapshot = await db_snapshot(db, session_id, [owner, partner])
    for caller in (owner, partner):
        after_both = await get_confirmation(reputation, as_user(caller), session_id)
        assert after_both == completed
        assert_completed(after_both, session_id, owner, partner)
    assert await db_snapshot(db, session_id, [owner, partner]) == snapshot
    for user in (owner, partner):
        assert (await get_reputation(reputation, as_user(new_id()), user)).score == 1


async def test_get_confirmation_of_a_paused_session_reports_it_paused(sessions, reputation, as_user, db):
    session_id, owner, partner = await paired(sessions, as_user)
    await sessions.PauseSession(pb.PauseSessionRequest(session_id=session_id), metadata=as_user(owner))

    reply = await get_confirmation(reputation, as_user(partner), session_id)

    assert reply.session_status == pb.SESSION_STATUS_PAUSED
    assert list(reply.confirmed_user_ids) == []
    assert await row_counts(db, session_id) == NOTHING


async def test_get_confirmation_of_a_solo_session_is_not_a_paired_session(sessions, reputation, as_user, db):
    owner = new_id()
    session_id = (await create(sessions, as_user(owner))).session_id

    await expect_reputation_error(
        get_confirmation(reputation, as_user(owner), session_id),
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_A_PAIRED_SESSION",
    )
    assert await row_counts(db, session_id) == NOTHING


@pytest.mark.parametrize("value", [*MALFORMED_UUIDS.values(), ""], ids=[*MALFORMED_UUIDS, "empty"])
async def test_get_confirmation_with_a_malformed_session_id_is_an_invalid_argument(
    reputation, as_user, value
):
    error = await expect_reputation_error(
        reputation.GetConfirmation(rpb.GetConfirmationRequest(session_id=value), metadata=as_user(new_id())),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )

    assert set(error.fields) == {"session_id"}
