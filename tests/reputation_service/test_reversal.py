"""ReputationInternalService.ReverseSessionAwards: a moderator's compensating REVERSAL events, which
scores and confirmed_sessions follow; idempotent (a repeat writes nothing and returns the first
reversal's events), safe under concurrency; service tokens with role reputation.moderate only (the
kind checked before the arguments); NOT_FOUND / NOT_AWARDED / INVALID_ARGUMENT; a reversal frees no
cap slot."""

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc

from common.auth import ServiceTokenSigner, mint
from tests.helpers import (
    MALFORMED_UUIDS,
    SAMPLE_ID,
    confirm,
    create,
    expect_invalid,
    expect_reputation_error,
    get_confirmation,
    get_reputation,
    list_events,
    new_id,
    new_private_key,
    paired,
    service_metadata,
    stamp,
    user_metadata,
    wait_for,
    wait_for_delivery_mark,
)
from tests.servers import reputation_config_for, running_reputation

DOMAIN = "interview.reputation"
MODERATE = "reputation.moderate"
REASON = "serial confirmations between two accounts of one person"


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def moderation(reputation_server):
    """ReputationInternalService on the shared reputation server (caps off)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reputation_server.port}") as channel:
        yield reputation_pb2_grpc.ReputationInternalServiceStub(channel)


@pytest.fixture
def as_moderator(service_keys):
    """A fresh service token (they live at most 300 s) with role reputation.moderate."""
    return service_metadata(service_keys, roles=[MODERATE], name="moderation")


async def reverse(moderation, md, session_id, reason=REASON, request_id="", **options):
    request = rpb.ReverseSessionAwardsRequest(session_id=session_id, reason=reason, request_id=request_id)
    return await moderation.ReverseSessionAwards(request, metadata=md, **options)


async def awarded(sessions, reputation, as_user, owner=None, partner=None):
    """A paired session confirmed by both (owner first); returns (session_id, owner, partner, reply)."""
    session_id, owner, partner = await paired(sessions, as_user, owner, partner)
    await confirm(reputation, as_user(owner), session_id)
    reply = await confirm(reputation, as_user(partner), session_id)
    # Delivered inline: once its mark is in, nothing moves in the rows (snapshots compare them).
    assert reply.both_confirmed and not reply.completion_pending, reply
    return session_id, owner, partner, reply


async def snapshot(db, session_id, users):
    """Every reputation row the session and its users have, once its delivery is marked: a reversal
    that wrote nothing leaves it unchanged."""
    await wait_for_delivery_mark(db, session_id)
    found = {}
    for table in ("paired_sessions", "confirmations", "events", "outbox"):
        rows = await db.fetch(f"SELECT * FROM reputation.{table} WHERE session_id = $1", session_id)
        found[table] = sorted((dict(r) for r in rows), key=repr)
    rows = await db.fetch("SELECT * FROM reputation.scores WHERE user_id = ANY($1::uuid[])", list(users))
    found["scores"] = sorted((dict(r) for r in rows), key=repr)
    rows = await db.fetch(
        "SELECT * FROM reputation.user_day_awards WHERE user_id = ANY($1::uuid[])", list(users)
    )
    found["user_day_awards"] = sorted((dict(r) for r in rows), key=repr)
    return found


async def event_count(db, session_id, reason=None):
    if reason is None:
        return await db.fetchval("SELECT count(*) FROM reputation.events WHERE session_id = $1", session_id)
    return await db.fetchval(
        "SELECT count(*) FROM reputation.events WHERE session_id = $1 AND reason = $2", session_id, reason
    )


async def ledger_sum(db, user):
    return await db.fetchval("SELECT coalesce(sum(delta), 0) FROM reputation.events WHERE user_id = $1", user)


@asynccontextmanager
async def capped_server(database_url, keys, session_server, **caps):
    """A reputation server of the test's own on the same database, with caps on: its public stub
    and its ReputationInternalService stub."""
    config = reputation_config_for(database_url, keys, f"127.0.0.1:{session_server.port}", **caps)
    async with (
        running_reputation(config) as (app, public),
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        yield public, reputation_pb2_grpc.ReputationInternalServiceStub(channel)


# --- Awards reversed -----------------------------------------------------------------------------


async def test_a_reversal_compensates_both_awards_and_scores_follow(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    session_id, owner, partner, confirmed = await awarded(sessions, reputation, as_user)
    assert confirmed.reputation_awarded is True
    awards = await db.fetch(
        "SELECT event_id FROM reputation.events WHERE session_id = $1 AND delta > 0", session_id
    )
    assert len(awards) == 2

    reply = await reverse(moderation, as_moderator, session_id)

    assert len(reply.events) == 2
    assert sorted(e.user_id for e in reply.events) == sorted([owner, partner])
    assert len({e.event_id for e in reply.events}) == 2
    assert not {e.event_id for e in reply.events} & {str(r["event_id"]) for r in awards}
    for event in reply.events:
        assert (event.session_id, event.delta, event.reason, event.note) == (
            session_id,
            -1,
            "REVERSAL",
            REASON,
        )
        assert event.HasField("create_time")
    # The reply is what the ledger holds.
    rows = await db.fetch(
        "SELECT * FROM reputation.events WHERE session_id = $1 AND reason = 'REVERSAL'", session_id
    )
    assert sorted(
        (str(r["event_id"]), str(r["user_id"]), r["delta"], r["note"], r["create_time"]) for r in rows
    ) == (sorted((e.event_id, e.user_id, e.delta, e.note, stamp(e.create_time)) for e in reply.events))
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(new_id()), user)
        assert (score.score, score.confirmed_sessions) == (0, 0)
        assert await ledger_sum(db, user) == score.score
    marked = await db.fetchrow("SELECT * FROM reputation.paired_sessions WHERE session_id = $1", session_id)
    assert marked["reverse_time"] is not None
    assert marked["award_time"] is not None

    for user in (owner, partner):
        seen = await get_confirmation(reputation, as_user(user), session_id)
        assert seen.reversed is True
        assert seen.reputation_awarded is True  # the awards existed
        assert seen.both_confirmed is True
        assert list(seen.capped_user_ids) == []
        assert not seen.HasField("expire_time")

    mine = await list_events(reputation, as_user(owner))
    assert [(e.reason, e.delta, e.session_id, e.note) for e in mine.events] == [
        ("REVERSAL", -1, session_id, REASON),
        ("MUTUAL_CONFIRMATION", 1, session_id, ""),
    ]
    (owner_reversal,) = [e for e in reply.events if e.user_id == owner]
    assert mine.events[0] == owner_reversal


async def test_confirming_again_after_a_reversal_changes_nothing(
    sessions, reputation, moderation, as_user, as_moderator
):
    """Confirming again after the reversal neither re-awards nor re-reverses anything."""
    session_id, owner, partner, _ = await awarded(sessions, reputation, as_user)
    await reverse(moderation, as_moderator, session_id)

    again = await confirm(reputation, as_user(owner), session_id)

    assert (again.reputation_awarded, again.reversed) == (True, True)
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(user))
        assert (score.score, score.confirmed_sessions) == (0, 0)


async def test_a_reversal_takes_back_only_that_sessions_point(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    user = new_id()
    kept, _, kept_partner, _ = await awarded(sessions, reputation, as_user, owner=user)
    taken, _, taken_partner, _ = await awarded(sessions, reputation, as_user, owner=user)

    await reverse(moderation, as_moderator, taken)

    score = await get_reputation(reputation, as_user(user))
    assert (score.score, score.confirmed_sessions) == (1, 1)
    assert await ledger_sum(db, user) == 1
    assert (await get_reputation(reputation, as_user(kept_partner))).score == 1
    assert (await get_reputation(reputation, as_user(taken_partner))).score == 0
    assert (await get_confirmation(reputation, as_user(user), kept)).reversed is False


async def test_an_uppercase_session_id_reverses_the_same_session(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    session_id, *_ = await awarded(sessions, reputation, as_user)

    reply = await reverse(moderation, as_moderator, session_id.upper())

    assert [e.session_id for e in reply.events] == [session_id, session_id]
    assert await event_count(db, session_id, "REVERSAL") == 2


@pytest.mark.parametrize(
    "reason",
    ["x", "r" * 500, "\U0001f600" * 500, "multi\nline\treason, ünïcödé"],
    ids=["one char", "500 chars", "500 emoji", "unicode"],
)
async def test_a_valid_reason_is_kept_verbatim_as_the_note(
    sessions, reputation, moderation, as_user, as_moderator, reason
):
    session_id, owner, *_ = await awarded(sessions, reputation, as_user)

    reply = await reverse(moderation, as_moderator, session_id, reason=reason)

    assert [e.note for e in reply.events] == [reason, reason]
    listed = await list_events(reputation, as_user(owner))
    assert listed.events[0].note == reason


# --- Idempotency ---------------------------------------------------------------------------------

# Each repeat's fields; a request_id is made fresh per test (one id on two sessions would be a
# repeated request, which answers for its first session).
REPEATS = {
    "same reason": lambda: {"reason": REASON},
    "another reason": lambda: {"reason": "a different reason"},
    "with a request id": lambda: {"reason": "a third reason", "request_id": new_id()},
}


@pytest.mark.parametrize("first_request_id", [False, True], ids=["first without id", "first with id"])
@pytest.mark.parametrize("repeat", list(REPEATS))
async def test_a_repeat_writes_nothing_and_returns_the_first_events(
    sessions, reputation, moderation, as_user, as_moderator, db, repeat, first_request_id
):
    session_id, owner, partner, _ = await awarded(sessions, reputation, as_user)
    first_id = new_id() if first_request_id else ""
    first = await reverse(moderation, as_moderator, session_id, reason=REASON, request_id=first_id)
    before = await snapshot(db, session_id, [owner, partner])
    events_before = await db.fetchval("SELECT count(*) FROM reputation.events")

    again = await reverse(moderation, as_moderator, session_id, **REPEATS[repeat]())
    same_id = await reverse(moderation, as_moderator, session_id, reason="x", request_id=first_id)

    assert again == first
    assert same_id == first
    assert sorted(e.event_id for e in again.events) == sorted(e.event_id for e in first.events)
    assert {e.note for e in again.events} == {REASON}
    assert await snapshot(db, session_id, [owner, partner]) == before
    assert await event_count(db, session_id, "REVERSAL") == 2
    assert await db.fetchval("SELECT count(*) FROM reputation.events") == events_before
    for user in (owner, partner):
        assert (await get_reputation(reputation, as_user(user))).score == 0


async def test_a_repeated_request_id_on_another_session_returns_the_first_result(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    """§2: a request_id is scoped to the caller and the RPC; repeated by the same caller on the
    same RPC it returns the first call's result, whatever the other fields say."""
    first_session, *_ = await awarded(sessions, reputation, as_user)
    other_session, other_owner, other_partner, _ = await awarded(sessions, reputation, as_user)
    request_id = new_id()
    first = await reverse(moderation, as_moderator, first_session, request_id=request_id)

    again = await reverse(moderation, as_moderator, other_session, reason="other", request_id=request_id)

    assert again == first
    assert await event_count(db, other_session, "REVERSAL") == 0
    for user in (other_owner, other_partner):
        assert (await get_reputation(reputation, as_user(user))).score == 1


