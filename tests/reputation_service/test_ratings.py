"""RatePartner and ListPartnerRatings: a participant rates the other 1..5 once both confirmed, once
per session (ALREADY_RATED; a repeated request_id returns the first rating); NOT_CONFIRMED_YET,
NOT_FOUND, NOT_A_PAIRED_SESSION; the rated user's rating_count and average_rating move in the
rating's transaction; a user reads only the ratings they received, newest first, paged."""

import asyncio

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb

from tests.helpers import (
    MALFORMED_UUIDS,
    confirm,
    create,
    expect_error,
    expect_invalid,
    get_reputation,
    list_ratings,
    mutually_confirmed,
    new_id,
    paired,
    rate,
    walk,
)

DOMAIN = "interview.reputation"
FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def ratings_of(db, session_id):
    return await db.fetch(
        "SELECT rater_user_id::text, rated_user_id::text, rating, comment FROM reputation.ratings "
        "WHERE session_id = $1 ORDER BY rater_user_id",
        session_id,
    )


async def test_a_participant_rates_the_other_and_the_aggregate_follows(sessions, reputation, as_user, db):
    session_id, owner, partner = await mutually_confirmed(sessions, reputation, as_user)

    given = await rate(reputation, as_user(owner), session_id, 4, "clear questions, fair follow-ups")

    assert (given.session_id, given.rater_user_id, given.rated_user_id) == (session_id, owner, partner)
    assert (given.rating, given.comment) == (4, "clear questions, fair follow-ups")
    assert given.HasField("create_time")
    rated = await get_reputation(reputation, as_user(owner), partner)
    assert (rated.rating_count, rated.average_rating) == (1, 4.0)
    assert (rated.score, rated.confirmed_sessions) == (1, 1)  # ratings are not reputation
    rater = await get_reputation(reputation, as_user(owner), owner)
    assert (rater.rating_count, rater.average_rating) == (0, 0.0)
    received = await list_ratings(reputation, as_user(partner))
    assert list(received.ratings) == [given] and not received.next_page_token
    assert [tuple(r) for r in await ratings_of(db, session_id)] == [
        (owner, partner, 4, "clear questions, fair follow-ups")
    ]


async def test_averages_are_exact_over_several_partners(sessions, reputation, as_user):
    rated = new_id()
    for stars in (5, 4, 4, 2):
        session_id, rater, _ = await mutually_confirmed(sessions, reputation, as_user, partner=rated)
        await rate(reputation, as_user(rater), session_id, stars)
    found = await get_reputation(reputation, as_user(rated), "")
    assert found.rating_count == 4
    assert found.average_rating == pytest.approx(15 / 4, abs=0)


async def test_an_unrated_user_has_no_ratings(reputation, as_user):
    found = await get_reputation(reputation, as_user(new_id()))
    assert (found.rating_count, found.average_rating) == (0, 0.0)
    assert not (await list_ratings(reputation, as_user(new_id()))).ratings


async def test_a_second_rating_is_already_rated_and_changes_nothing(sessions, reputation, as_user, db):
    session_id, owner, partner = await mutually_confirmed(sessions, reputation, as_user)
    await rate(reputation, as_user(owner), session_id, 5)
    await expect_error(rate(reputation, as_user(owner), session_id, 1), FAILED, "ALREADY_RATED")
    assert [r["rating"] for r in await ratings_of(db, session_id)] == [5]
    assert (await get_reputation(reputation, as_user(owner), partner)).rating_count == 1


async def test_a_repeated_request_id_returns_the_first_rating_whatever_the_other_fields(
    sessions, reputation, as_user, db
):
    session_id, owner, _ = await mutually_confirmed(sessions, reputation, as_user)
    other_session, _, _ = await mutually_confirmed(sessions, reputation, as_user, owner=owner)
    request_id = new_id()
    first = await rate(reputation, as_user(owner), session_id, 3, "ok", request_id=request_id)
    again = await rate(reputation, as_user(owner), other_session, 5, "great", request_id=request_id)
    assert again == first
    assert not await ratings_of(db, other_session)
    # The same request_id of another caller is another request.
    third, _, partner = await mutually_confirmed(sessions, reputation, as_user)
    assert (await rate(reputation, as_user(partner), third, 2, request_id=request_id)).rating == 2


async def test_before_both_confirmations_it_is_not_confirmed_yet(sessions, reputation, as_user, db):
    session_id, owner, partner = await paired(sessions, as_user)
    # Never confirmed: the session service says it is theirs and paired.
    await expect_error(rate(reputation, as_user(owner), session_id, 5), FAILED, "NOT_CONFIRMED_YET")
    await confirm(reputation, as_user(owner), session_id)
    for user in (owner, partner):
        await expect_error(rate(reputation, as_user(user), session_id, 5), FAILED, "NOT_CONFIRMED_YET")
    assert not await ratings_of(db, session_id)


async def test_strangers_and_unknown_sessions_are_not_found(sessions, reputation, as_user):
    session_id, _, _ = await mutually_confirmed(sessions, reputation, as_user)
    not_found = grpc.StatusCode.NOT_FOUND
    await expect_error(rate(reputation, as_user(new_id()), session_id, 5), not_found, "SESSION_NOT_FOUND")
    await expect_error(rate(reputation, as_user(new_id()), new_id(), 5), not_found, "SESSION_NOT_FOUND")


