"""The system under test as real processes: PostgreSQL (embedded in a temp folder unless the
environment names databases), both services as `python -m <package>` after `migrate`, and the
floor servers; with /proc readings of their CPU time and peak memory.

Its key material is made fresh in the temp folder, as `make run` makes the development set: an
HS256 user-token key, the reputation service's Ed25519 service-token key and the JWK Set that
trusts it, the page-token secret, and a private CA with a server and a client certificate for the
TLS runs (mutual TLS: the services and the fused and echo floors require the client certificate).
Nothing of the trust or the tracing configuration is inherited from the environment the bench runs
in: the services trace only when the bench restarts them exporting to its own OTLP receiver."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.otlp_receiver import COUNT_METHOD
from bench.procs import (
    children,
    cpu_seconds,
    die_with_parent,
    free_port,
    peak_rss_mib,
    reset_peak_rss,
    terminate,
)
from common import keygen
from common.config import JwtSettings, TlsSettings, positive_int
from common.db import start_embedded, stop_embedded
from common.devcerts import write_dev_certificates
from common.tls import sync_channel

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"session": "session_service", "reputation": "reputation_service"}
READY_SECONDS = 60
SERVICE_KEY_ID = "bench-reputation"
# Trust and tracing settings the bench makes itself: none may leak in from the environment it runs in.
TRACED_FLOOR = "fused_floor"  # the traced fused floor's service.name
_OWN_PREFIXES = ("JWT_", "TLS_", "SERVICE_SIGNING_KEY", "SERVICE_TOKEN_", "PAGE_TOKEN_", "OTEL_")


ALWAYS_ON = "always_on"


def _traced(otlp_endpoint: str, service_name: str, sampled: str = ALWAYS_ON) -> dict[str, str]:
    """The OTEL_* variables that trace a process's calls and export their spans over OTLP/gRPC:
    every call (`sampled` ALWAYS_ON), or that share of the traces it starts ("0.01": head sampling
    by trace id, parent-based, as production runs it)."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_SERVICE_NAME": service_name}
    if sampled == ALWAYS_ON:
        return env | {"OTEL_TRACES_SAMPLER": ALWAYS_ON}
    return env | {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": sampled}


async def _checkpoint_only_when_asked(dsn: str) -> None:
    """No checkpoint of its own inside the run (the seeding checkpoints after itself): the writes
    after a checkpoint log whole pages, 4 to 5 times the WAL per call for the run that meets it,
    which would land on whichever case it happened to fall in."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        await conn.execute("ALTER SYSTEM SET max_wal_size = '8GB'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def _asyncpg_dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


class Stack:
    """PostgreSQL, both services (restartable with N workers), the floor servers and the OTLP receiver."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.jwt = JwtSettings("HS256", secrets.token_urlsafe(48), "interview-dev", "interview")
        self.page_secret = secrets.token_urlsafe(48).encode()
        self._keys = self._service_keys(workdir / "keys")
        certificates = write_dev_certificates(workdir / "tls", ["localhost", "127.0.0.1"])
        # How the servers listen with TLS (mutual: TLS_CLIENT_CA_FILE set), as `make run --tls` does.
        self.server_tls = {
            "TLS_CERT_FILE": str(certificates.server_cert),
            "TLS_KEY_FILE": str(certificates.server_key),
            "TLS_CLIENT_CA_FILE": str(certificates.ca),
            "TLS_CA_FILE": str(certificates.ca),  # the reputation service dials the session one with it
        }
        # How the load processes and the health checks dial a TLS server.
        self.client_tls = TlsSettings(
            cert_file=str(certificates.client_cert),
            key_file=str(certificates.client_key),
            ca_file=str(certificates.ca),
        )
        self.tls = False  # whether the services now running serve TLS
        self.ports = {name: free_port() for name in PACKAGES}
        self.pool_size = positive_int(os.environ, "SESSION_DB_POOL_SIZE", 10)
        self.embedded = False
        self.dsns = ("", "")
        self.services: dict[str, subprocess.Popen[bytes]] = {}
        self.floors: dict[str, tuple[subprocess.Popen[bytes], int, int]] = {}  # process, port, TLS port
        self.receiver: tuple[subprocess.Popen[bytes], int] | None = None  # the OTLP receiver, its port
        self.peaks: dict[str, float] = {}  # "<process> (<workers>)" -> VmHWM MiB
        self.workers = 1
        self.limit = 0  # MAX_CONCURRENT_RPCS the bench set for the session service now running (0: none)
        self.otlp_endpoint = ""  # where the services now running export their spans ("": not traced)
        self.sampled = ALWAYS_ON  # which of their calls they trace, when they do

    @staticmethod
    def _service_keys(directory: Path) -> dict[str, str]:
        """The reputation service's service-token key (0600) and the JWK Set the receivers trust."""
        jwks = keygen.service_keys(directory, [SERVICE_KEY_ID])
        return {
            "SERVICE_TOKEN_JWKS_FILE": str(jwks),
            "SERVICE_SIGNING_KEY_FILE": str(keygen.service_key_file(directory, SERVICE_KEY_ID)),
            "SERVICE_SIGNING_KEY_ID": SERVICE_KEY_ID,
        }

    def start_database(self) -> None:
        session = os.environ.get("SESSION_DATABASE_URL", "")
        reputation = os.environ.get("REPUTATION_DATABASE_URL", "")
        if not (session and reputation):
            url = start_embedded(self.workdir)
            self.embedded = True
            session, reputation = session or url, reputation or url
            asyncio.run(_checkpoint_only_when_asked(_asyncpg_dsn(url)))
        self.dsns = (_asyncpg_dsn(session), _asyncpg_dsn(reputation))

    def env(self, workers: int = 1, tls: bool = False) -> dict[str, str]:
        """The services' environment (the floors' too): with `tls`, they serve mutual TLS."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(_OWN_PREFIXES)}
        session_listen = f"127.0.0.1:{self.ports['session']}"
        env.update(
            JWT_ALGORITHM=self.jwt.algorithm,
            JWT_KEY=self.jwt.key,
            JWT_ISSUER=self.jwt.issuer,
            JWT_AUDIENCE=self.jwt.audience,
            PAGE_TOKEN_SECRET=self.page_secret.decode(),
            **self._keys,
            SESSION_LISTEN=session_listen,
            REPUTATION_LISTEN=f"127.0.0.1:{self.ports['reputation']}",
            SESSION_SERVICE_TARGET=session_listen,
            SESSION_DATABASE_URL=self.dsns[0],
            REPUTATION_DATABASE_URL=self.dsns[1],
            SESSION_METRICS_LISTEN="127.0.0.1:0",
            REPUTATION_METRICS_LISTEN="127.0.0.1:0",
            SESSION_WORKERS=str(workers),
            REPUTATION_WORKERS=str(workers),
            DATA_DIR=str(self.workdir),
            BENCH_SESSION_DSN=self.dsns[0],
            BENCH_REPUTATION_DSN=self.dsns[1],
        )
        if tls:
            env.update(self.server_tls)
        return env

    def migrate(self) -> None:
        for package in PACKAGES.values():
            done = subprocess.run(
                [sys.executable, "-m", package, "migrate"], env=self.env(), cwd=ROOT, capture_output=True
            )
            if done.returncode != 0:
                raise RuntimeError(f"{package} migrate failed: {done.stderr.decode()[-2000:]}")

    def _spawn(self, args: list[str], log: Path, env: dict[str, str], stdout: int) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only the bench, which then stops these in order.
        with log.open("ab") as sink:  # appending, so trim_logs() can empty it under the writer
            return subprocess.Popen(
                [sys.executable, *args],
                preexec_fn=die_with_parent,
                env=env,
                cwd=ROOT,
                stdout=stdout,
                stderr=sink,
                start_new_session=True,
            )

    def trim_logs(self, limit: int = 64 * 1024 * 1024) -> None:
        """Empties the services' logs once large: one line per call adds up over a long run."""
        for log in self.workdir.glob("*.log"):
            if log.stat().st_size > limit:
                os.truncate(log, 0)

    def start_services(
        self,
        workers: int = 1,
        tls: bool = False,
        limit: int = 0,
        otlp_endpoint: str = "",
        sampled: str = ALWAYS_ON,
    ) -> None:
        """Both services; with `limit`, the session service runs with MAX_CONCURRENT_RPCS=`limit`
        (otherwise whatever the environment says, by default the services' own 512). With
        `otlp_endpoint`, both trace the calls `sampled` says (every one by default, or a ratio of
        the traces) and export the spans there over OTLP/gRPC, each under its package name as
        OTEL_SERVICE_NAME."""
        self.workers = workers
        self.tls = tls
        self.limit = limit
        self.otlp_endpoint = otlp_endpoint
        self.sampled = sampled
        for name, package in PACKAGES.items():
            log = self.workdir / f"{package}.log"
            log.write_bytes(b"")
            env = self.env(workers, tls)
            if limit and name == "session":
                env["MAX_CONCURRENT_RPCS"] = str(limit)
            if otlp_endpoint:
                env.update(_traced(otlp_endpoint, package, sampled))
            process = self._spawn(["-m", package], log, env, subprocess.DEVNULL)
            self.services[name] = process
            self._wait_serving(name, process, log, workers)

    def _wait_serving(self, name: str, process: subprocess.Popen[bytes], log: Path, workers: int) -> None:
        deadline = time.monotonic() + READY_SECONDS
        client = self.client_tls if self.tls else None
        with sync_channel(f"127.0.0.1:{self.ports[name]}", client, []) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline and process.poll() is None:
                listening = log.read_text(errors="replace").count('"event": "listening"')
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    status = None
                if listening >= workers and status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.1)
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{PACKAGES[name]} did not become healthy:\n{tail}")

    def service_pids(self, only: str | None = None) -> list[int]:
        pids = []
        for name, process in self.services.items():
            if only in (None, name):
                pids += [process.pid, *children(process.pid)]
        return pids

    def postgres_cpu(self) -> float:
        """The postmaster and every backend, live or exited since (0 for a database not ours)."""
        pidfile = self.workdir / "pg" / "postmaster.pid"
        if not self.embedded or not pidfile.exists():
            return 0.0
        postmaster = int(pidfile.read_text().split()[0])
        return cpu_seconds(postmaster, reaped_children=True) + sum(
            cpu_seconds(p) for p in children(postmaster)
        )

    def _record_peaks(self, label: str, pids: list[int]) -> None:
        for index, pid in enumerate(pids):
            key = f"{label} #{index + 1}" if len(pids) > 1 else label
            try:
                self.peaks[key] = max(self.peaks.get(key, 0.0), peak_rss_mib(pid))
            except FileNotFoundError:
                continue

    def session_rss_mib(self, field: str = "VmHWM") -> float:
        """The session service's processes, summed: peak (VmHWM) or current (VmRSS) resident MiB."""
        total = 0.0
        for pid in self.service_pids("session"):
            with contextlib.suppress(FileNotFoundError):
                total += peak_rss_mib(pid, field)
        return total

    def session_log_size(self) -> int:
        """Where the session service's log ends now (trimmed first if large): session_calls reads
        the calls logged after it."""
        self.trim_logs()
        return (self.workdir / f"{PACKAGES['session']}.log").stat().st_size

    def session_calls(self, since: int, method: str) -> dict[str, list[float]]:
        """The session service's call log from byte `since` on: the duration_ms it logged for each
        call of `method` (time inside its interceptor), by status code."""
        durations: dict[str, list[float]] = {}
        with (self.workdir / f"{PACKAGES['session']}.log").open("rb") as log:
            log.seek(since)
            for line in log:
                if b'"logger": "rpc"' not in line or method.encode() not in line:
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut by trim_logs, or still being written
                    continue
                if entry.get("method") == method:
                    durations.setdefault(entry.get("code", ""), []).append(float(entry["duration_ms"]))
        return durations

    def reset_session_peak_rss(self) -> bool:
        """Starts the session service's processes' VmHWM afresh (see procs.reset_peak_rss), the
        peak so far kept for the peak RSS table first."""
        pids = self.service_pids("session")
        self._record_peaks(self._label("session"), pids)
        return all([reset_peak_rss(pid) for pid in pids])

    def _label(self, name: str) -> str:
        workers = f"{self.workers} worker{'s' * (self.workers > 1)}"
        extra = ", TLS" * self.tls
        if self.limit and name == "session":
            extra += f", MAX_CONCURRENT_RPCS={self.limit}"
        if self.otlp_endpoint:
            extra += ", tracing" + f" {self.sampled} sampled" * (self.sampled != ALWAYS_ON)
        return f"{PACKAGES[name]} ({workers}{extra})"

    def stop_services(self) -> None:
        for name, process in self.services.items():
            self._record_peaks(self._label(name), self.service_pids(name))
            terminate(process)
        self.services = {}

    def _spawn_ready(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """A bench server that prints "ready" once it listens."""
        log = self.workdir / f"{name}.log"
        process = self._spawn(args, log, env, subprocess.PIPE)
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the {name} server did not start: {log.read_text()[-2000:]}")
        return process

    def start_floor(self, kind: str, otlp_endpoint: str = "") -> str:
        """A floor server listening twice: plaintext, and mutual TLS (same process, same pools).
        With `otlp_endpoint`, a second one, traced as the services are (under TRACED_FLOOR).
        Returns its name in `floors`, which is also the Runner kind that calls it."""
        port, tls_port = free_port(), free_port()
        args = ["-m", "bench.floors", kind, str(port), str(tls_port)]
        name, env = kind, self.env(tls=True)
        if otlp_endpoint:
            name = f"{kind}_traced"
            env.update(_traced(otlp_endpoint, TRACED_FLOOR))
        self.floors[name] = (self._spawn_ready(name, args, env), port, tls_port)
        return name

    def stop_floor(self, name: str) -> None:
        """Stops one floor (a traced one exports the spans it still holds as it stops)."""
        process, *_ = self.floors.pop(name)
        self._record_peaks(f"{name} floor", [process.pid])
        terminate(process)

    def start_receiver(self) -> str:
        """The local OTLP receiver (bench.otlp_receiver); returns its endpoint for start_services."""
        port = free_port()
        args = ["-m", "bench.otlp_receiver", str(port)]
        self.receiver = (self._spawn_ready("otlp_receiver", args, self.env()), port)
        return f"http://127.0.0.1:{port}"

    def spans_received(self) -> dict[str, int]:
        """The spans the receiver has been sent since it started, by service name."""
        assert self.receiver is not None
        with grpc.insecure_channel(f"127.0.0.1:{self.receiver[1]}") as channel:
            # No serializers: bytes in, bytes out.
            count: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(COUNT_METHOD)
            counts: dict[str, int] = json.loads(count(b"", timeout=10))
        return counts

    def receiver_cpu_seconds(self) -> float:
        """The receiver's CPU time so far: decoding the exports, on the cores the services use too."""
        assert self.receiver is not None
        return cpu_seconds(self.receiver[0].pid)

    def close(self) -> None:
        self.stop_services()
        for name in list(self.floors):
            self.stop_floor(name)
        if self.receiver is not None:
            terminate(self.receiver[0])
            self.receiver = None
        if self.embedded:
            stop_embedded(self.workdir)