async def test_concurrent_reversals_write_one_set_and_answer_alike(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    session_id, owner, partner, _ = await awarded(sessions, reputation, as_user)
    reasons = [f"reason {n}" for n in range(10)]

    replies = await asyncio.gather(
        *(
            reverse(moderation, as_moderator, session_id, reason=reason, request_id=new_id() if n % 2 else "")
            for n, reason in enumerate(reasons)
        )
    )

    assert all(reply == replies[0] for reply in replies)
    assert len(replies[0].events) == 2
    (note,) = {e.note for e in replies[0].events}
    assert note in reasons
    assert await event_count(db, session_id, "REVERSAL") == 2
    assert await event_count(db, session_id) == 4
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(user))
        assert (score.score, score.confirmed_sessions) == (0, 0)
        assert await ledger_sum(db, user) == 0


async def test_concurrent_reversals_of_one_pairs_sessions_each_take_their_point(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    owner, partner = new_id(), new_id()
    session_ids = [(await awarded(sessions, reputation, as_user, owner, partner))[0] for _ in range(4)]

    replies = await asyncio.gather(*(reverse(moderation, as_moderator, sid) for sid in session_ids))

    assert [len(reply.events) for reply in replies] == [2, 2, 2, 2]
    for user in (owner, partner):
        score = await get_reputation(reputation, as_user(user))
        assert (score.score, score.confirmed_sessions) == (0, 0)
        assert await ledger_sum(db, user) == 0


# --- Who may call --------------------------------------------------------------------------------


def refused_callers(jwt_settings, service_keys, participant):
    """(metadata, expected code) of every caller the internal service refuses."""
    rogue_key = new_private_key()
    return {
        "user token": (user_metadata(jwt_settings, participant), grpc.StatusCode.PERMISSION_DENIED),
        "user token claiming the role": (
            user_metadata(jwt_settings, participant, roles=[MODERATE]),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        "service token with sessions.internal only": (
            service_metadata(service_keys, roles=["sessions.internal"], name="moderation"),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        "service token without roles": (
            service_metadata(service_keys, roles=[], name="moderation"),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        "service token with a near miss role": (
            service_metadata(service_keys, roles=["reputation.moderator", "REPUTATION.MODERATE"]),
            grpc.StatusCode.PERMISSION_DENIED,
        ),
        "service token by a key not in the JWK Set": (
            (
                (
                    "authorization",
                    "Bearer " + ServiceTokenSigner("moderation", rogue_key, "rogue").token([MODERATE]),
                ),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "service token by another key under a trusted kid": (
            (
                (
                    "authorization",
                    "Bearer " + ServiceTokenSigner("moderation", rogue_key, "tests-key").token([MODERATE]),
                ),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "service subject signed with the user-token key": (
            (
                (
                    "authorization",
                    "Bearer " + mint(jwt_settings, jwt_settings.key, "service:moderation", 60, [MODERATE]),
                ),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "no token": ((), grpc.StatusCode.UNAUTHENTICATED),
    }


CALLERS = [
    "user token",
    "user token claiming the role",
    "service token with sessions.internal only",
    "service token without roles",
    "service token with a near miss role",
    "service token by a key not in the JWK Set",
    "service token by another key under a trusted kid",
    "service subject signed with the user-token key",
    "no token",
]


@pytest.mark.parametrize("caller", CALLERS)
async def test_only_a_moderator_service_token_may_reverse_and_a_refusal_changes_nothing(
    sessions, reputation, moderation, as_user, jwt_settings, service_keys, db, caller
):
    session_id, owner, partner, _ = await awarded(sessions, reputation, as_user)
    md, code = refused_callers(jwt_settings, service_keys, owner)[caller]
    before = await snapshot(db, session_id, [owner, partner])

    error = await expect_reputation_error(reverse(moderation, md, session_id), code, code.name)

    assert "Bearer" not in error.message
    assert await snapshot(db, session_id, [owner, partner]) == before
    assert (await get_confirmation(reputation, as_user(owner), session_id)).reversed is False


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    "request_fields",
    [
        {"session_id": "not-a-uuid", "reason": REASON},
        {"session_id": "", "reason": ""},
        {"session_id": SAMPLE_ID, "reason": "\x00" * 600, "request_id": "nope"},
    ],
    ids=["malformed session id", "all empty", "everything bad"],
)
async def test_the_callers_kind_is_checked_before_the_arguments(
    moderation, jwt_settings, service_keys, caller, request_fields
):
    md, code = refused_callers(jwt_settings, service_keys, new_id())[caller]

    await expect_reputation_error(
        moderation.ReverseSessionAwards(rpb.ReverseSessionAwardsRequest(**request_fields), metadata=md),
        code,
        code.name,
    )


async def test_a_moderator_token_is_refused_on_the_public_service(reputation, as_moderator):
    await expect_reputation_error(
        reputation.GetReputation(rpb.GetReputationRequest(user_id=new_id()), metadata=as_moderator),
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_DENIED",
    )


async def test_a_moderator_token_with_more_roles_may_reverse(
    sessions, reputation, moderation, as_user, service_keys
):
    session_id, *_ = await awarded(sessions, reputation, as_user)
    md = service_metadata(service_keys, roles=["sessions.internal", MODERATE], name="moderation")

    reply = await reverse(moderation, md, session_id)

    assert len(reply.events) == 2


# --- NOT_FOUND and NOT_AWARDED -------------------------------------------------------------------


async def test_an_unknown_session_is_not_found(moderation, as_moderator, db):
    unknown = new_id()

    error = await expect_reputation_error(
        reverse(moderation, as_moderator, unknown), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )

    assert error.metadata == {"session_id": unknown}
    assert (
        await db.fetchval("SELECT count(*) FROM reputation.paired_sessions WHERE session_id = $1", unknown)
        == 0
    )


async def test_a_paired_session_nobody_confirmed_is_not_found_here(
    sessions, moderation, as_user, as_moderator, db
):
    session_id, *_ = await paired(sessions, as_user)

    await expect_reputation_error(
        reverse(moderation, as_moderator, session_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )

    assert (
        await db.fetchval("SELECT count(*) FROM reputation.paired_sessions WHERE session_id = $1", session_id)
        == 0
    )


async def test_a_solo_session_is_not_found_here(sessions, moderation, as_user, as_moderator):
    solo = await create(sessions, as_user(new_id()))

    await expect_reputation_error(
        reverse(moderation, as_moderator, solo.session_id), grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"
    )


async def test_a_session_only_one_confirmed_was_not_awarded_until_the_other_confirms(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    session_id, owner, partner = await paired(sessions, as_user)
    await confirm(reputation, as_user(owner), session_id)
    before = await snapshot(db, session_id, [owner, partner])

    error = await expect_reputation_error(
        reverse(moderation, as_moderator, session_id), grpc.StatusCode.FAILED_PRECONDITION, "NOT_AWARDED"
    )

    assert error.metadata == {"session_id": session_id}
    assert await snapshot(db, session_id, [owner, partner]) == before
    assert (await get_confirmation(reputation, as_user(owner), session_id)).reversed is False

    # The refusal is not remembered: once awarded, the session can be reversed.
    await confirm(reputation, as_user(partner), session_id)
    reply = await reverse(moderation, as_moderator, session_id)
    assert len(reply.events) == 2


async def test_a_session_closed_unconfirmed_was_not_awarded(
    sessions, reputation, moderation, as_user, as_moderator, db
):
    session_id, owner, partner = await paired(sessions, as_user)
    await confirm(reputation, as_user(owner), session_id)
    # As if the window (7 days here) had passed: the shared server's sweeper closes it.
    await db.execute(
        "UPDATE reputation.paired_sessions SET first_confirm_time = first_confirm_time - $2::interval "
        "WHERE session_id = $1",
        session_id,
        timedelta(days=8),
    )

    async def closed():
        return (await get_confirmation(reputation, as_user(owner), session_id)).closed_unconfirmed

    await wait_for(closed, within=10, what="the sweeper to close the session")

    async def delivered():
        row = await db.fetchrow(
            "SELECT deliver_time FROM reputation.outbox WHERE session_id = $1", session_id
        )
        return row is not None and row["deliver_time"] is not None

    # The relay completes it through the outbox: wait, so the snapshot below stays still.
    await wait_for(delivered, within=10, what="the relay to deliver the closed session")
    before = await snapshot(db, session_id, [owner, partner])

    await expect_reputation_error(
        reverse(moderation, as_moderator, session_id), grpc.StatusCode.FAILED_PRECONDITION, "NOT_AWARDED"
    )

    assert await snapshot(db, session_id, [owner, partner]) == before


async def test_a_session_both_were_capped_for_was_not_awarded(
    sessions, as_user, as_moderator, db, database_url, keys, session_server
):
    async with capped_server(database_url, keys, session_server, pair_daily_award_limit=1) as (
        public,
        capped_moderation,
    ):
        owner, partner = new_id(), new_id()
        first, *_ = await awarded(sessions, public, as_user, owner, partner)
        second, _, _, decided = await awarded(sessions, public, as_user, owner, partner)
        assert decided.reputation_awarded is False
        assert sorted(decided.capped_user_ids) == sorted([owner, partner])
        before = await snapshot(db, second, [owner, partner])

        await expect_reputation_error(
            reverse(capped_moderation, as_moderator, second),
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_AWARDED",
        )

        assert await snapshot(db, second, [owner, partner]) == before
        # The awarded one of the pair can still be reversed.
        assert len((await reverse(capped_moderation, as_moderator, first)).events) == 2


async def test_a_session_one_was_capped_for_reverses_the_other_ones_point_only(
    sessions, as_user, as_moderator, db, database_url, keys, session_server
):
    async with capped_server(database_url, keys, session_server, user_daily_award_limit=1) as (
        public,
        capped_moderation,
    ):
        busy, first_partner, second_partner = new_id(), new_id(), new_id()
        await awarded(sessions, public, as_user, busy, first_partner)
        session_id, _, _, decided = await awarded(sessions, public, as_user, busy, second_partner)
        assert list(decided.capped_user_ids) == [busy]
        assert decided.reputation_awarded is True

        reply = await reverse(capped_moderation, as_moderator, session_id)

        assert [(e.user_id, e.delta) for e in reply.events] == [(second_partner, -1)]
        assert (await get_reputation(public, as_user(busy))).score == 1
        second = await get_reputation(public, as_user(second_partner))
        assert (second.score, second.confirmed_sessions) == (0, 0)


# --- A reversal frees no cap slot ----------------------------------------------------------------


async def test_a_reversal_frees_no_pair_cap_slot(
    sessions, as_user, as_moderator, db, database_url, keys, session_server
):
    async with capped_server(database_url, keys, session_server, pair_daily_award_limit=1) as (
        public,
        capped_moderation,
    ):
        owner, partner = new_id(), new_id()
        first, _, _, decided = await awarded(sessions, public, as_user, owner, partner)
        assert decided.reputation_awarded is True
        await reverse(capped_moderation, as_moderator, first)

        _, _, _, later = await awarded(sessions, public, as_user, partner, owner)

        assert later.reputation_awarded is False
        assert sorted(later.capped_user_ids) == sorted([owner, partner])
        for user in (owner, partner):
            score = await get_reputation(public, as_user(user))
            assert (score.score, score.confirmed_sessions) == (0, 0)
            assert await ledger_sum(db, user) == 0
            reasons = [e.reason for e in (await list_events(public, as_user(user))).events]
            assert reasons == ["CAPPED_PAIR_DAILY_LIMIT", "REVERSAL", "MUTUAL_CONFIRMATION"]


async def test_a_reversal_frees_no_user_cap_slot(
    sessions, as_user, as_moderator, db, database_url, keys, session_server
):
    async with capped_server(database_url, keys, session_server, user_daily_award_limit=1) as (
        public,
        capped_moderation,
    ):
        busy = new_id()
        first, *_ = await awarded(sessions, public, as_user, busy, new_id())
        await reverse(capped_moderation, as_moderator, first)

        _, _, other, later = await awarded(sessions, public, as_user, busy, new_id())

        assert list(later.capped_user_ids) == [busy]
        assert (await get_reputation(public, as_user(busy))).score == 0
        assert (await get_reputation(public, as_user(other))).score == 1


# --- INVALID_ARGUMENT ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", list(MALFORMED_UUIDS.values()), ids=list(MALFORMED_UUIDS))
async def test_a_malformed_session_id_is_invalid(moderation, as_moderator, value):
    await expect_invalid(reverse(moderation, as_moderator, value), "session_id", domain=DOMAIN)


async def test_an_empty_session_id_is_invalid(moderation, as_moderator):
    await expect_invalid(reverse(moderation, as_moderator, ""), "session_id", domain=DOMAIN)


@pytest.mark.parametrize("value", list(MALFORMED_UUIDS.values()), ids=list(MALFORMED_UUIDS))
async def test_a_malformed_request_id_is_invalid(
    sessions, reputation, moderation, as_user, as_moderator, db, value
):
    session_id, owner, partner, _ = await awarded(sessions, reputation, as_user)
    before = await snapshot(db, session_id, [owner, partner])

    await expect_invalid(
        reverse(moderation, as_moderator, session_id, request_id=value), "request_id", domain=DOMAIN
    )

    assert await snapshot(db, session_id, [owner, partner]) == before


@pytest.mark.parametrize(
    "reason",
    ["", "r" * 501, "\U0001f600" * 501, "before\x00after", "\x00"],
    ids=["empty", "501 chars", "501 emoji", "NUL inside", "only NUL"],
)
async def test_a_bad_reason_is_invalid_and_changes_nothing(
    sessions, reputation, moderation, as_user, as_moderator, db, reason
):
    session_id, owner, partner, _ = await awarded(sessions, reputation, as_user)
    before = await snapshot(db, session_id, [owner, partner])

    await expect_invalid(
        reverse(moderation, as_moderator, session_id, reason=reason), "reason", domain=DOMAIN
    )

    assert await snapshot(db, session_id, [owner, partner]) == before


async def test_every_bad_field_is_named_at_once_before_existence_is_checked(moderation, as_moderator):
    await expect_invalid(
        reverse(moderation, as_moderator, "nope", reason="", request_id="nope"),
        "session_id",
        "reason",
        "request_id",
        domain=DOMAIN,
    )
    # A well-formed unknown session with a bad reason: the argument, not NOT_FOUND.
    await expect_invalid(
        reverse(moderation, as_moderator, new_id(), reason="x" * 501), "reason", domain=DOMAIN
    )


@pytest.mark.parametrize(
    ("caller", "code"),
    [
        ("moderator", grpc.StatusCode.INVALID_ARGUMENT),
        ("user", grpc.StatusCode.PERMISSION_DENIED),
        ("sessions.internal", grpc.StatusCode.PERMISSION_DENIED),
        ("nobody", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
async def test_bytes_that_do_not_parse_are_judged_after_the_token_and_the_kind(
    reputation_server, as_user, as_moderator, service_keys, caller, code
):
    metadata = {
        "moderator": as_moderator,
        "user": as_user(new_id()),
        "sessions.internal": service_metadata(service_keys),
        "nobody": (),
    }[caller]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reputation_server.port}") as channel:
        send = channel.unary_unary(
            "/interview.reputation.v1.ReputationInternalService/ReverseSessionAwards",
            request_serializer=None,
            response_deserializer=None,
        )
        error = await expect_reputation_error(
            send(b"\x0a\x02\xc3\x28", metadata=metadata, timeout=10), code, code.name
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert set(error.fields) == {"request"}
