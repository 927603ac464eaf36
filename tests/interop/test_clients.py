"""Callers in other languages: clients in Go, TypeScript and Java, generated with the shipped
buf.gen.yaml, run the solo lifecycle and a paired confirmation against real servers
(`make interop-test`)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2, reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2, sessions_pb2_grpc

from tests.helpers import BUF, ROOT, new_id, user_metadata, user_token

TS = ROOT / "interop/ts"
GO = ROOT / "interop/go"
JAVA = ROOT / "interop/java"
# The Go layout of go_package: the contract bundle's root is module github.com/interview-platform/protos.
GO_ROOT = Path("src/github.com/interview-platform/protos")
# Debian installs grpc-java's plugin as grpc_java_plugin; buf.gen.yaml uses the conventional name.
GRPC_JAVA_PLUGIN = "/usr/bin/grpc_java_plugin"
CLIENT_TIMEOUT_SECONDS = 120
# grpc-java 1.41 and protobuf-java 3.21 as Debian packages them (no Maven repository is reachable
# here); geronimo-annotation only to compile the stubs' @javax.annotation.Generated.
JARS = [
    f"/usr/share/java/{name}.jar"
    for name in (
        "protobuf grpc-api grpc-context grpc-core grpc-stub grpc-protobuf grpc-protobuf-lite grpc-netty"
        " guava perfmark-api netty-common netty-buffer netty-transport netty-resolver netty-codec"
        " netty-codec-http netty-codec-http2 netty-handler"
    ).split()
]
COMPILE_ONLY_JARS = ["/usr/share/java/geronimo-annotation-1.3-spec.jar"]


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`buf generate` with the repository's buf.gen.yaml (Go, Java, TypeScript) into a GOPATH."""
    gopath = tmp_path_factory.mktemp("gopath")
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "protoc-gen-grpc-java").symlink_to(GRPC_JAVA_PLUGIN)
    path = os.pathsep.join([str(plugins), str(TS / "node_modules/.bin"), os.environ["PATH"]])
    out = gopath / GO_ROOT
    subprocess.run([BUF, "generate", "-o", str(out)], cwd=ROOT, env={**os.environ, "PATH": path}, check=True)
    return gopath


def test_the_template_generates_every_language(generated):
    out = generated / GO_ROOT / "gen"
    assert (out / "go/interview/sessions/v1/sessions_grpc.pb.go").is_file()
    assert (out / "java/com/interviewplatform/reputation/v1/ReputationServiceGrpc.java").is_file()
    assert (out / "ts/interview/reputation/v1/reputation_pb.ts").is_file()
    # Go and Java have google.rpc in their own libraries; TypeScript gets it generated.
    assert not (out / "go/google").exists() and not (out / "java/com/google").exists()
    assert (out / "ts/google/rpc/error_details_pb.ts").is_file()


@pytest.fixture(scope="session")
def go_client(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    binary = tmp_path_factory.mktemp("go-bin") / "client"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": os.pathsep.join([str(generated), "/usr/share/gocode"]),
        "GOCACHE": str(tmp_path_factory.mktemp("go-cache")),
    }
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=GO, env=env, check=True)
    return [str(binary)]


@pytest.fixture(scope="session")
def typescript_client(generated: Path) -> list[str]:
    shutil.rmtree(TS / "gen", ignore_errors=True)
    shutil.copytree(generated / GO_ROOT / "gen/ts", TS / "gen")
    subprocess.run(["npm", "run", "--silent", "build"], cwd=TS, check=True)
    return ["node", str(TS / "dist/client.js")]


@pytest.fixture(scope="session")
def java_client(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    # com.google.rpc: what Maven's proto-google-common-protos holds, which Debian does not package.
    rpc = tmp_path_factory.mktemp("java-google-rpc")
    protos = ["google/rpc/status.proto", "google/rpc/error_details.proto"]
    subprocess.run(["protoc", "-Iprotos", f"--java_out={rpc}", *protos], cwd=ROOT, check=True)
    classes = tmp_path_factory.mktemp("java-classes")
    generated_java = (generated / GO_ROOT / "gen/java").rglob("*.java")
    sources = [*generated_java, *rpc.rglob("*.java"), JAVA / "Client.java"]
    classpath = os.pathsep.join(JARS + COMPILE_ONLY_JARS)
    subprocess.run(["javac", "-d", str(classes), "-cp", classpath, *map(str, sources)], check=True)
    return ["java", "-cp", os.pathsep.join([str(classes), *JARS]), "Client"]


async def _run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Runs a client (the servers answer it from this event loop) and returns the JSON it printed."""
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), CLIENT_TIMEOUT_SECONDS)
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


@pytest.fixture(params=["go", "typescript", "java"])
def client(request: pytest.FixtureRequest) -> list[str]:
    return request.getfixturevalue(f"{request.param}_client")


async def test_a_client_runs_the_lifecycle_and_a_paired_confirmation(
    client, session_server, reputation_server, jwt_settings
):
    owner, partner = new_id(), new_id()
    report = await _run(
        client,
        {
            "SESSION_ADDRESS": f"127.0.0.1:{session_server.port}",
            "REPUTATION_ADDRESS": f"127.0.0.1:{reputation_server.port}",
            "OWNER_ID": owner,
            "PARTNER_ID": partner,
            "OWNER_TOKEN": user_token(jwt_settings, owner),
            "PARTNER_TOKEN": user_token(jwt_settings, partner),
        },
    )
    solo, paired = report["solo"], report["paired"]
    active, paused, completed = (
        sessions_pb2.SESSION_STATUS_ACTIVE,
        sessions_pb2.SESSION_STATUS_PAUSED,
        sessions_pb2.SESSION_STATUS_COMPLETED,
    )
    assert solo["statuses"] == [active, paused, active, completed]
    assert solo["idempotent_create"] is True
    assert solo["question_numbers"] == [1, 1] and solo["messages"] == 2
    assert solo["complete_time_set"] is True
    assert solo["repeat_complete"] == {
        "code": grpc.StatusCode.FAILED_PRECONDITION.value[0],
        "reason": "SESSION_ALREADY_COMPLETED",
        "domain": "interview.sessions",
    }
    assert solo["bad_id"] == {
        "code": grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "reason": "INVALID_ARGUMENT",
        "fields": ["session_id"],
    }
    assert paired["first"] == {"both_confirmed": False, "confirmed_user_ids": [owner]}
    assert paired["second"] == {
        "both_confirmed": True,
        "reputation_awarded": True,
        "session_status": completed,
        "confirmed_user_ids": sorted([owner, partner]),
    }
    assert paired["owner_score"] == "1"
    # What the client did is what the servers hold.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_server.port}") as channel:
        sessions = sessions_pb2_grpc.SessionServiceStub(channel)
        for session_id in (solo["session_id"], paired["session_id"]):
            request = sessions_pb2.GetSessionRequest(session_id=session_id)
            session = await sessions.GetSession(request, metadata=user_metadata(jwt_settings, owner))
            assert session.status == completed
    async with grpc.aio.insecure_channel(f"127.0.0.1:{reputation_server.port}") as channel:
        reputation = reputation_pb2_grpc.ReputationServiceStub(channel)
        for user in (owner, partner):
            score = await reputation.GetReputation(
                reputation_pb2.GetReputationRequest(user_id=user), metadata=user_metadata(jwt_settings, user)
            )
            assert (score.score, score.confirmed_sessions) == (1, 1)