async def test_a_solo_session_is_not_a_paired_session(sessions, reputation, as_user):
    owner = new_id()
    solo = await create(sessions, as_user(owner))
    await expect_error(rate(reputation, as_user(owner), solo.session_id, 5), FAILED, "NOT_A_PAIRED_SESSION")


@pytest.mark.parametrize("stars", [0, 6, -1, 100])
async def test_a_rating_outside_one_to_five_is_invalid(sessions, reputation, as_user, stars):
    session_id, owner, _ = await mutually_confirmed(sessions, reputation, as_user)
    await expect_invalid(rate(reputation, as_user(owner), session_id, stars), "rating", domain=DOMAIN)


async def test_comments_count_code_points_and_refuse_nul(sessions, reputation, as_user):
    session_id, owner, partner = await mutually_confirmed(sessions, reputation, as_user)
    too_long = "é" * 2001
    await expect_invalid(rate(reputation, as_user(owner), session_id, 5, too_long), "comment", domain=DOMAIN)
    await expect_invalid(rate(reputation, as_user(owner), session_id, 5, "a\x00b"), "comment", domain=DOMAIN)
    longest = "🙂" * 2000  # 2000 code points, 8000 bytes
    assert (await rate(reputation, as_user(owner), session_id, 5, longest)).comment == longest
    assert (await rate(reputation, as_user(partner), session_id, 5)).comment == ""


@pytest.mark.parametrize("bad", list(MALFORMED_UUIDS.values()))
async def test_malformed_ids_are_invalid_and_every_bad_field_is_named(reputation, as_user, bad):
    call = rate(reputation, as_user(new_id()), bad, 9, "x\x00", request_id=bad)
    await expect_invalid(call, "session_id", "request_id", "rating", "comment", domain=DOMAIN)


async def test_both_participants_rating_at_once_both_land(sessions, reputation, as_user):
    session_id, owner, partner = await mutually_confirmed(sessions, reputation, as_user)
    given = await asyncio.gather(
        rate(reputation, as_user(owner), session_id, 5), rate(reputation, as_user(partner), session_id, 3)
    )
    assert {(r.rater_user_id, r.rating) for r in given} == {(owner, 5), (partner, 3)}
    assert (await get_reputation(reputation, as_user(owner), owner)).average_rating == 3.0
    assert (await get_reputation(reputation, as_user(owner), partner)).average_rating == 5.0


async def test_the_same_rater_at_once_rates_once(sessions, reputation, as_user, db):
    session_id, owner, partner = await mutually_confirmed(sessions, reputation, as_user)
    outcomes = await asyncio.gather(
        *(rate(reputation, as_user(owner), session_id, 1 + i % 5) for i in range(8)), return_exceptions=True
    )
    landed = [o for o in outcomes if isinstance(o, rpb.PartnerRating)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(landed) == 1 and len(refused) == 7, outcomes
    assert {e.code() for e in refused} == {FAILED}
    assert len(await ratings_of(db, session_id)) == 1
    assert (await get_reputation(reputation, as_user(owner), partner)).rating_count == 1


async def test_the_same_request_at_once_returns_one_rating(sessions, reputation, as_user, db):
    session_id, owner, _ = await mutually_confirmed(sessions, reputation, as_user)
    request_id = new_id()
    given = await asyncio.gather(
        *(rate(reputation, as_user(owner), session_id, 4, request_id=request_id) for _ in range(6))
    )
    assert len({r.SerializeToString() for r in given}) == 1
    assert len(await ratings_of(db, session_id)) == 1


async def test_received_ratings_are_newest_first_paged_and_only_ones_own(sessions, reputation, as_user):
    rated = new_id()
    given = []
    for stars in (1, 2, 3, 4, 5):
        session_id, rater, _ = await mutually_confirmed(sessions, reputation, as_user, partner=rated)
        given.append(await rate(reputation, as_user(rater), session_id, stars))

    pages = await walk(list_ratings, reputation, as_user(rated), page_size=2)
    assert [len(p.ratings) for p in pages] == [2, 2, 1]
    assert [r for p in pages for r in p.ratings] == given[::-1]
    # A rater sees none of it: nobody reads another user's ratings.
    assert not (await list_ratings(reputation, as_user(given[0].rater_user_id))).ratings


async def test_page_rules_and_forged_tokens(sessions, reputation, as_user):
    rated = new_id()
    for _ in range(2):
        session_id, rater, _ = await mutually_confirmed(sessions, reputation, as_user, partner=rated)
        await rate(reputation, as_user(rater), session_id, 5)
    me = as_user(rated)
    await expect_invalid(list_ratings(reputation, me, page_size=-1), "page_size", domain=DOMAIN)
    await expect_invalid(list_ratings(reputation, me, page_token="forged"), "page_token", domain=DOMAIN)
    first = await list_ratings(reputation, me, page_size=1)
    assert len(first.ratings) == 1 and first.next_page_token
    # A token is the caller's own.
    stolen = list_ratings(reputation, as_user(new_id()), page_size=1, page_token=first.next_page_token)
    await expect_invalid(stolen, "page_token", domain=DOMAIN)
    assert len((await list_ratings(reputation, me, page_size=500)).ratings) == 2
