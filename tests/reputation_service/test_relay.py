"""The relay when the session service fails it: a black hole faced by two relays, a refusal
parked as dead until an operator replays it, and start-up refusing a lease shorter than an attempt.

Each test runs on a database of its own, so no other relay (the run's shared reputation server)
claims its rows and every count is exact."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import replace

import asyncpg
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.app import AppServer
from common.config import ConfigError, ServiceSigning
from common.devcerts import write_private
from reputation_service import config as reputation_config
from tests.helpers import (
    confirm,
    create,
    event_lines,
    gauge,
    new_id,
    new_private_key,
    private_pem,
    scrape,
    service_metadata,
    session_statuses,
    user_metadata,
    wait_for,
)
from tests.reputation_service.gate import overlapping, running_gate
from tests.servers import reputation_config_for, running_reputation

COMPLETE = "CompletePairedSession"


async def outbox(db: asyncpg.Pool, session_ids: list[str]) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT session_id::text AS session_id, attempts, next_attempt_time, last_error, deliver_time, "
        "dead_time FROM reputation.outbox WHERE session_id = ANY($1::uuid[])",
        session_ids,
    )
    return {row["session_id"]: row for row in rows}


async def replay_outbox(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m reputation_service replay-outbox ...` as an operator runs it (off the event loop,
    which serves the in-process servers meanwhile)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "reputation_service", "replay-outbox", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- A black hole, two relays ----------------------------------------------------------------------


async def test_two_relays_facing_a_black_hole_attempt_each_row_under_its_lease_and_deliver_it_once(
    stack, keys, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="reputation_service.relay")
    # Eight rows claimed in one batch, each attempt held for its whole 0.5 s deadline: attempted
    # one after another, the third would start after its 1 s lease ran out.
    timing = {"session_service_timeout": 0.5, "outbox_lease": 1.0, "relay_max_backoff": 0.3}
    pairs = [(new_id(), new_id()) for _ in range(8)]
    md = {user: user_metadata(jwt_settings, user) for pair in pairs for user in pair}
    async with running_gate(stack.session_target) as gate, AsyncExitStack() as servers:
        config = reputation_config_for(stack.url, keys, f"127.0.0.1:{gate.port}", **timing)
        stubs = [(await servers.enter_async_context(running_reputation(config)))[1] for _ in range(2)]
        created = await asyncio.gather(
            *(create(stack.sessions, md[owner], partner=partner) for owner, partner in pairs)
        )
        ids = [session.session_id for session in created]
        await asyncio.gather(
            *(confirm(stubs[0], md[owner], s) for s, (owner, _) in zip(ids, pairs, strict=True))
        )

        gate.holding.add(COMPLETE)
        replies = await asyncio.gather(
            *(
                confirm(stubs[i % 2], md[partner], s)
                for i, (s, (_, partner)) in enumerate(zip(ids, pairs, strict=True))
            )
        )
        assert all(r.both_confirmed and r.reputation_awarded and r.completion_pending for r in replies)

        async def held_three_times() -> bool:
            return min(gate.calls[(COMPLETE, s)] for s in ids) >= 3

        await wait_for(held_three_times, within=40, what="every row to be attempted three times")
        gate.holding.discard(COMPLETE)  # the session service answers again

        async def all_delivered() -> bool:
            rows = await outbox(stack.db, ids)
            return all(row["deliver_time"] is not None for row in rows.values())

        await wait_for(all_delivered, within=30, what="the relays to deliver every row")

        async def every_call_ended() -> bool:
            return sum(len(gate.spans[(COMPLETE, s)]) for s in ids) == sum(
                gate.calls[(COMPLETE, s)] for s in ids
            )

        await wait_for(every_call_ended, within=10, what="the held calls to end at their deadline")

    rows = await outbox(stack.db, ids)
    attempts = {s: rows[s]["attempts"] for s in ids}
    assert attempts == {s: gate.calls[(COMPLETE, s)] for s in ids}
    assert min(attempts.values()) >= 4  # three in the black hole, one delivered
    assert {s: gate.forwarded[(COMPLETE, s)] for s in ids} == dict.fromkeys(ids, 1)
    assert [s for s in ids if overlapping(gate.spans[(COMPLETE, s)])] == []
    # Each attempt, inline or relayed, carried the configured deadline, never more. The gate sees
    # it after the call's trip through a loaded event loop, so the lower bound leaves room for that.
    assert all(b is not None and 0.25 < b <= 0.5 + 0.05 for b in gate.budgets[COMPLETE])
    assert all(row["dead_time"] is None for row in rows.values())
    assert await session_statuses(stack.db, ids) == Counter({"completed": len(ids)})
    delivered = Counter(event["session_id"] for event in event_lines(caplog, "delivered"))
    assert {s: delivered[s] for s in ids} == dict.fromkeys(ids, 1)


# --- A refusal: dead, counted, replayed ------------------------------------------------------------


def untrusted(tmp_path) -> ServiceSigning:
    """The reputation service's key id with a key nobody published: a key mistake."""
    write_private(tmp_path / "mistaken.pem", private_pem(new_private_key()))
    return ServiceSigning(key_file=str(tmp_path / "mistaken.pem"), key_id="reputation-key")


