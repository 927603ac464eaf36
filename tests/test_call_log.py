"""One structured log line per call: method, code, duration; never the token."""

from __future__ import annotations

import logging

import grpc
from interview.sessions.v1 import sessions_pb2 as pb

from common.logs import JsonFormatter
from tests.helpers import expect_error, new_id


async def test_each_call_logs_method_code_and_duration_and_never_the_token(sessions, as_user, caplog):
    caplog.set_level(logging.INFO, logger="rpc")
    metadata = as_user(new_id())
    token = metadata[0][1].split(" ", 1)[1]
    await sessions.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=metadata)
    await expect_error(
        sessions.GetSession(pb.GetSessionRequest(session_id=new_id()), metadata=metadata),
        grpc.StatusCode.NOT_FOUND,
        "SESSION_NOT_FOUND",
    )

    calls = [r.msg for r in caplog.records if isinstance(r.msg, dict) and "method" in r.msg]
    assert calls[-2]["method"] == "/interview.sessions.v1.SessionService/CreateSession"
    assert calls[-2]["code"] == "OK"
    assert calls[-1] == {
        **calls[-1],
        "method": "/interview.sessions.v1.SessionService/GetSession",
        "code": "NOT_FOUND",
    }
    assert all(isinstance(call["duration_ms"], float) for call in calls[-2:])
    rendered = [JsonFormatter().format(record) for record in caplog.records]
    assert not any(token in line for line in rendered)
