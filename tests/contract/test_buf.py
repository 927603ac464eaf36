"""The contract is checked by buf: STANDARD lint, and no breaking change against the baseline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers import BUF

ROOT = Path(__file__).resolve().parents[2]
SESSIONS_PROTO = Path("interview/sessions/v1/sessions.proto")


def _buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _copy_of_protos(tmp_path: Path) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    return copy


def _edit(protos: Path, old: str, new: str) -> None:
    path = protos / SESSIONS_PROTO
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_protos_pass_buf_standard_lint():
    result = _buf("lint", "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_catches_an_unprefixed_enum_value(tmp_path):
    protos = _copy_of_protos(tmp_path)
    _edit(protos, "SESSION_STATUS_PAUSED = 2;", "PAUSED = 2;")
    result = _buf("lint", str(protos))
    assert result.returncode != 0
    assert "PAUSED" in result.stdout


def test_the_protos_are_compatible_with_the_committed_baseline():
    result = _buf("breaking", "protos", "--against", "protos/baseline.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_renaming_a_field_is_reported_as_breaking(tmp_path):
    protos = _copy_of_protos(tmp_path)
    _edit(protos, "string partner_user_id = 3;", "string buddy_user_id = 3;")
    result = _buf("breaking", str(protos), "--against", str(ROOT / "protos/baseline.binpb"))
    assert result.returncode != 0
    assert "partner_user_id" in result.stdout


def test_removing_an_rpc_is_reported_as_breaking(tmp_path):
    protos = _copy_of_protos(tmp_path)
    rpc = (
        "  rpc ListRetakes(ListRetakesRequest) returns (ListRetakesResponse) {\n"
        '    option (interview.errors.v1.reasons) = "INVALID_ARGUMENT";\n'
        '    option (interview.errors.v1.reasons) = "SESSION_NOT_FOUND";\n'
        "  }\n"
    )
    _edit(protos, rpc, "")
    result = _buf("breaking", str(protos), "--against", str(ROOT / "protos/baseline.binpb"))
    assert result.returncode != 0
    assert "ListRetakes" in result.stdout
