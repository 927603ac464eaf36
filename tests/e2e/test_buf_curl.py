"""End to end with a third-party client: `buf curl` drives both running services through reflection.

No generated stubs are used for the calls: buf learns the schema from server reflection (it tries
grpc.reflection.v1 first and falls back to v1alpha, the one grpcio-reflection serves), sends the
JSON request over gRPC and prints the response as JSON (protojson: camelCase names, int64 as
strings; --emit-defaults makes unset scalars explicit).

A failed RPC prints nothing on stdout. buf writes the Connect JSON form of the status to stderr,
`{"code": "failed_precondition", "message": ..., "details": [{"type": "google.rpc.ErrorInfo",
"value": <unpadded base64 of the message>}]}`, and exits with the gRPC code shifted left by three
bits (FAILED_PRECONDITION 9 -> 72). It never decodes the details itself, even when given a schema
for google.rpc, so the tests decode `value` with googleapis-common-protos. Usage and transport
failures exit below 8 with a `Failure: ...` line instead.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.rpc import error_details_pb2

from common.app import AppServer
from common.config import JwtSettings
from tests.helpers import BUF, buf_env, new_id, run_buf, user_token

CALL_TIMEOUT_SECONDS = 30.0
SESSIONS = "interview.sessions.v1.SessionService"
REPUTATION = "interview.reputation.v1.ReputationService"
FAILED_PRECONDITION = 9
INVALID_ARGUMENT = 3
UNAUTHENTICATED = 16

# buf's environment, its HOME and XDG_CACHE_HOME pointed at a scratch folder by the fixture below.
_BUF_ENV: dict[str, str] = {}


class BufCurlError(Exception):
    """buf curl exited non-zero; carries everything it said."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"buf curl exited {returncode}\nargs: {args}\nstdout: {stdout}\nstderr: {stderr}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


@dataclass
class RpcFailure:
    """A failed RPC as buf curl reported it, with the ErrorInfo and BadRequest details decoded."""

    exit_code: int
    code: str
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    detail_types: list[str] = field(default_factory=list)


@pytest.fixture(scope="module", autouse=True)
def buf_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    assert BUF.exists(), f"{BUF} is missing: install the dev dependencies (buf-bin)"
    _BUF_ENV.update(buf_env(tmp_path_factory.mktemp("buf-home")))


def user_authorization(jwt_settings: JwtSettings, user_id: str) -> str:
    """The authorization header's value for `user_id`: `Bearer <a user token>`."""
    return "Bearer " + user_token(jwt_settings, user_id)


async def run_buf_plaintext(
    port: int, method: str, body: dict[str, Any] | None, authorization: str | None, *extra: str
) -> tuple[int, str, str]:
    """Runs one `buf curl` of `method` ("pkg.Service/Method", or "" with --list-services) on the
    plaintext server on `port` (HTTP/2 without TLS); returns (exit code, stdout, stderr)."""
    url = f"http://127.0.0.1:{port}/{method}"
    flags = ("--http2-prior-knowledge", *extra)
    return await run_buf(url, body, authorization, *flags, env=_BUF_ENV, within=CALL_TIMEOUT_SECONDS)


