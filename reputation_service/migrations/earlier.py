"""What an earlier revision wrote: a later revision's downgrade restores a replaced function from
the earlier revision's own text, not from a copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

VERSIONS = Path(__file__).with_name("versions")


def statement(revision_file: str, name: str) -> str:
    """The SQL constant `name` of the revision in `versions/<revision_file>`."""
    spec = importlib.util.spec_from_file_location(f"revision_{revision_file}", VERSIONS / revision_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(getattr(module, name))
