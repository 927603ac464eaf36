"""Delivery marks (reputation_service.marks): written after the deliveries, many per statement, and
a mark that never lands costs a second delivery by the relay, never the completion.

Each test runs on a database of its own, so no other relay touches its rows."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from common.config import DEFAULT_LIMITS
from common.db import connection, create_engine
from reputation_service import store
from reputation_service.marks import DeliveryMarks
from tests.helpers import create, new_id, service_metadata, session_statuses, user_metadata, wait_for
from tests.servers import reputation_config_for, running_reputation


async def awarded_row(db: asyncpg.Pool, session_id: str | None = None, delivered: bool = False) -> str:
    """A paired session whose award queued its outbox row, born claimed for one second, as
    `reputation.confirm` leaves it; `delivered`: marked already."""
    session_id = session_id or new_id()
    await db.execute(
        "INSERT INTO reputation.paired_sessions "
        "(session_id, user_id, partner_user_id, last_known_status, first_confirm_time, award_time) "
        "VALUES ($1, $2, $3, 'active', now(), now())",
        session_id,
        new_id(),
        new_id(),
    )
    await db.execute(
        "INSERT INTO reputation.outbox (session_id, attempts, next_attempt_time, deliver_time) "
        "VALUES ($1, 1, now() + interval '1 second', CASE WHEN $2 THEN now() - interval '1 minute' END)",
        session_id,
        delivered,
    )
    return session_id


async def rows(db: asyncpg.Pool, session_ids: list[str]) -> dict[str, asyncpg.Record]:
    found = await db.fetch(
        "SELECT o.session_id::text AS session_id, o.attempts, o.deliver_time, p.last_known_status "
        "FROM reputation.outbox o JOIN reputation.paired_sessions p USING (session_id) "
        "WHERE o.session_id = ANY($1::uuid[])",
        session_ids,
    )
    return {row["session_id"]: row for row in found}


async def test_marks_gathered_while_none_is_written_go_in_one_statement(database):
    _, db = database
    fresh = [await awarded_row(db) for _ in range(25)]
    earlier = await awarded_row(db, delivered=True)
    before = (await rows(db, [earlier]))[earlier]
    statements = []

    def counted() -> asyncpg.pool.PoolAcquireContext:
        statements.append(len(statements))
        return db.acquire()

    marks = DeliveryMarks(counted)
    for session_id in [*fresh, earlier]:
        marks.add(session_id)
    await marks.start()
    await marks.stop()

    assert statements == [0]
    after = await rows(db, [*fresh, earlier])
    assert all(after[s]["deliver_time"] is not None for s in fresh)
    assert {after[s]["last_known_status"] for s in fresh} == {"completed"}
    assert {after[s]["attempts"] for s in fresh} == {1}
    assert after[earlier]["deliver_time"] == before["deliver_time"], "a mark is written once"


async def test_a_mark_commits_without_waiting_for_the_flush_and_leaves_the_connection_as_it_was(database):
    _, db = database
    session_id = await awarded_row(db)
    async with db.acquire() as conn:
        durable = await conn.fetchval("SHOW synchronous_commit")
        assert durable != "off"
        async with conn.transaction():
            await store.mark_delivered(conn, [session_id])
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        assert await conn.fetchval("SHOW synchronous_commit") == durable, "the next transaction is durable"
    marked = (await rows(db, [session_id]))[session_id]
    assert marked["deliver_time"] is not None and marked["last_known_status"] == "completed"


async def test_marks_that_arrive_while_one_statement_runs_all_go_in_the_next(database):
    _, db = database
    first = await awarded_row(db)
    later = [await awarded_row(db) for _ in range(10)]
    writing = asyncio.Event()
    go_on = asyncio.Event()
    statements = []

    @asynccontextmanager
    async def held() -> AsyncIterator[asyncpg.Connection]:
        statements.append(len(statements))
        if len(statements) == 1:
            writing.set()
            await go_on.wait()
        async with db.acquire() as conn:
            yield conn

    marks = DeliveryMarks(held)
    await marks.start()
    marks.add(first)
    await asyncio.wait_for(writing.wait(), 5)
    for session_id in later:
        marks.add(session_id)
    go_on.set()
    await marks.stop()

    assert statements == [0, 1]
    assert all(row["deliver_time"] is not None for row in (await rows(db, [first, *later])).values())


async def test_a_mark_that_never_lands_is_delivered_again_by_the_relay_once_the_lease_ends(
    stack, keys, jwt_settings, service_keys, caplog
):
    caplog.set_level(logging.WARNING, logger="reputation_service.marks")
    owner, partner = new_id(), new_id()
    session_id = (
        await create(stack.sessions, user_metadata(jwt_settings, owner), partner=partner)
    ).session_id
    # The confirming call delivered: the session service completed the session...
    async with grpc.aio.insecure_channel(stack.session_target) as channel:
        internal = sessions_pb2_grpc.SessionInternalServiceStub(channel)
        request = pb.CompletePairedSessionRequest(session_id=session_id)
        await internal.CompletePairedSession(request, metadata=service_metadata(service_keys))
    await awarded_row(stack.db, session_id)
    # ...and its mark went to a database that does not answer (nothing listens on port 1).
    gone = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/nothing", 1, "marks-test", DEFAULT_LIMITS)
    marks = DeliveryMarks(lambda: connection(gone))
    marks.add(session_id)
    await marks.start()
    await marks.stop()
    await gone.dispose()
    unrecorded = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert unrecorded == [{"event": "delivery_marks_unrecorded", "rows": 1}]
    assert (await rows(stack.db, [session_id]))[session_id]["deliver_time"] is None

    config = reputation_config_for(stack.url, keys, stack.session_target)
    async with running_reputation(config):

        async def marked() -> bool:
            return (await rows(stack.db, [session_id]))[session_id]["deliver_time"] is not None

        await wait_for(marked, within=15, what="the relay to deliver the row again")

    row = (await rows(stack.db, [session_id]))[session_id]
    assert (row["attempts"], row["last_known_status"]) == (2, "completed")
    assert await session_statuses(stack.db, [session_id]) == {"completed": 1}
