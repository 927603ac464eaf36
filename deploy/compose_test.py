"""`make compose-test`: the compose deployment built, brought up, driven and broken for real.

Builds the image once, brings docker-compose.yml up with --wait under its own project name, then:
an end-to-end scenario against every replica (solo lifecycle per session replica, paired sessions
confirmed through different reputation replicas, a token signed with a wrong key refused, a client
without a certificate refused), then faults under load (a session replica killed, PostgreSQL
restarted, every session replica stopped while pairs confirm, PgBouncer restarted). Prints one line
per step on stderr as it starts ("[compose-test 5/9 2:41] ...", with the time since the start) and a
summary with counts on stdout; exits 1 on any miss; always tears the stack down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc as rpb_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc

from common.client import channel_options, error_reason

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "interview-compose-test"
STEPS = 9  # config and build, up, the six scenarios below, teardown
UP_TIMEOUT_SECONDS = 300
LOAD_TASKS = 6
CALL_DEADLINE = 5.0
# What a fault may answer: "nothing done, retry" (the database or the session service is away).
RETRYABLE = {("UNAVAILABLE", "DATABASE_UNAVAILABLE"), ("UNAVAILABLE", "SESSIONS_UNAVAILABLE")}

Outcome = tuple[str, str]


class Progress:
    """Numbers each step by its place in the plan: a failure skips ahead to the teardown, always the
    last step, so "n/STEPS" stays true."""

    def __init__(self) -> None:
        self.began = time.monotonic()

    def say(self, step: int, text: str) -> None:
        minutes, seconds = divmod(int(time.monotonic() - self.began), 60)
        print(f"[compose-test {step}/{STEPS} {minutes}:{seconds:02}] {text}", file=sys.stderr, flush=True)


def outcome_of(error: grpc.aio.AioRpcError) -> Outcome:
    return error.code().name, error_reason(error) or ""


class Misses:
    """What went wrong, collected so every step runs and the summary shows them all."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.found.append(what)
            print(f"      MISS: {what}", flush=True)


class Stack:
    """The compose project: its environment (secrets made here), the client's TLS material (copied
    out of the keys volume) and the identity provider's key (the public half is JWT_KEY)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.idp_key = ed25519.Ed25519PrivateKey.generate()
        public = self.idp_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.env = {
            **os.environ,
            "JWT_KEY": public.decode(),
            "PAGE_TOKEN_SECRET": secrets.token_hex(32),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "SESSION_DB_PASSWORD": secrets.token_hex(16),
            "REPUTATION_DB_PASSWORD": secrets.token_hex(16),
        }
        self.credentials: grpc.ChannelCredentials | None = None

    def compose(self, *args: str, capture: bool = False, timeout: float = 600) -> str:
        result = subprocess.run(
            ["docker", "compose", "-p", PROJECT, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=capture,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            detail = (result.stderr or "")[-2000:] if capture else ""
            raise RuntimeError(f"docker compose {' '.join(args)} failed ({result.returncode}) {detail}")
        return result.stdout if capture else ""

    def load_tls(self) -> None:
        self.compose("cp", "keys:/keys/tls", str(self.folder), capture=True)
        tls = self.folder / "tls"
        self.credentials = grpc.ssl_channel_credentials(
            (tls / "ca.pem").read_bytes(),
            (tls / "client.key").read_bytes(),
            (tls / "client.pem").read_bytes(),
        )

    def ports(self, service: str, target: int) -> list[int]:
        found = []
        for index in (1, 2):
            address = self.compose("port", "--index", str(index), service, str(target), capture=True)
            found.append(int(address.strip().rpartition(":")[2]))
        return found

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service, capture=True).split()

    def started_at(self, container: str) -> str:
        return subprocess.run(
            ["docker", "inspect", "-f", "{{.State.StartedAt}}", container],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def token(self, user: str, key: Any = None) -> tuple[tuple[str, str]]:
        now = int(time.time())
        claims = {"sub": user, "iss": "interview-dev", "aud": "interview", "iat": now, "exp": now + 3600}
        signed = jwt.encode(claims, key or self.idp_key, algorithm="EdDSA")
        return (("authorization", f"Bearer {signed}"),)

    def channel(
        self, ports: list[int], credentials: grpc.ChannelCredentials | None = None
    ) -> grpc.aio.Channel:
        """Mutual TLS to the given replicas, round robin, with the typed clients' retry policy."""
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        # The certificate names localhost; a target of several addresses has no single host name.
        options = [
            *channel_options(),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.ssl_target_name_override", "localhost"),
        ]
        return grpc.aio.secure_channel(target, credentials or self.credentials, options=options)


def new_id() -> str:
    return str(uuid.uuid4())


