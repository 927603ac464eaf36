"""`make run` and `make token`: the local stack on an embedded PostgreSQL, and dev tokens for it.

python -m common.devstack run [--tls]
python -m common.devstack token --user <uuid>
python -m common.devstack token --service <name> [--roles a,b]

`run` makes the development key material in DATA_DIR once (every file 0600 from creation): a
user-token key playing the identity provider, a key pair per token-minting party (the reputation
service, and this CLI for `token --service`) with the JWK Set of their public halves, the page-token
secret and, with --tls, a private CA with a server and a client certificate.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.auth import INTERNAL_ROLE, ServiceTokenSigner, mint
from common.auth.signing import load_private_key
from common.auth.verify import SERVICE_TOKEN_MAX_LIFETIME_SECONDS
from common.config import ConfigError, TlsSettings, jwt_settings, listen_address, tls_settings
from common.db import start_embedded, stop_embedded
from common.devcerts import private_pem, write_dev_certificates
from common.keygen import TLS_DIR, made_once, service_key_file, service_keys
from common.tls import sync_channel

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


# Who mints service tokens in development, each with a key pair of its own (by kid): the
# reputation service, and this CLI for `token --service`.
REPUTATION_KEY_ID = "reputation-dev"
CLI_KEY_ID = "cli-dev"
PAGE_TOKEN_SECRET = "page-token.secret"


def _identity_provider_key(data_dir: Path, algorithm: str) -> bytes:
    """The development identity provider's signing key: an HS256 secret, or a private key."""
    if algorithm == "HS256":
        return made_once(data_dir / "jwt.key", lambda: secrets.token_urlsafe(48).encode()).strip()
    make = {
        "EdDSA": lambda: private_pem(ed25519.Ed25519PrivateKey.generate()),
        "RS256": lambda: private_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    }[algorithm]
    return made_once(data_dir / f"identity-provider-{algorithm.lower()}.pem", make)


def _public_pem(private_pem: bytes) -> str:
    public = load_private_key(private_pem).public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _with_defaults(env: dict[str, str], tls: bool = False) -> dict[str, str]:
    """The environment `make run` gives both services: set variables win over every default."""
    env = dict(env)
    data_dir = _data_dir(env)
    data_dir.mkdir(parents=True, exist_ok=True)
    env.setdefault("JWT_ALGORITHM", "HS256")
    if not any(env.get(name) for name in ("JWT_KEY", "JWT_JWKS_FILE", "JWT_JWKS_URL")):
        if env["JWT_ALGORITHM"] not in ("HS256", "EdDSA", "RS256"):
            raise ConfigError("JWT_ALGORITHM", f"must be HS256, RS256 or EdDSA, got {env['JWT_ALGORITHM']!r}")
        key = _identity_provider_key(data_dir, env["JWT_ALGORITHM"])
        env["JWT_KEY"] = key.decode() if env["JWT_ALGORITHM"] == "HS256" else _public_pem(key)
    jwks = service_keys(data_dir, [REPUTATION_KEY_ID, CLI_KEY_ID])
    env.setdefault("SERVICE_TOKEN_JWKS_FILE", str(jwks))
    if not env.get("SERVICE_SIGNING_KEY_FILE"):
        env["SERVICE_SIGNING_KEY_FILE"] = str(service_key_file(data_dir, REPUTATION_KEY_ID))
        env["SERVICE_SIGNING_KEY_ID"] = REPUTATION_KEY_ID
    if not env.get("PAGE_TOKEN_SECRET"):
        env["PAGE_TOKEN_SECRET"] = (
            made_once(data_dir / PAGE_TOKEN_SECRET, lambda: secrets.token_urlsafe(48).encode())
            .strip()
            .decode()
        )
    if tls and not env.get("TLS_CERT_FILE"):
        certs = write_dev_certificates(data_dir / TLS_DIR, ["localhost", "127.0.0.1", "::1"])
        env["TLS_CERT_FILE"], env["TLS_KEY_FILE"] = str(certs.server_cert), str(certs.server_key)
        env["TLS_CLIENT_CA_FILE"] = env["TLS_CA_FILE"] = str(certs.ca)
    for service in SERVICES:
        env[service.listen_variable] = listen_address(env, service.listen_variable, service.default_listen)
    env.setdefault("SESSION_SERVICE_TARGET", env["SESSION_LISTEN"])
    return env