# How the mistaken replica reaches the real session service, and the code that service answers.
MISTAKES = {
    "signing with a key the session service does not trust": "UNAUTHENTICATED",
    "a service token without the sessions.internal role": "PERMISSION_DENIED",
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
async def test_a_refused_completion_is_parked_dead_counted_and_delivered_once_after_replay_outbox(
    stack, keys, jwt_settings, tmp_path, caplog, mistake
):
    caplog.set_level(logging.INFO, logger="reputation_service.relay")
    code = MISTAKES[mistake]
    timing = {"session_service_timeout": 0.5, "outbox_lease": 0.8, "relay_max_backoff": 0.3}
    owner, partner = new_id(), new_id()
    md = {user: user_metadata(jwt_settings, user) for user in (owner, partner)}
    async with (
        running_gate(stack.session_target) as good_gate,
        running_gate(stack.session_target) as bad_gate,
        AsyncExitStack() as servers,
    ):
        good_app, good = await servers.enter_async_context(
            running_reputation(
                reputation_config_for(stack.url, keys, f"127.0.0.1:{good_gate.port}", **timing)
            )
        )
        mistaken = reputation_config_for(stack.url, keys, f"127.0.0.1:{bad_gate.port}", **timing)
        if code == "UNAUTHENTICATED":
            mistaken = replace(mistaken, signing=untrusted(tmp_path))
        else:
            bad_gate.authorization = service_metadata(keys.service, roles=[])
        bad = AsyncExitStack()
        bad_app, bad_stub = await bad.enter_async_context(running_reputation(mistaken))
        try:
            session_id = (await create(stack.sessions, md[owner], partner=partner)).session_id
            await confirm(good, md[owner], session_id)
            reply = await confirm(bad_stub, md[partner], session_id)

            # The award stands; the completion the session service refused is parked, not retried.
            assert (reply.both_confirmed, reply.reputation_awarded, reply.completion_pending) == (
                True,
                True,
                True,
            )
            assert reply.session_status == pb.SESSION_STATUS_ACTIVE
            row = (await outbox(stack.db, [session_id]))[session_id]
            assert row["dead_time"] is not None and row["deliver_time"] is None
            assert row["attempts"] == 1
            assert row["last_error"].startswith(code)
            refused = [r for r in caplog.records if r.levelno == logging.ERROR and isinstance(r.msg, dict)]
            assert [(r.msg["event"], r.msg["session_id"], r.msg["code"]) for r in refused] == [
                ("delivery_refused", session_id, code)
            ]

            for app in (bad_app, good_app):

                async def counted(app: AppServer = app) -> bool:
                    samples = await scrape(app)
                    return (gauge(samples, "outbox_dead_rows"), gauge(samples, "outbox_backlog_rows")) == (
                        1,
                        0,
                    )

                await wait_for(counted, within=10, what="the metrics to count the dead row, and only as dead")
        finally:
            await bad.aclose()  # the mistaken replica is replaced: only correctly keyed ones remain

        # A dead row stays put even when due: a relay that delivers a later row passes it by.
        await stack.db.execute(
            "UPDATE reputation.outbox SET next_attempt_time = now() - interval '1 hour' "
            "WHERE session_id = $1",
            session_id,
        )
        later = (await create(stack.sessions, md[owner], partner=partner)).session_id
        await confirm(good, md[owner], later)
        good_gate.holding.add(COMPLETE)
        assert (await confirm(good, md[partner], later)).completion_pending
        good_gate.holding.discard(COMPLETE)

        async def later_relayed() -> bool:
            row = (await outbox(stack.db, [later]))[later]
            return row["deliver_time"] is not None

        await wait_for(later_relayed, within=20, what="the relay to deliver the later row")
        row = (await outbox(stack.db, [session_id]))[session_id]
        assert (row["attempts"], row["dead_time"] is not None) == (1, True)
        assert await session_statuses(stack.db, [session_id]) == Counter({"active": 1})

        result = await replay_outbox("--session", session_id, env={"REPUTATION_DATABASE_URL": stack.url})
        assert (result.returncode, result.stderr) == (0, "")
        assert "1 dead outbox row" in result.stdout

        async def delivered() -> bool:
            return (await outbox(stack.db, [session_id]))[session_id]["deliver_time"] is not None

        await wait_for(delivered, within=20, what="a correctly keyed relay to deliver the replayed row")
        row = (await outbox(stack.db, [session_id]))[session_id]
        assert (row["attempts"], row["dead_time"]) == (1, None)  # counted afresh from the replay
        assert good_gate.forwarded[(COMPLETE, session_id)] == 1
        assert await session_statuses(stack.db, [session_id]) == Counter({"completed": 1})
        final = await good.GetConfirmation(
            rpb.GetConfirmationRequest(session_id=session_id), metadata=md[owner]
        )
        assert (final.session_status, final.completion_pending) == (pb.SESSION_STATUS_COMPLETED, False)

        async def nothing_dead() -> bool:
            return gauge(await scrape(good_app), "outbox_dead_rows") == 0

        await wait_for(nothing_dead, within=10, what="the dead-row metric to fall back to 0")
    assert Counter(e["session_id"] for e in event_lines(caplog, "delivered"))[session_id] == 1


# --- replay-outbox, the command --------------------------------------------------------------------


async def _outbox_row(db: asyncpg.Pool, delivered: bool, dead: bool) -> str:
    """A paired session and its outbox row in the given state, written as the service would."""
    session_id = new_id()
    await db.execute(
        "INSERT INTO reputation.paired_sessions (session_id, user_id, partner_user_id, last_known_status) "
        "VALUES ($1, $2, $3, 'active')",
        session_id,
        new_id(),
        new_id(),
    )
    await db.execute(
        "INSERT INTO reputation.outbox (session_id, attempts, next_attempt_time, deliver_time, dead_time) "
        "VALUES ($1, 3, now() + interval '1 hour', "
        "CASE WHEN $2 THEN now() END, CASE WHEN $3 THEN now() END)",
        session_id,
        delivered,
        dead,
    )
    return session_id


async def test_replay_outbox_makes_every_dead_row_due_again_and_leaves_the_others(database):
    url, db = database
    dead = [await _outbox_row(db, delivered=False, dead=True) for _ in range(2)]
    live = await _outbox_row(db, delivered=False, dead=False)
    done = await _outbox_row(db, delivered=True, dead=False)
    before = await outbox(db, [live, done])

    result = await replay_outbox(env={"REPUTATION_DATABASE_URL": url})

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == "replay-outbox: 2 dead outbox row(s) due again"
    rows = await outbox(db, dead)
    now = await db.fetchval("SELECT now()")
    assert all(
        r["dead_time"] is None and r["attempts"] == 0 and r["next_attempt_time"] <= now for r in rows.values()
    )
    assert await outbox(db, [live, done]) == before
    again = await replay_outbox(env={"REPUTATION_DATABASE_URL": url})
    assert (again.returncode, again.stdout.strip()) == (0, "replay-outbox: 0 dead outbox row(s) due again")


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ("unknown", "holds no completion"),
        ("live", "still retrying"),
        ("delivered", "already delivered"),
    ],
)
async def test_replay_outbox_for_a_session_without_a_dead_row_says_why_and_exits_1(database, row, why):
    url, db = database
    dead = await _outbox_row(db, delivered=False, dead=True)
    session_id = {
        "unknown": new_id(),
        "live": await _outbox_row(db, delivered=False, dead=False),
        "delivered": await _outbox_row(db, delivered=True, dead=False),
    }[row]

    result = await replay_outbox("--session", session_id, env={"REPUTATION_DATABASE_URL": url})

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and session_id in lines[0] and why in lines[0], result.stderr
    assert (await outbox(db, [dead]))[dead]["dead_time"] is not None  # nothing else replayed


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--session", "not-a-uuid"], {"REPUTATION_DATABASE_URL": "postgresql://x@/db"}, "--session"),
        (["--everything"], {"REPUTATION_DATABASE_URL": "postgresql://x@/db"}, "--everything"),
        ([], {}, "REPUTATION_DATABASE_URL"),
        ([], {"REPUTATION_DATABASE_URL": "mysql://db/reputation"}, "REPUTATION_DATABASE_URL"),
    ],
    ids=["malformed session id", "unknown option", "no database", "not postgresql"],
)
async def test_replay_outbox_with_bad_arguments_exits_2_naming_the_problem(args, env, names):
    result = await replay_outbox(*args, env=env)

    assert result.returncode == 2
    assert names in result.stderr
    assert "Traceback" not in result.stderr


