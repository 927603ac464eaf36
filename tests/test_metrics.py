"""Prometheus metrics on each service's own HTTP port: calls, latency, pool use, outbox backlog."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.app import ListenError
from session_service import api as session_api
from tests.helpers import calls, expect_error, gauge, new_id, scrape, timed, wait_for
from tests.servers import session_config_for

SESSIONS = "/interview.sessions.v1.SessionService/"
INTERNAL = "/interview.sessions.v1.SessionInternalService/"
CONFIRM = "/interview.reputation.v1.ReputationService/ConfirmCompletion"


async def test_calls_are_counted_by_method_and_code_and_timed_by_method(session_server, sessions, as_user):
    before = await scrape(session_server)
    owner = as_user(new_id())
    await sessions.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=owner)
    for _ in range(2):
        await expect_error(
            sessions.GetSession(pb.GetSessionRequest(session_id=new_id()), metadata=owner),
            grpc.StatusCode.NOT_FOUND,
            "SESSION_NOT_FOUND",
        )
    after = await scrape(session_server)

    create, get = SESSIONS + "CreateSession", SESSIONS + "GetSession"
    assert calls(after, create, "OK") - calls(before, create, "OK") == 1
    assert calls(after, get, "NOT_FOUND") - calls(before, get, "NOT_FOUND") == 2
    assert calls(after, get, "OK") == calls(before, get, "OK")
    assert timed(after, create) - timed(before, create) == 1
    assert timed(after, get) - timed(before, get) == 2
    assert gauge(after, "db_pool_connections_in_use") >= 0


async def test_a_paired_completion_shows_in_both_services_and_in_the_outbox_gauges_until_delivered(
    session_server, reputation_server, sessions, reputation, as_user, db
):
    owner, partner = new_id(), new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=partner), metadata=as_user(owner)
    )
    sessions_before, reputation_before = await scrape(session_server), await scrape(reputation_server)

    def confirm(user: str):
        return reputation.ConfirmCompletion(
            rpb.ConfirmCompletionRequest(session_id=created.session_id), metadata=as_user(user)
        )

    async def backlogged() -> bool:
        samples = await scrape(reputation_server)
        return (
            gauge(samples, "outbox_backlog_rows") >= 1
            and gauge(samples, "outbox_oldest_undelivered_age_seconds") > 0
        )

    await confirm(owner)
    # Hold the session's row so the delivery after the award blocks and the row stays undelivered.
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM sessions.sessions WHERE session_id = $1 FOR UPDATE", created.session_id
        )
        confirming = asyncio.ensure_future(confirm(partner))
        await wait_for(backlogged, within=10, what="the outbox gauges to show the undelivered row")
    await confirming
    sessions_after, reputation_after = await scrape(session_server), await scrape(reputation_server)

    assert calls(reputation_after, CONFIRM, "OK") - calls(reputation_before, CONFIRM, "OK") == 2
    assert timed(reputation_after, CONFIRM) - timed(reputation_before, CONFIRM) == 2
    complete = INTERNAL + "CompletePairedSession"
    # Delivered inline or, had the wait outlasted its deadline, by the relay, which may also be
    # delivering rows of other tests: at least once, that is.
    assert calls(sessions_after, complete, "OK") - calls(sessions_before, complete, "OK") >= 1
    assert gauge(reputation_after, "db_pool_connections_in_use") >= 0

    async def drained() -> bool:
        samples = await scrape(reputation_server)
        return (
            gauge(samples, "outbox_backlog_rows") == 0
            and gauge(samples, "outbox_oldest_undelivered_age_seconds") == 0
        )

    await wait_for(drained, within=20, what="the outbox gauges to report nothing undelivered")


async def test_a_busy_metrics_port_stops_start_up(session_server, database_url, keys):
    app = session_api.create_server(
        session_config_for(
            database_url, keys, pool_size=1, metrics_listen=f"127.0.0.1:{session_server.metrics_port}"
        )
    )
    try:
        with pytest.raises(ListenError, match="metrics"):
            await app.start()
    finally:
        await app.stop(grace=0)
