"""mypy --strict accepts the clients and the example, and rejects callers that misuse them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED = [
    "common/client.py",
    "session_service/client.py",
    "reputation_service/client.py",
    "examples/internal_caller.py",
]
CALLER = """\
from interview.sessions.v1 import sessions_pb2

from reputation_service.client import ReputationClient
from session_service.client import SessionClient


async def caller(sessions: SessionClient, reputation: ReputationClient) -> None:
    {line}
"""


def mypy(*paths: str) -> subprocess.CompletedProcess[str]:
    # From the project root, so pyproject's [tool.mypy] (mypy_path = "gen") and the default cache apply.
    command = [sys.executable, "-m", "mypy", "--strict", *paths]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_clients_and_the_example_pass_mypy_strict():
    result = mypy(*CHECKED)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_correct_caller_passes(tmp_path):
    caller = tmp_path / "caller.py"
    line = 'session: sessions_pb2.Session = await sessions.get_session("x"); print(session.session_id)'
    caller.write_text(CALLER.format(line=line))
    result = mypy(str(caller))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('print((await sessions.get_session("x")).sesion_id)', '"Session" has no attribute "sesion_id"'),
        ("await sessions.get_session(42)", 'incompatible type "int"; expected "str"'),
        ('await sessions.list_sessions(status="ACTIVE")', 'incompatible type "str"'),
        ('session: sessions_pb2.Session = sessions.get_session("x")', 'maybe you forgot to use "await"'),
        ("score: str = (await reputation.get_reputation()).score", "incompatible types in assignment"),
    ],
    ids=["misspelled field", "wrong argument type", "wrong enum type", "missing await", "wrong field type"],
)
def test_a_caller_that_misuses_a_client_fails_type_checking(tmp_path, line, error):
    caller = tmp_path / "caller.py"
    caller.write_text(CALLER.format(line=line))
    result = mypy(str(caller))
    assert result.returncode == 1, result.stdout + result.stderr
    assert error.lower() in result.stdout.lower(), result.stdout  # mypy capitalises its messages