async def solo_lifecycle(sessions: pb_grpc.SessionServiceStub, md: Any) -> None:
    created = await sessions.CreateSession(pb.CreateSessionRequest(job_posting_id=new_id()), metadata=md)
    sid = created.session_id
    question = pb.AppendMessageRequest(session_id=sid, role=pb.MESSAGE_ROLE_QUESTION, content="Why?")
    await sessions.AppendMessage(question, metadata=md)
    answer = pb.AppendMessageRequest(session_id=sid, role=pb.MESSAGE_ROLE_ANSWER, content="Because.")
    await sessions.AppendMessage(answer, metadata=md)
    await sessions.PauseSession(pb.PauseSessionRequest(session_id=sid), metadata=md)
    await sessions.ResumeSession(pb.ResumeSessionRequest(session_id=sid), metadata=md)
    done = await sessions.CompleteSession(pb.CompleteSessionRequest(session_id=sid), metadata=md)
    assert done.status == pb.SESSION_STATUS_COMPLETED, done
    retake = await sessions.RetakeSession(pb.RetakeSessionRequest(session_id=sid), metadata=md)
    assert retake.retake_number == 2 and retake.original_session_id == sid, retake
    messages = await sessions.ListMessages(pb.ListMessagesRequest(session_id=sid), metadata=md)
    assert [m.question_number for m in messages.messages] == [1, 1], messages
    chain = await sessions.ListRetakes(pb.ListRetakesRequest(session_id=sid), metadata=md)
    assert [s.retake_number for s in chain.sessions] == [1, 2], chain


async def paired(sessions: pb_grpc.SessionServiceStub, stack: Stack) -> tuple[str, str, str]:
    owner, partner = new_id(), new_id()
    request = pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=partner)
    created = await sessions.CreateSession(request, metadata=stack.token(owner))
    return created.session_id, owner, partner


async def run_load(call: Callable[[], Awaitable[Any]], until: asyncio.Event) -> list[tuple[float, Outcome]]:
    """Closed-loop calls from LOAD_TASKS tasks until `until` is set: (time, outcome) of each."""
    seen: list[tuple[float, Outcome]] = []

    async def worker() -> None:
        while not until.is_set():
            try:
                await call()
                seen.append((time.monotonic(), ("OK", "")))
            except grpc.aio.AioRpcError as error:
                seen.append((time.monotonic(), outcome_of(error)))
                await asyncio.sleep(0.05)  # a failing dependency: do not spin

    await asyncio.gather(*(worker() for _ in range(LOAD_TASKS)))
    return seen


def session_load(sessions: pb_grpc.SessionServiceStub, stack: Stack) -> Callable[[], Awaitable[Any]]:
    md = stack.token(new_id())
    counter = [0]

    async def call() -> Any:
        counter[0] += 1
        created = await sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id()), metadata=md, timeout=CALL_DEADLINE
        )
        return await sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session_id), metadata=md, timeout=CALL_DEADLINE
        )

    return call


async def under_load(
    calls: list[Callable[[], Awaitable[Any]]], fault: Callable[[], Awaitable[float]], settle: float
) -> tuple[Counter[Outcome], float | None]:
    """Runs the calls as load, applies `fault` (returns when the fault is over, i.e. the broken part
    is back), keeps the load going `settle` seconds more. Returns the outcomes and how long after
    the fault ended the first success came."""
    until = asyncio.Event()
    loads = [asyncio.create_task(run_load(call, until)) for call in calls]
    await asyncio.sleep(1.5)  # load running before the fault
    ended = await fault()
    await asyncio.sleep(settle)
    until.set()
    seen = [item for load in loads for item in await load]
    outcomes = Counter(outcome for _, outcome in seen)
    after = sorted(at for at, outcome in seen if outcome == ("OK", "") and at >= ended)
    return outcomes, (after[0] - ended if after else None)


def check_fault_outcomes(
    misses: Misses, name: str, outcomes: Counter[Outcome], recovered: float | None
) -> None:
    bad = {o: n for o, n in outcomes.items() if o != ("OK", "") and o not in RETRYABLE}
    misses.check(not bad, f"{name}: answers other than OK or UNAVAILABLE: {bad}")
    misses.check(outcomes[("OK", "")] > 0, f"{name}: no call succeeded")
    misses.check(recovered is not None and recovered < 10, f"{name}: no success within 10 s of recovery")


async def wait_healthy(stack: Stack, service: str) -> float:
    await asyncio.to_thread(stack.compose, "up", "-d", "--wait", service, capture=True)
    return time.monotonic()


