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


def test_committed_gen_matches_a_fresh_make_gen(tmp_path):
    subprocess.run(["make", "-s", "gen", f"GEN_OUT={tmp_path}"], cwd=ROOT, check=True, capture_output=True)
    fresh, committed = _tree(tmp_path / "interview"), _tree(ROOT / "gen" / "interview")
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"gen/ is stale, run `make gen`: {stale}"
