"""The contract documents itself through reflection: `grpcurl describe` on a running server, with
no proto files and no token, prints the proto comments of services, methods, messages, fields and
enums, and still describes what has no comments (health)."""

from __future__ import annotations

import json

import pytest
from interview.sessions.v1 import sessions_pb2

from common.app import AppServer
from tests.helpers import GRPCURL, grpcurl_describe, new_id, run_program

# A symbol of each kind, and a sentence of its comment in protos/.
DOCUMENTED = {
    "interview.sessions.v1.SessionService": "// The public session API.",
    "interview.sessions.v1.SessionService.GetSession": "// Returns one session the caller participates in.",
    "interview.sessions.v1.Session": "// One interview session.",
    "interview.sessions.v1.Session.session_id": "// The session's id (UUID, lowercase).",
    "interview.sessions.v1.SessionStatus": "// Where a session is in its lifecycle.",
    "interview.reputation.v1.ReputationService": "// The public reputation API.",
    "interview.reputation.v1.Confirmation.both_confirmed": "// True once both participants confirmed.",
}


@pytest.mark.parametrize(("symbol", "comment"), DOCUMENTED.items(), ids=list(DOCUMENTED))
async def test_grpcurl_describe_shows_the_proto_comment(
    symbol: str, comment: str, session_server: AppServer, reputation_server: AppServer
) -> None:
    port = reputation_server.port if symbol.startswith("interview.reputation.") else session_server.port
    described = await grpcurl_describe(port, symbol)
    assert comment in described, described


async def test_a_service_description_gives_every_method_its_reasons(session_server: AppServer) -> None:
    described = await grpcurl_describe(session_server.port, "interview.sessions.v1.SessionService")
    documented, comment = set(), ""
    for line in (line.strip() for line in described.splitlines()):
        if line.startswith("rpc ") and "Reasons:" in comment:
            documented.add(line.split()[1])
        comment = comment + line if line.startswith("//") else ""
    methods = sessions_pb2.DESCRIPTOR.services_by_name["SessionService"].methods_by_name
    assert documented == set(methods), described


async def test_a_service_outside_the_contract_is_still_described(session_server: AppServer) -> None:
    described = await grpcurl_describe(session_server.port, "grpc.health.v1.Health")
    assert "rpc Check ( .grpc.health.v1.HealthCheckRequest )" in described, described


async def test_grpcurl_prints_the_canonical_json_names_every_tool_prints(
    session_server: AppServer, as_user
) -> None:
    # Reflection serves the contract's descriptors as protoc wrote them, json_name included: grpcurl
    # prints `sessionId`, as buf curl and Connect do, and as the README's jq reads it.
    token = as_user(new_id())[0][1]
    done = await run_program(
        str(GRPCURL),
        "-plaintext",
        "-H",
        f"authorization: {token}",
        "-d",
        json.dumps({"job_posting_id": new_id()}),
        f"127.0.0.1:{session_server.port}",
        "interview.sessions.v1.SessionService/CreateSession",
        within=30,
    )
    assert done.returncode == 0, done.stderr
    created = json.loads(done.stdout)
    assert {"sessionId", "userId", "jobPostingId", "retakeNumber"} <= set(created), created
