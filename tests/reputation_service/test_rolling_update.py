"""A rolling update: the previous release's reputation service (the commit pyproject.toml records as
`tool.interview.previous-release`, run from its own tree) keeps serving beside this tree's, on a
database this tree migrated to its head. Pairs confirmed through either replica or both, at once,
award each participant exactly once and complete every session; the old replica's relay and
sweeper work on the new schema. Every migration and every sql/ file is checked this way."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import tomllib
from collections import Counter
from pathlib import Path

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import confirm, create, get_confirmation, new_id, session_statuses, user_metadata, wait_for
from tests.servers import ServiceProcess, reputation_config_for, running_reputation, wait_serving

ROOT = Path(__file__).resolve().parents[2]
PAIRS_PER_ROUTE = 6
OLD_WINDOW_SECONDS = 4.0  # the old replica's sweeper closes the one half-confirmed session


def previous_release() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["interview"]["previous-release"])


@pytest.fixture(scope="module")
def previous_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's files, from this repository's history."""
    commit = previous_release()
    tree = tmp_path_factory.mktemp("previous-release")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit], capture_output=True, check=False
    )
    assert archive.returncode == 0, (
        f"the previous release {commit} is not in this clone's history: {archive.stderr.decode()}"
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def problems(log: list[str]) -> list[str]:
    """The old replica's lines about a call answered INTERNAL or a background task failing."""
    found = []
    for line in log:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("code") == "INTERNAL" or entry.get("level") == "ERROR":
            found.append(line)
    return found


async def test_the_previous_release_and_this_one_confirm_pairs_side_by_side_on_the_new_schema(
    previous_tree, stack, keys, jwt_settings, caplog
):
    caplog.set_level(logging.ERROR)
    env = {
        **keys.env(),
        "PYTHONPATH": f"{previous_tree}:{previous_tree / 'gen'}",
        "REPUTATION_LISTEN": "127.0.0.1:0",
        "REPUTATION_METRICS_LISTEN": "127.0.0.1:0",
        "REPUTATION_DATABASE_URL": stack.url,
        "SESSION_SERVICE_TARGET": stack.session_target,
        "RELAY_INTERVAL_SECONDS": "0.1",
        "CONFIRMATION_WINDOW_SECONDS": str(OLD_WINDOW_SECONDS),
    }
    old = await ServiceProcess("reputation_service", env, cwd=str(previous_tree)).start()
    try:
        await wait_serving(old.target)
        new_config = reputation_config_for(stack.url, keys, stack.session_target)
        async with (
            running_reputation(new_config) as (_, new),
            grpc.aio.insecure_channel(old.target) as channel,
        ):
            previous = reputation_pb2_grpc.ReputationServiceStub(channel)
            routes = [(previous, new), (new, previous), (previous, previous), (new, new)]
            pairs = [(new_id(), new_id(), route) for route in routes for _ in range(PAIRS_PER_ROUTE)]
            md = {
                user: user_metadata(jwt_settings, user)
                for owner, partner, _ in pairs
                for user in (owner, partner)
            }
            created = await asyncio.gather(
                *(create(stack.sessions, md[owner], partner=partner) for owner, partner, _ in pairs)
            )
            ids = [session.session_id for session in created]
            # Both partners of every pair at once, each through its route's replica; then each
            # repeats through the other replica.
            replies = await asyncio.gather(
                *(
                    confirm(stub, md[user], session_id)
                    for session_id, (owner, partner, route) in zip(ids, pairs, strict=True)
                    for stub, user in zip(route, (owner, partner), strict=True)
                )
            )
            repeats = await asyncio.gather(
                *(
                    confirm(stub, md[user], session_id)
                    for session_id, (owner, partner, route) in zip(ids, pairs, strict=True)
                    for stub, user in zip(reversed(route), (owner, partner), strict=True)
                )
            )
            assert sum(reply.both_confirmed for reply in replies) >= len(pairs)
            assert all(r.both_confirmed and r.reputation_awarded for r in repeats)

            # A session only its owner confirms, through this release: the old sweeper closes it.
            lone_owner, lone_partner = new_id(), new_id()
            md[lone_owner] = user_metadata(jwt_settings, lone_owner)
            lone = (await create(stack.sessions, md[lone_owner], partner=lone_partner)).session_id
            await confirm(new, md[lone_owner], lone)

            async def lone_closed() -> bool:
                view = await get_confirmation(previous, md[lone_owner], lone)
                return view.closed_unconfirmed

            await wait_for(lone_closed, within=OLD_WINDOW_SECONDS + 10, what="the old sweeper to close")

            async def all_completed() -> bool:
                return await session_statuses(stack.db, [*ids, lone]) == Counter({"completed": len(ids) + 1})

            await wait_for(all_completed, within=15, what="every session to be completed")
            views = await asyncio.gather(
                *(
                    get_confirmation(stub, md[owner], session_id)
                    for session_id, (owner, _, route) in zip(ids, pairs, strict=True)
                    for stub in route
                )
            )
            assert {(v.both_confirmed, v.reputation_awarded, v.session_status) for v in views} == {
                (True, True, pb.SESSION_STATUS_COMPLETED)
            }
        users = [user for owner, partner, _ in pairs for user in (owner, partner)]
        scores = await stack.db.fetch(
            "SELECT user_id::text, score, confirmed_sessions FROM reputation.scores "
            "WHERE user_id = ANY($1::uuid[])",
            users,
        )
        assert {row["user_id"]: (row["score"], row["confirmed_sessions"]) for row in scores} == dict.fromkeys(
            users, (1, 1)
        )
        events = await stack.db.fetch(
            "SELECT reason, count(*) FROM reputation.events WHERE session_id = ANY($1::uuid[]) GROUP BY 1",
            [*ids, lone],
        )
        assert {row[0]: row[1] for row in events} == {
            "MUTUAL_CONFIRMATION": 2 * len(ids),
            "PARTNER_DID_NOT_CONFIRM": 1,
        }
        assert problems(old.log) == []
        assert [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR] == []
    finally:
        old.kill()
        await old.wait()