async def buf_curl(port: int, method: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """Calls `method` (e.g. "pkg.Service/Method") and returns the parsed JSON response."""
    code, stdout, stderr = await run_buf_plaintext(port, method, body, token)
    if code != 0:
        raise BufCurlError([method, json.dumps(body)], code, stdout, stderr)
    return json.loads(stdout)


def _unpack(value: str) -> bytes:
    return base64.b64decode(value + "=" * (-len(value) % 4))


async def buf_curl_error(
    port: int, method: str, body: dict[str, Any], token: str | None = None
) -> RpcFailure:
    """Calls a method that must fail with an RPC error; returns the error buf printed, decoded."""
    code, stdout, stderr = await run_buf_plaintext(port, method, body, token)
    if code < 8:
        raise BufCurlError([method, json.dumps(body)], code, stdout, stderr)
    assert stdout == "", stdout
    error = json.loads(stderr)
    failure = RpcFailure(exit_code=code, code=error["code"], message=error.get("message", ""))
    for detail in error.get("details", []):
        failure.detail_types.append(detail["type"])
        if detail["type"] == "google.rpc.ErrorInfo":
            info = error_details_pb2.ErrorInfo.FromString(_unpack(detail["value"]))
            failure.reason, failure.domain, failure.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail["type"] == "google.rpc.BadRequest":
            bad = error_details_pb2.BadRequest.FromString(_unpack(detail["value"]))
            failure.fields = {v.field: v.description for v in bad.field_violations}
    return failure


async def test_buf_curl_resolves_the_schema_by_reflection_v1_with_no_fallback(
    session_server: AppServer, jwt_settings: JwtSettings
) -> None:
    code, stdout, stderr = await run_buf_plaintext(
        session_server.port,
        f"{SESSIONS}/CreateSession",
        {"job_posting_id": new_id()},
        user_authorization(jwt_settings, new_id()),
        "--verbose",
    )
    assert code == 0, stderr
    assert json.loads(stdout)["status"] == "SESSION_STATUS_ACTIVE"
    assert 'Using server reflection to resolve "interview.sessions.v1.SessionService"' in stderr
    # v1 is tried first and answers: buf never falls back to v1alpha.
    assert "POST /grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in stderr
    assert "v1alpha" not in stderr, stderr
    assert 'Server reflection has resolved file "interview/sessions/v1/sessions.proto"' in stderr


@pytest.mark.parametrize("protocol", ["grpc-v1", "grpc-v1alpha"])
async def test_both_reflection_protocols_list_each_service(
    session_server: AppServer, reputation_server: AppServer, protocol: str
) -> None:
    expected = {
        session_server.port: {SESSIONS, "interview.sessions.v1.SessionInternalService"},
        reputation_server.port: {"interview.reputation.v1.ReputationService"},
    }
    for port, services in expected.items():
        code, stdout, stderr = await run_buf_plaintext(
            port, "", None, None, "--list-services", "--reflect-protocol", protocol
        )
        assert code == 0, stderr
        listed = set(stdout.split())
        assert services | {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= listed, listed
        assert "grpc.reflection.v1alpha.ServerReflection" in listed, listed


async def test_solo_session_create_append_complete_retake_list(
    session_server: AppServer, jwt_settings: JwtSettings
) -> None:
    port, alice, posting = session_server.port, new_id(), new_id()
    token = user_authorization(jwt_settings, alice)

    created = await buf_curl(port, f"{SESSIONS}/CreateSession", {"job_posting_id": posting}, token)
    session_id = created["sessionId"]
    assert created["userId"] == alice
    assert created["jobPostingId"] == posting
    assert created["partnerUserId"] == ""
    assert created["status"] == "SESSION_STATUS_ACTIVE"
    assert (created["currentQuestionNumber"], created["retakeNumber"]) == (0, 1)
    assert created["completeTime"] is None

    message = await buf_curl(
        port,
        f"{SESSIONS}/AppendMessage",
        {"session_id": session_id, "role": "MESSAGE_ROLE_QUESTION", "content": "Tell me about a hard bug."},
        token,
    )
    assert message["sessionId"] == session_id
    assert message["role"] == "MESSAGE_ROLE_QUESTION"
    assert message["content"] == "Tell me about a hard bug."
    assert message["questionNumber"] == 1

    completed = await buf_curl(port, f"{SESSIONS}/CompleteSession", {"session_id": session_id}, token)
    assert completed["status"] == "SESSION_STATUS_COMPLETED"
    assert completed["currentQuestionNumber"] == 1
    assert completed["completeTime"]

    retake = await buf_curl(port, f"{SESSIONS}/RetakeSession", {"session_id": session_id}, token)
    assert retake["sessionId"] != session_id
    assert retake["status"] == "SESSION_STATUS_ACTIVE"
    assert retake["retakeNumber"] == 2
    assert retake["originalSessionId"] == session_id
    assert retake["jobPostingId"] == posting

    done = await buf_curl(
        port, f"{SESSIONS}/ListSessions", {"status": "SESSION_STATUS_COMPLETED", "page_size": 10}, token
    )
    assert [s["sessionId"] for s in done["sessions"]] == [session_id]
    assert done["nextPageToken"] == ""

    everything = await buf_curl(port, f"{SESSIONS}/ListSessions", {}, token)
    assert [s["sessionId"] for s in everything["sessions"]] == [retake["sessionId"], session_id]


async def test_paired_session_completed_by_mutual_confirmation(
    session_server: AppServer, reputation_server: AppServer, jwt_settings: JwtSettings
) -> None:
    alice, bob = new_id(), new_id()
    alice_token, bob_token = user_authorization(jwt_settings, alice), user_authorization(jwt_settings, bob)

    paired = await buf_curl(
        session_server.port,
        f"{SESSIONS}/CreateSession",
        {"job_posting_id": new_id(), "partner_user_id": bob},
        alice_token,
    )
    session_id = paired["sessionId"]
    assert paired["partnerUserId"] == bob

    first = await buf_curl(
        reputation_server.port, f"{REPUTATION}/ConfirmCompletion", {"session_id": session_id}, alice_token
    )
    assert first["confirmedUserIds"] == [alice]
    assert first["bothConfirmed"] is False
    assert first["reputationAwarded"] is False
    assert first["sessionStatus"] == "SESSION_STATUS_ACTIVE"

    second = await buf_curl(
        reputation_server.port, f"{REPUTATION}/ConfirmCompletion", {"session_id": session_id}, bob_token
    )
    assert second["confirmedUserIds"] == sorted([alice, bob])
    assert second["bothConfirmed"] is True
    assert second["reputationAwarded"] is True
    assert second["sessionStatus"] == "SESSION_STATUS_COMPLETED"
    assert second["completionPending"] is False

    session = await buf_curl(
        session_server.port, f"{SESSIONS}/GetSession", {"session_id": session_id}, bob_token
    )
    assert session["status"] == "SESSION_STATUS_COMPLETED"
    assert session["completeTime"]

    bob_reputation = await buf_curl(reputation_server.port, f"{REPUTATION}/GetReputation", {}, bob_token)
    assert bob_reputation["userId"] == bob
    # int64 fields are JSON strings in protojson.
    assert (bob_reputation["score"], bob_reputation["confirmedSessions"]) == ("1", "1")

    alice_reputation = await buf_curl(
        reputation_server.port, f"{REPUTATION}/GetReputation", {"user_id": alice}, bob_token
    )
    assert alice_reputation["score"] == "1"

    events = await buf_curl(reputation_server.port, f"{REPUTATION}/ListReputationEvents", {}, bob_token)
    assert [(e["sessionId"], e["delta"], e["reason"]) for e in events["events"]] == [
        (session_id, 1, "MUTUAL_CONFIRMATION")
    ]


async def test_completing_twice_prints_failed_precondition_with_its_error_info(
    session_server: AppServer, jwt_settings: JwtSettings
) -> None:
    port, token = session_server.port, user_authorization(jwt_settings, new_id())
    created = await buf_curl(port, f"{SESSIONS}/CreateSession", {"job_posting_id": new_id()}, token)
    session_id = created["sessionId"]
    await buf_curl(port, f"{SESSIONS}/CompleteSession", {"session_id": session_id}, token)

    with pytest.raises(BufCurlError) as raised:
        await buf_curl(port, f"{SESSIONS}/CompleteSession", {"session_id": session_id}, token)
    assert raised.value.returncode == FAILED_PRECONDITION << 3
    assert '"code": "failed_precondition"' in raised.value.stderr
    assert "google.rpc.ErrorInfo" in raised.value.stderr

    failure = await buf_curl_error(port, f"{SESSIONS}/CompleteSession", {"session_id": session_id}, token)
    assert failure.exit_code == FAILED_PRECONDITION << 3
    assert failure.code == "failed_precondition"
    assert "completed" in failure.message
    assert failure.reason == "SESSION_ALREADY_COMPLETED"
    assert failure.domain == "interview.sessions"
    assert failure.metadata["session_id"] == session_id


async def test_bad_request_and_reputation_errors_decode_through_buf_curl(
    session_server: AppServer, reputation_server: AppServer, jwt_settings: JwtSettings
) -> None:
    token = user_authorization(jwt_settings, new_id())

    malformed = await buf_curl_error(
        session_server.port, f"{SESSIONS}/GetSession", {"session_id": "not-a-uuid"}, token
    )
    assert malformed.exit_code == INVALID_ARGUMENT << 3
    assert (malformed.code, malformed.reason) == ("invalid_argument", "INVALID_ARGUMENT")
    assert malformed.detail_types == ["google.rpc.ErrorInfo", "google.rpc.BadRequest"]
    assert set(malformed.fields) == {"session_id"}

    solo = await buf_curl(
        session_server.port, f"{SESSIONS}/CreateSession", {"job_posting_id": new_id()}, token
    )
    not_paired = await buf_curl_error(
        reputation_server.port, f"{REPUTATION}/ConfirmCompletion", {"session_id": solo["sessionId"]}, token
    )
    assert (not_paired.code, not_paired.reason) == ("failed_precondition", "NOT_A_PAIRED_SESSION")
    assert not_paired.domain == "interview.reputation"

    anonymous = await buf_curl_error(session_server.port, f"{SESSIONS}/ListSessions", {})
    assert (anonymous.exit_code, anonymous.code, anonymous.reason) == (
        UNAUTHENTICATED << 3,
        "unauthenticated",
        "UNAUTHENTICATED",
    )
