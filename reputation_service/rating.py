"""The rating use case: RatePartner (look the session up, check, record once). Its rules are in
domain.py; the servicer validates, calls it and converts the row."""

from __future__ import annotations

from asyncpg import Record
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db import connection
from reputation_service import domain, store
from reputation_service.confirming import readable_view
from reputation_service.sessions_client import SessionsClient


async def rate_partner(
    db: AsyncEngine,
    sessions: SessionsClient,
    caller: str,
    session_id: str,
    rating: int,
    comment: str,
    request_id: str | None,
    deadline: float,
) -> Record:
    """Records `caller`'s rating of their partner in `session_id`, once both confirmed it. A
    repeated `request_id` returns the first call's rating, whatever the other fields say."""
    if request_id is not None:
        async with connection(db) as conn:
            earlier = await store.rating_by_request(conn, caller, request_id)
        if earlier is not None:
            return earlier
    # Not a participant, unknown, solo: refused as GetConfirmation would refuse it.
    session, known, _ = await readable_view(db, sessions, session_id, caller, deadline)
    refusal = domain.rating_refusal(session_id, known.confirmed_user_ids if known else [])
    if refusal is not None:
        raise refusal
    async with connection(db) as conn:
        added = await store.rate(
            conn, session_id, caller, domain.partner_of(session, caller), rating, comment, request_id
        )
        if added is not None:
            return added
        # A concurrent call with the same request_id got there first: its rating is the answer.
        earlier = await store.rating_by_request(conn, caller, request_id) if request_id else None
    if earlier is None:
        raise domain.AlreadyRated(session_id)
    return earlier