async def scenario(stack: Stack, misses: Misses, progress: Progress) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    session_ports = stack.ports("session", 50051)
    reputation_ports = stack.ports("reputation", 50052)

    progress.say(3, f"end to end: solo lifecycle on each session replica {session_ports}")
    for port in session_ports:
        async with stack.channel([port]) as channel:
            await solo_lifecycle(pb_grpc.SessionServiceStub(channel), stack.token(new_id()))
    summary["solo lifecycles"] = len(session_ports)

    progress.say(
        4,
        f"end to end: pairs confirmed through reputation replicas {reputation_ports}; refusals",
    )
    async with (
        stack.channel(session_ports) as session_channel,
        stack.channel([reputation_ports[0]]) as first,
        stack.channel([reputation_ports[1]]) as second,
    ):
        sessions = pb_grpc.SessionServiceStub(session_channel)
        pairs = [await paired(sessions, stack) for _ in range(4)]
        for sid, owner, partner in pairs:
            await rpb_grpc.ReputationServiceStub(first).ConfirmCompletion(
                rpb.ConfirmCompletionRequest(session_id=sid), metadata=stack.token(owner)
            )
            reply = await rpb_grpc.ReputationServiceStub(second).ConfirmCompletion(
                rpb.ConfirmCompletionRequest(session_id=sid), metadata=stack.token(partner)
            )
            misses.check(reply.both_confirmed and reply.reputation_awarded, f"pair {sid}: {reply}")
            got = await sessions.GetSession(pb.GetSessionRequest(session_id=sid), metadata=stack.token(owner))
            misses.check(got.status == pb.SESSION_STATUS_COMPLETED, f"pair {sid} not completed: {got.status}")
            for user in (owner, partner):
                score = await rpb_grpc.ReputationServiceStub(first).GetReputation(
                    rpb.GetReputationRequest(user_id=user), metadata=stack.token(user)
                )
                misses.check(score.score == 1, f"pair {sid}: {user} has score {score.score}")
        summary["pairs confirmed across replicas"] = len(pairs)
        try:
            wrong = stack.token(new_id(), ed25519.Ed25519PrivateKey.generate())
            await sessions.ListSessions(pb.ListSessionsRequest(), metadata=wrong)
            misses.check(False, "a token signed with a wrong key was accepted")
        except grpc.aio.AioRpcError as error:
            misses.check(error.code() == grpc.StatusCode.UNAUTHENTICATED, f"wrong key: {outcome_of(error)}")
    no_certificate = grpc.ssl_channel_credentials((stack.folder / "tls" / "ca.pem").read_bytes())
    for port in session_ports:
        async with stack.channel([port], no_certificate) as channel:
            try:
                await pb_grpc.SessionServiceStub(channel).ListSessions(
                    pb.ListSessionsRequest(), metadata=stack.token(new_id()), timeout=3
                )
                misses.check(False, f"session replica {port} served a client without a certificate")
            except grpc.aio.AioRpcError as error:
                misses.check(error.code() == grpc.StatusCode.UNAVAILABLE, f"no certificate: {error.code()}")
    summary["refusals (wrong key, no certificate)"] = 1 + len(session_ports)

    async with stack.channel(session_ports) as channel:
        sessions = pb_grpc.SessionServiceStub(channel)

        progress.say(5, "fault: one session replica killed under load")
        victim = stack.containers("session")[0]

        async def kill() -> float:
            await asyncio.to_thread(
                subprocess.run, ["docker", "kill", victim], env=stack.env, capture_output=True
            )
            return time.monotonic()

        outcomes, recovered = await under_load([session_load(sessions, stack)], kill, settle=3)
        misses.check(set(outcomes) == {("OK", "")}, f"kill one replica: {dict(outcomes)}")
        misses.check(recovered is not None, "kill one replica: no call succeeded after the kill")
        summary["kill one session replica"] = dict(outcomes)
        await wait_healthy(stack, "session")

        progress.say(6, "fault: postgres restarted under load")
        await restart_under_load(stack, sessions, "postgres", misses, summary)
        await pairs_while_sessions_stopped(stack, misses, summary, progress)
    async with stack.channel(stack.ports("session", 50051)) as channel:
        progress.say(8, "fault: pgbouncer restarted under load")
        await restart_under_load(stack, pb_grpc.SessionServiceStub(channel), "pgbouncer", misses, summary)
    return summary


async def restart_under_load(
    stack: Stack, sessions: pb_grpc.SessionServiceStub, service: str, misses: Misses, summary: dict[str, Any]
) -> None:
    """Restarts `service` while sessions and reputations are read and written: every failure must
    be UNAVAILABLE, calls succeed again soon after it is back, and no service container restarts."""
    before = {c: stack.started_at(c) for c in stack.containers("session") + stack.containers("reputation")}

    async def restart() -> float:
        await asyncio.to_thread(stack.compose, "restart", service, capture=True)
        return await wait_healthy(stack, service)

    async with stack.channel(stack.ports("reputation", 50052)) as reputation_channel:
        reputation = rpb_grpc.ReputationServiceStub(reputation_channel)
        md = stack.token(new_id())

        async def read_reputation() -> Any:
            return await reputation.GetReputation(
                rpb.GetReputationRequest(), metadata=md, timeout=CALL_DEADLINE
            )

        outcomes, recovered = await under_load([session_load(sessions, stack), read_reputation], restart, 4)
    check_fault_outcomes(misses, f"{service} restart", outcomes, recovered)
    after = {c: stack.started_at(c) for c in before}
    misses.check(after == before, f"{service} restart: a service container was restarted")
    summary[f"{service} restart"] = {
        **{f"{code} {reason}".strip(): n for (code, reason), n in outcomes.items()},
        "first success after it was back (s)": round(recovered, 2) if recovered is not None else None,
    }