async def test_replay_outbox_when_the_database_does_not_answer_exits_1_in_one_line():
    result = await replay_outbox(
        env={"REPUTATION_DATABASE_URL": "postgresql://postgres@/postgres?host=/nonexistent-socket-dir"}
    )

    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


# --- The lease must outlast an attempt -------------------------------------------------------------


@pytest.mark.parametrize(("lease", "timeout"), [("2", "2"), ("1", "2"), ("10", "30")])
def test_a_lease_no_longer_than_a_delivery_attempt_stops_start_up_naming_outbox_lease_seconds(
    keys, lease, timeout
):
    env = {
        **keys.env(),
        "PATH": "/usr/bin:/bin",
        "REPUTATION_LISTEN": "127.0.0.1:0",
        "REPUTATION_DATABASE_URL": "postgresql://postgres@/postgres?host=/nonexistent-socket-dir",
        "OUTBOX_LEASE_SECONDS": lease,
        "SESSION_SERVICE_TIMEOUT_SECONDS": timeout,
    }
    with pytest.raises(ConfigError) as raised:
        reputation_config.load(env)
    assert raised.value.variable == "OUTBOX_LEASE_SECONDS"

    result = subprocess.run(
        [sys.executable, "-m", "reputation_service"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "OUTBOX_LEASE_SECONDS" in lines[0], result.stderr
    assert "SESSION_SERVICE_TIMEOUT_SECONDS" in lines[0]


def test_a_lease_longer_than_a_delivery_attempt_is_accepted(keys):
    env = {
        **keys.env(),
        "REPUTATION_DATABASE_URL": "postgresql://db/reputation",
        "OUTBOX_LEASE_SECONDS": "2.5",
        "SESSION_SERVICE_TIMEOUT_SECONDS": "2",
    }
    config = reputation_config.load(env)
    assert (config.outbox_lease, config.session_service_timeout) == (2.5, 2.0)
