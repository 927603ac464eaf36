"""`make proto-bundle`: the archive other teams take is complete, builds on its own, and its
service config is the Python clients' policy."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import yaml

from common.client import DEFAULT_DEADLINE, RETRY, service_config
from tests.helpers import BUF, ROOT


def _bundle(tmp_path: Path) -> Path:
    archive = tmp_path / "contract.tar.gz"
    subprocess.run(["make", "-s", "proto-bundle", f"BUNDLE={archive}"], cwd=ROOT, check=True, timeout=120)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked


def test_the_bundle_holds_the_contract_and_builds_on_its_own(tmp_path):
    unpacked = _bundle(tmp_path)
    files = {str(path.relative_to(unpacked)) for path in unpacked.rglob("*") if path.is_file()}
    assert files == {
        "buf.gen.yaml",
        "service-config.json",
        "protos/README.md",
        "protos/buf.yaml",
        "protos/interview/errors/v1/errors.proto",
        "protos/interview/sessions/v1/sessions.proto",
        "protos/interview/reputation/v1/reputation.proto",
        "protos/google/rpc/README.md",
        "protos/google/rpc/status.proto",
        "protos/google/rpc/error_details.proto",
    }
    # No import outside the bundle but the well-known types buf ships.
    built = subprocess.run([BUF, "build", "protos"], cwd=unpacked, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    lint = subprocess.run([BUF, "lint", "protos"], cwd=unpacked, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_the_bundles_service_config_is_the_python_clients_policy_with_the_default_deadline(tmp_path):
    config = json.loads((_bundle(tmp_path) / "service-config.json").read_text())
    (method,) = config["methodConfig"]
    assert method.pop("timeout") == f"{DEFAULT_DEADLINE:g}s"
    assert config == json.loads(service_config(RETRY))


def test_the_generation_template_needs_no_registry():
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    plugins = template["plugins"]
    assert all("remote" not in plugin for plugin in plugins)
    assert {plugin.get("local") or plugin.get("protoc_builtin") for plugin in plugins} == {
        "protoc-gen-go",
        "protoc-gen-go-grpc",
        "java",
        "protoc-gen-grpc-java",
        "protoc-gen-es",
    }
