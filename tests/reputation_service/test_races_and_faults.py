"""The promise under pressure: simultaneous confirmations, a session service that is down,
a reputation process killed between commit and delivery, and two replicas relaying."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections import Counter

import grpc
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from common.client import channel_options
from reputation_service import api as reputation_api
from tests.helpers import (
    confirm,
    create,
    new_id,
    session_statuses,
    together,
    user_metadata,
    wait_for,
    wait_for_delivery_marks,
)
from tests.servers import ServiceProcess, reputation_config_for, start_session_server, wait_serving


async def _scores(db, users: list[str]) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT user_id::text, score FROM reputation.scores WHERE user_id = ANY($1::uuid[])", users
    )
    return {row["user_id"]: row["score"] for row in rows}


async def _undelivered(db, session_ids: list[str]) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM reputation.outbox WHERE session_id = ANY($1::uuid[]) AND deliver_time IS NULL",
        session_ids,
    )


async def test_fifty_sessions_confirmed_by_both_at_once_three_times_each_award_exactly_once(
    sessions, reputation_server, as_user, db
):
    pairs = [(new_id(), new_id()) for _ in range(50)]
    created = await asyncio.gather(*(create(sessions, as_user(o), partner=b) for o, b in pairs))
    ids = [session.session_id for session in created]
    # 300 calls, up to IN_FLIGHT of them at once on one connection (which carries 100 streams), with
    # the typed clients' retry policy, as an internal caller would.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{reputation_server.port}", options=channel_options()
    ) as channel:
        reputation = reputation_pb2_grpc.ReputationServiceStub(channel)
        calls = [
            confirm(reputation, as_user(user), session_id)
            for session_id, pair in zip(ids, pairs, strict=True)
            for user in pair
            for _ in range(3)
        ]
        replies = await together(calls)

    assert all(reply.session_id in ids for reply in replies)
    users = [user for pair in pairs for user in pair]
    assert await _scores(db, users) == dict.fromkeys(users, 1)
    assert (
        await db.fetchval("SELECT count(*) FROM reputation.events WHERE session_id = ANY($1::uuid[])", ids)
        == 100
    )
    assert await session_statuses(db, ids) == Counter({"completed": 50})
    await wait_for_delivery_marks(db, ids)
    # Every second confirmation's reply reports the award; at least one per session saw it land.
    awarded = {reply.session_id for reply in replies if reply.reputation_awarded and reply.both_confirmed}
    assert awarded == set(ids)


async def test_a_session_service_outage_delays_completion_but_loses_nothing(
    database_url, keys, jwt_settings, db
):
    session_app = await start_session_server(database_url, keys, "127.0.0.1:0")
    port = session_app.port
    reputation_app = reputation_api.create_server(
        reputation_config_for(database_url, keys, f"127.0.0.1:{port}")
    )
    await reputation_app.start()
    owner, buddy = new_id(), new_id()
    owner_md, buddy_md = user_metadata(jwt_settings, owner), user_metadata(jwt_settings, buddy)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as session_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{reputation_app.port}") as reputation_channel,
        ):
            sessions = sessions_pb2_grpc.SessionServiceStub(session_channel)
            reputation = reputation_pb2_grpc.ReputationServiceStub(reputation_channel)
            session_id = (await create(sessions, owner_md, partner=buddy)).session_id
            await confirm(reputation, owner_md, session_id)

            await session_app.stop(grace=0)
            second = await confirm(reputation, buddy_md, session_id)
            assert second.both_confirmed and second.reputation_awarded
            assert second.completion_pending
            assert second.session_status == pb.SESSION_STATUS_ACTIVE
            assert await _scores(db, [owner, buddy]) == {owner: 1, buddy: 1}
            assert await _undelivered(db, [session_id]) == 1

            # The same port again; no new call reaches the reputation service from here on.
            session_app = await start_session_server(database_url, keys, f"127.0.0.1:{port}")

            async def completed() -> bool:
                return await session_statuses(db, [session_id]) == Counter({"completed": 1})

            await wait_for(completed, within=20, what="the relay to complete the session")
            await wait_for(
                lambda: _nothing_undelivered(db, session_id), within=10, what="the outbox row to be marked"
            )
            final = await reputation.GetConfirmation(
                rpb.GetConfirmationRequest(session_id=session_id), metadata=owner_md
            )
            assert (final.completion_pending, final.session_status) == (False, pb.SESSION_STATUS_COMPLETED)
            assert await _scores(db, [owner, buddy]) == {owner: 1, buddy: 1}
    finally:
        await reputation_app.stop(grace=1)
        await session_app.stop(grace=1)


async def _nothing_undelivered(db, session_id: str) -> bool:
    return await _undelivered(db, [session_id]) == 0


def _reputation_env(database_url: str, keys, session_port: int, lease: float) -> dict[str, str]:
    return {
        **keys.env(),
        "REPUTATION_LISTEN": "127.0.0.1:0",
        "REPUTATION_METRICS_LISTEN": "127.0.0.1:0",
        "REPUTATION_DATABASE_URL": database_url,
        "SESSION_SERVICE_TARGET": f"127.0.0.1:{session_port}",
        "RELAY_INTERVAL_SECONDS": "0.1",
        "OUTBOX_LEASE_SECONDS": str(lease),
        # A lease must outlast the delivery attempt it covers (start-up refuses anything else).
        "SESSION_SERVICE_TIMEOUT_SECONDS": str(lease * 0.8),
        "RELAY_MAX_BACKOFF_SECONDS": "0.5",
    }


async def test_a_reputation_process_killed_after_commit_and_before_delivery_is_finished_by_the_next(
    database_url, keys, jwt_settings, session_server, sessions, db
):
    owner, buddy = new_id(), new_id()
    owner_md, buddy_md = user_metadata(jwt_settings, owner), user_metadata(jwt_settings, buddy)
    env = _reputation_env(database_url, keys, session_server.port, lease=1.0)
    first = await ServiceProcess("reputation_service", env).start()
    second: ServiceProcess | None = None
    try:
        await wait_serving(first.target)
        async with grpc.aio.insecure_channel(first.target) as channel:
            reputation = reputation_pb2_grpc.ReputationServiceStub(channel)
            session_id = (await create(sessions, owner_md, partner=buddy)).session_id
            await confirm(reputation, owner_md, session_id)

            # Hold the session's row so CompletePairedSession blocks: the award is committed
            # and the delivery is under way when the process dies.
            async with db.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT 1 FROM sessions.sessions WHERE session_id = $1 FOR UPDATE", session_id
                )
                confirming = asyncio.ensure_future(confirm(reputation, buddy_md, session_id))
                await wait_for(
                    lambda: _award_committed_and_delivery_blocked(db, session_id),
                    within=10,
                    what="the award to commit and the delivery to block",
                )
                assert first.process is not None
                first.process.send_signal(signal.SIGKILL)
                assert await first.wait() == -signal.SIGKILL
                try:
                    await confirming
                except grpc.aio.AioRpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert await _undelivered(db, [session_id]) == 1

        second = await ServiceProcess("reputation_service", env).start()
        await wait_for(
            lambda: _nothing_undelivered(db, session_id), within=20, what="the restarted relay to deliver"
        )
        assert await session_statuses(db, [session_id]) == Counter({"completed": 1})
        assert await _scores(db, [owner, buddy]) == {owner: 1, buddy: 1}
        assert (
            await db.fetchval("SELECT count(*) FROM reputation.events WHERE session_id = $1", session_id) == 2
        )
    finally:
        first.kill()
        if second is not None:
            second.kill()


async def _award_committed_and_delivery_blocked(db, session_id: str) -> bool:
    awarded = await db.fetchval("SELECT count(*) FROM reputation.events WHERE session_id = $1", session_id)
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE 'UPDATE sessions.sessions SET status%'"
    )
    return awarded == 2 and waiting > 0


async def test_replicas_relaying_the_same_outbox_deliver_each_row_once(
    database_url, keys, jwt_settings, db, caplog
):
    # Two reputation processes, plus this test run's in-process reputation server: three relays.
    caplog.set_level(logging.INFO, logger="reputation_service.relay")
    session_app = await start_session_server(database_url, keys, "127.0.0.1:0")
    port = session_app.port
    env = _reputation_env(database_url, keys, port, lease=5.0)
    replicas = [await ServiceProcess("reputation_service", env).start() for _ in range(2)]
    pairs = [(new_id(), new_id()) for _ in range(20)]
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as session_channel,
            grpc.aio.insecure_channel(replicas[0].target) as channel_a,
            grpc.aio.insecure_channel(replicas[1].target) as channel_b,
        ):
            sessions = sessions_pb2_grpc.SessionServiceStub(session_channel)
            stubs = [reputation_pb2_grpc.ReputationServiceStub(c) for c in (channel_a, channel_b)]
            created = await asyncio.gather(
                *(create(sessions, user_metadata(jwt_settings, o), partner=b) for o, b in pairs)
            )
            ids = [session.session_id for session in created]
            await asyncio.gather(
                *(
                    confirm(stubs[0], user_metadata(jwt_settings, o), s)
                    for s, (o, _) in zip(ids, pairs, strict=True)
                )
            )
            await session_app.stop(grace=0)
            pending = await asyncio.gather(
                *(
                    confirm(stubs[i % 2], user_metadata(jwt_settings, b), s)
                    for i, (s, (_, b)) in enumerate(zip(ids, pairs, strict=True))
                )
            )
            assert all(reply.completion_pending for reply in pending)
            session_app = await start_session_server(database_url, keys, f"127.0.0.1:{port}")

            async def all_delivered() -> bool:
                return await _undelivered(db, ids) == 0

            await wait_for(all_delivered, within=30, what="both relays to drain the outbox")
        assert await session_statuses(db, ids) == Counter({"completed": 20})
        users = [user for pair in pairs for user in pair]
        assert await _scores(db, users) == dict.fromkeys(users, 1)
        for replica in replicas:  # a graceful stop also drains each replica's log
            assert replica.process is not None
            replica.process.send_signal(signal.SIGTERM)
            assert await replica.wait() == 0
        logged = [_json_or_empty(line) for replica in replicas for line in replica.log]
        logged += [record.msg for record in caplog.records if isinstance(record.msg, dict)]
        deliveries = Counter(event["session_id"] for event in logged if event.get("event") == "delivered")
        deliveries = Counter({session_id: n for session_id, n in deliveries.items() if session_id in ids})
        assert deliveries == Counter(dict.fromkeys(ids, 1))
    finally:
        for replica in replicas:
            replica.kill()
        await session_app.stop(grace=1)


def _json_or_empty(line: str) -> dict[str, object]:
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
