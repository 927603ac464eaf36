"""mypy --strict accepts the product code, the clients and the example, and rejects callers that misuse
the clients.

One mypy run per test session checks all of it: the product packages, the example and every caller
below, each caller its own file, so each test reads the errors of its own files."""

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["common", "session_service", "reputation_service", "bench"]
CLIENTS = ["common/client.py", "session_service/client.py", "reputation_service/client.py"]
EXAMPLE = "examples/internal_caller.py"
CALLER = """\
from interview.sessions.v1 import sessions_pb2

from reputation_service.client import ReputationClient
from session_service.client import SessionClient


async def caller(sessions: SessionClient, reputation: ReputationClient) -> None:
    {line}
"""
CORRECT = 'session: sessions_pb2.Session = await sessions.get_session("x"); print(session.session_id)'
# (name, the caller's line, what mypy says about it)
MISUSES = [
    (
        "misspelled field",
        'print((await sessions.get_session("x")).sesion_id)',
        '"Session" has no attribute "sesion_id"',
    ),
    ("wrong argument type", "await sessions.get_session(42)", 'incompatible type "int"; expected "str"'),
    ("wrong enum type", 'await sessions.list_sessions(status="ACTIVE")', 'incompatible type "str"'),
    (
        "missing await",
        'session: sessions_pb2.Session = sessions.get_session("x")',
        'maybe you forgot to use "await"',
    ),
    (
        "wrong field type",
        "score: str = (await reputation.get_reputation()).score",
        "incompatible types in assignment",
    ),
]
# A line about one file: "path:line: error: message  [code]" (or note:, with its column when asked).
_FILE_LINE = re.compile(r"^(?P<path>[^:]+):\d+:(?:\d+:)? (?:error|note|warning): ")
# "Success: no issues found in N source files", or "Found E errors in F files (checked N source files)".
_SUMMARY = re.compile(
    r"^(?:Success: no issues found|Found \d+ errors? in \d+ files?) .*?(?P<checked>\d+) source files?\)?$"
)


@dataclass
class MypyRun:
    output: str
    lines: dict[Path, list[str]]  # by file, resolved
    other: list[str]  # lines about no one file (other than the summary): configuration problems, crashes
    checked: int  # source files, as the summary counts them
    callers: dict[str, Path]  # the caller files by case name ("correct" and each misuse)

    def errors(self, path: Path) -> str:
        return "\n".join(self.lines.get(path.resolve(), []))


def _caller_file(name: str) -> str:
    return "caller_" + name.replace(" ", "_") + ".py"


@pytest.fixture(scope="session")
def mypy_run(tmp_path_factory: pytest.TempPathFactory) -> MypyRun:
    """The one `mypy --strict` over the packages, the example and the callers (one file each)."""
    directory = tmp_path_factory.mktemp("callers")
    callers = {}
    for name, line in [("correct", CORRECT), *((name, line) for name, line, _ in MISUSES)]:
        callers[name] = directory / _caller_file(name)
        callers[name].write_text(CALLER.format(line=line))
    # From the project root, so pyproject's [tool.mypy] (mypy_path = "gen") and the default cache apply.
    command = [sys.executable, "-m", "mypy", "--strict", *PACKAGES, EXAMPLE, *map(str, callers.values())]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    # 0: no errors, 1: errors found (the misuses'); anything else is mypy failing to check at all.
    assert result.returncode in (0, 1), output
    # A caller is known by its file name, the module mypy caches it as: a caller unchanged since an
    # earlier session's run has its errors replayed from the cache under that run's path.
    by_name = {path.name: path for path in callers.values()}
    lines: dict[Path, list[str]] = {}
    other, checked = [], None
    for text in output.splitlines():
        if about_a_file := _FILE_LINE.match(text):
            printed = Path(about_a_file["path"])
            path = by_name.get(printed.name) or (ROOT / printed).resolve()
            lines.setdefault(path.resolve(), []).append(text)
        elif summary := _SUMMARY.match(text):
            checked = int(summary["checked"])
        elif text.strip():
            other.append(text)
    assert checked is not None, output
    return MypyRun(output, lines, other, checked, callers)


def test_the_product_packages_pass_mypy_strict(mypy_run):
    product = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    failing = [path for path in mypy_run.lines if any(path.is_relative_to(ROOT / p) for p in PACKAGES)]
    assert not failing, mypy_run.output
    assert not mypy_run.other, mypy_run.output
    # Every product file was checked (none dropped by an exclude), with the example and the callers.
    assert mypy_run.checked == len(product) + 1 + len(mypy_run.callers), mypy_run.output


def test_the_clients_and_the_example_pass_mypy_strict(mypy_run):
    for path in [*CLIENTS, EXAMPLE]:
        assert mypy_run.errors(ROOT / path) == "", mypy_run.output


def test_a_correct_caller_passes(mypy_run):
    assert mypy_run.errors(mypy_run.callers["correct"]) == "", mypy_run.output


@pytest.mark.parametrize(
    ("name", "error"), [(name, error) for name, _, error in MISUSES], ids=[m[0] for m in MISUSES]
)
def test_a_caller_that_misuses_a_client_fails_type_checking(mypy_run, name, error):
    errors = mypy_run.errors(mypy_run.callers[name])
    assert ": error: " in errors, mypy_run.output
    assert error.lower() in errors.lower(), errors  # mypy capitalises its messages
