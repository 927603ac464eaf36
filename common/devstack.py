"""`make run` and `make token`: the local stack on an embedded PostgreSQL, and dev tokens for it.

python -m common.devstack run
python -m common.devstack token --user <uuid>
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import mint
from common.config import ConfigError, jwt_settings, listen_address
from common.db import start_embedded, stop_embedded

READY_TIMEOUT_SECONDS = 60
TOKEN_TTL_SECONDS = 3600
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Service:
    package: str
    listen_variable: str
    default_listen: str
    database_variable: str


SERVICES = [
    Service("session_service", "SESSION_LISTEN", "127.0.0.1:50051", "SESSION_DATABASE_URL"),
    Service("reputation_service", "REPUTATION_LISTEN", "127.0.0.1:50052", "REPUTATION_DATABASE_URL"),
]


def _data_dir(env: dict[str, str]) -> Path:
    return Path(env.get("DATA_DIR", ".data")).resolve()


def _dev_key(data_dir: Path) -> str:
    """The development HS256 secret, made once per data folder."""
    path = data_dir / "jwt.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _with_defaults(env: dict[str, str]) -> dict[str, str]:
    """The environment `make run` gives both services: set variables win over every default."""
    env = dict(env)
    env.setdefault("JWT_ALGORITHM", "HS256")
    if not env.get("JWT_KEY"):
        if env["JWT_ALGORITHM"] != "HS256":
            raise ConfigError("JWT_KEY", f"is required when JWT_ALGORITHM is {env['JWT_ALGORITHM']}")
        env["JWT_KEY"] = _dev_key(_data_dir(env))
    for service in SERVICES:
        env[service.listen_variable] = listen_address(env, service.listen_variable, service.default_listen)
    env.setdefault("SESSION_SERVICE_TARGET", env["SESSION_LISTEN"])
    return env


def _die_with_parent() -> None:
    # If `make run` is killed with SIGKILL, its services must not outlive it and hold the ports.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_serving(target: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and process.poll() is None:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def run() -> int:
    try:
        env = _with_defaults(dict(os.environ))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    data_dir = _data_dir(env)
    embedded = any(not env.get(s.database_variable) for s in SERVICES)
    if embedded:
        url = start_embedded(data_dir)
        for service in SERVICES:
            env.setdefault(service.database_variable, url)
        print(f"postgres  embedded in {data_dir / 'pg'}", flush=True)

    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    processes: list[subprocess.Popen[bytes]] = []
    code = 0
    try:
        for service in SERVICES:
            migration = subprocess.run([sys.executable, "-m", service.package, "migrate"], env=env)
            if migration.returncode != 0:
                print(f"{service.package}: migrations failed", file=sys.stderr)
                return 1
        for service in SERVICES:
            process = subprocess.Popen(
                [sys.executable, "-m", service.package], env=env, preexec_fn=_die_with_parent
            )
            processes.append(process)
            target = env[service.listen_variable]
            if not _wait_serving(target, process):
                print(f"{service.package} did not become healthy on {target}", file=sys.stderr)
                return 1
            print(f"{service.package}  serving on {target}", flush=True)
        print("ready: Ctrl-C stops everything", flush=True)
        while not stopping:
            if any(p.poll() is not None for p in processes):
                print("a service exited; stopping the stack", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    finally:
        _stop(processes)
        if embedded:
            stop_embedded(data_dir)
    return code


def token(user: str) -> int:
    try:
        user_id = str(uuid.UUID(user))
    except ValueError:
        print(f"usage: make token USER=<uuid> (got {user!r}, not a UUID)", file=sys.stderr)
        return 2
    env = dict(os.environ)
    try:
        env = _with_defaults(env)
        settings = jwt_settings(env)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    signing_key = env.get("SERVICE_SIGNING_KEY") or settings.key
    print(mint(settings, signing_key, user_id, TOKEN_TTL_SECONDS))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="serve both services on the local stack")
    minting = commands.add_parser("token", help="print a user token the local stack accepts")
    minting.add_argument("--user", required=True, help="the user's UUID")
    args = parser.parse_args(argv)
    return run() if args.command == "run" else token(args.user)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