@contextlib.asynccontextmanager
async def stubs(
    stack: Stack,
) -> AsyncIterator[tuple[pb_grpc.SessionServiceStub, rpb_grpc.ReputationServiceStub]]:
    """Session and reputation stubs over every replica of each, as they are published now."""
    async with (
        stack.channel(stack.ports("session", 50051)) as session_channel,
        stack.channel(stack.ports("reputation", 50052)) as reputation_channel,
    ):
        yield pb_grpc.SessionServiceStub(session_channel), rpb_grpc.ReputationServiceStub(reputation_channel)


async def pairs_while_sessions_stopped(
    stack: Stack, misses: Misses, summary: dict[str, Any], progress: Progress
) -> None:
    progress.say(7, "fault: every session replica stopped while pairs confirm")
    pairs_count = 10
    async with stubs(stack) as (sessions, reputation):
        pairs = [await paired(sessions, stack) for _ in range(pairs_count)]
        for sid, owner, _ in pairs:
            await reputation.ConfirmCompletion(
                rpb.ConfirmCompletionRequest(session_id=sid), metadata=stack.token(owner)
            )
        await asyncio.to_thread(stack.compose, "stop", "session", capture=True)
        pending = 0
        for sid, _, partner in pairs:
            reply = await reputation.ConfirmCompletion(
                rpb.ConfirmCompletionRequest(session_id=sid), metadata=stack.token(partner), timeout=10
            )
            misses.check(reply.both_confirmed and reply.reputation_awarded, f"stopped: {sid} not awarded")
            pending += reply.completion_pending
        misses.check(pending == pairs_count, f"stopped: {pending} of {pairs_count} completions pending")
        await wait_healthy(stack, "session")
    # The session replicas came back on new host ports.
    async with stubs(stack) as (sessions, reputation):
        deadline = time.monotonic() + 60
        completed: set[str] = set()
        while time.monotonic() < deadline and len(completed) < pairs_count:
            for sid, owner, _ in pairs:
                got = await sessions.GetSession(
                    pb.GetSessionRequest(session_id=sid), metadata=stack.token(owner)
                )
                if got.status == pb.SESSION_STATUS_COMPLETED:
                    completed.add(sid)
            await asyncio.sleep(0.5)
        misses.check(len(completed) == pairs_count, f"stopped: {len(completed)} of {pairs_count} completed")
        scores = Counter()
        for _, owner, partner in pairs:
            for user in (owner, partner):
                reply = await reputation.GetReputation(
                    rpb.GetReputationRequest(user_id=user), metadata=stack.token(user)
                )
                scores[reply.score] += 1
        misses.check(scores == Counter({1: 2 * pairs_count}), f"stopped: scores {dict(scores)}")
    summary["pairs confirmed with every session replica stopped"] = {
        "pending at the second confirmation": pending,
        "completed once back": len(completed),
        "users scored exactly 1": scores[1],
    }


def main() -> int:
    progress = Progress()
    misses = Misses()
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="compose-test-") as folder:
        stack = Stack(Path(folder))
        try:
            progress.say(1, "checking the compose file (docker compose config) and building the images")
            stack.compose("config", "--quiet", capture=True)
            stack.compose("build", capture=True)
            progress.say(2, "bringing the stack up (--wait)")
            stack.compose("up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT_SECONDS), capture=True)
            stack.load_tls()
            summary = asyncio.run(scenario(stack, misses, progress))
        except Exception as error:
            misses.check(False, f"stopped early: {error!r}")
            with contextlib.suppress(Exception):
                print(stack.compose("logs", "--tail", "40", capture=True)[-6000:])
        finally:
            progress.say(9, "tearing down")
            subprocess.run(
                ["docker", "compose", "-p", PROJECT, "down", "-v", "--remove-orphans"],
                cwd=ROOT,
                env=stack.env,
                capture_output=True,
            )
    print(f"\ncompose-test summary ({time.monotonic() - progress.began:.0f} s):")
    for name, figures in summary.items():
        print(f"  {name}: {figures}")
    if misses.found:
        print(f"{len(misses.found)} missed:")
        for miss in misses.found:
            print(f"  - {miss}")
        return 1
    print("all checks met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