def _die_with_parent() -> None:
    # If `make run` is killed with SIGKILL, its services must not outlive it and hold the ports.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_serving(target: str, process: subprocess.Popen[bytes], tls: TlsSettings) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with sync_channel(target, tls, []) as channel:
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


def run(tls: bool) -> int:
    try:
        env = _with_defaults(dict(os.environ), tls)
        transport = tls_settings(env)
        if transport.serving and not transport.ca_file:
            # The roots the reputation service dials the session service with, and this CLI too.
            raise ConfigError("TLS_CA_FILE", "is required with TLS_CERT_FILE: the CA that signed it")
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
            if not _wait_serving(target, process, _client_side(transport)):
                print(f"{service.package} did not become healthy on {target}", file=sys.stderr)
                return 1
            scheme = "mutual TLS" if transport.client_ca_file else "TLS" if transport.serving else "plaintext"
            print(f"{service.package}  serving on {target} ({scheme})", flush=True)
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


def _client_side(transport: TlsSettings) -> TlsSettings:
    """How this CLI checks the stack's health: as the reputation service dials the session service,
    trusting TLS_CA_FILE and, under mutual TLS, presenting the
    services' own certificate (TLS_CERT_FILE, which must allow client authentication for that
    call anyway). The same with the dev certificates of `make run TLS=1` and an operator's own."""
    if not transport.serving:
        return transport
    mutual = bool(transport.client_ca_file)
    return TlsSettings(
        cert_file=transport.cert_file if mutual else "",
        key_file=transport.key_file if mutual else "",
        ca_file=transport.ca_file,
    )


def user_token(user: str) -> int:
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
    algorithm = settings.algorithm
    if algorithm == "HS256":
        signing_key: Any = settings.key
    else:
        private = _data_dir(env) / f"identity-provider-{algorithm.lower()}.pem"
        if not private.exists() or _public_pem(private.read_bytes()) != settings.key:
            print(
                f"make token signs user tokens only with the dev identity provider's key ({private})",
                file=sys.stderr,
            )
            return 2
        signing_key = load_private_key(private.read_bytes())
    print(mint(settings, signing_key, user_id, TOKEN_TTL_SECONDS))
    return 0


def service_token(name: str, roles: str) -> int:
    env = _with_defaults(dict(os.environ))
    key = load_private_key(service_key_file(_data_dir(env), CLI_KEY_ID).read_bytes())
    signer = ServiceTokenSigner(name, key, CLI_KEY_ID, ttl_seconds=SERVICE_TOKEN_MAX_LIFETIME_SECONDS)
    print(signer.token([role for role in roles.split(",") if role] or [INTERNAL_ROLE]))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.devstack")
    commands = parser.add_subparsers(dest="command", required=True)
    running = commands.add_parser("run", help="serve both services on the local stack")
    running.add_argument("--tls", action="store_true", help="mutual TLS with generated dev certificates")
    minting = commands.add_parser("token", help="print a token the local stack accepts")
    who = minting.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="a user token for this UUID")
    who.add_argument("--service", help="a service token for service:<name>")
    minting.add_argument("--roles", default="", help="comma-separated roles of a service token")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.tls)
    if args.service is not None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", args.service):
            print(
                f"usage: make token SERVICE=<name> (lowercase letters, digits, . _ -; got {args.service!r})",
                file=sys.stderr,
            )
            return 2
        return service_token(args.service, args.roles)
    return user_token(args.user)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
