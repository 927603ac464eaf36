"""gen/ is committed; it must be exactly what `make gen` produces from protos/."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def differences(fresh: dict[str, bytes], committed: dict[str, bytes]) -> list[str]:
    """Files missing on either side or whose bytes differ."""
    return sorted(name for name in fresh.keys() | committed.keys() if fresh.get(name) != committed.get(name))


def _fresh_gen(tmp_path: Path) -> dict[str, bytes]:
    subprocess.run(["make", "-s", "gen", f"GEN_OUT={tmp_path}"], cwd=ROOT, check=True, capture_output=True)
    return _tree(tmp_path / "interview")


def test_committed_gen_matches_a_fresh_make_gen(tmp_path):
    stale = differences(_fresh_gen(tmp_path), _tree(ROOT / "gen" / "interview"))
    assert not stale, f"gen/ is stale, run `make gen`: {stale}"


def test_a_stale_or_missing_generated_file_is_reported(tmp_path):
    fresh = _fresh_gen(tmp_path)
    edited = dict(fresh)
    stub = "sessions/v1/sessions_pb2.pyi"
    edited[stub] += b"# edited by hand"
    del edited["reputation/v1/reputation_pb2.py"]
    assert differences(fresh, edited) == ["reputation/v1/reputation_pb2.py", stub]
