"""`python -m bench --smoke`: the whole benchmark with tiny counts, as a process, report, picture and
progress checked; and the committed reference picture drawn from the committed report."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from matplotlib import image

from bench.cases import KINDS, TLS_KINDS
from bench.workloads import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FIGURES = ("ops_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_us_per_call")
PROGRESS = re.compile(r"^\[bench (\d+)/(\d+) (\d+):(\d\d)\] (.+)$", re.MULTILINE)


def assert_a_picture(path: Path) -> tuple[int, int]:
    """A PNG that decodes, big enough to read and not absurdly big; returns its height and width."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    height, width, _ = image.imread(path).shape
    assert 1000 <= width <= 4000 and 800 <= height <= 4000, (path, width, height)
    return height, width


def assert_progress(stderr: str) -> None:
    """One line per step, numbered 1 to N against the same N, with an elapsed time that never goes
    back, and a step for every scenario."""
    steps = PROGRESS.findall(stderr)
    assert steps, stderr[-3000:]
    total = int(steps[0][1])
    assert [int(step[0]) for step in steps] == list(range(1, total + 1)), [step[:2] for step in steps]
    assert {int(step[1]) for step in steps} == {total}
    elapsed = [int(minutes) * 60 + int(seconds) for _, _, minutes, seconds, _ in steps]
    assert elapsed == sorted(elapsed), elapsed
    assert all(any(step[4].startswith(f"{name} ") for step in steps) for name in SCENARIOS), steps


def test_the_smoke_benchmark_measures_every_scenario_and_floor_and_writes_the_report(tmp_path):
    # About a minute: the plaintext scenarios, scale, workers, the TLS rows, tracing, then overload.
    # Its own embedded PostgreSQL, whatever databases this environment points at.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert str(tmp_path / "latest.md") in done.stdout
    assert (tmp_path / "latest.md").read_text().startswith("# Benchmark")
    assert_a_picture(tmp_path / "latest.png")
    assert_progress(done.stderr)
    report = json.loads((tmp_path / "latest.json").read_text())

    assert set(report["scenarios"]) == set(SCENARIOS)
    for scenario, by_concurrency in report["scenarios"].items():
        assert by_concurrency, scenario
        for concurrency, kinds in by_concurrency.items():
            assert set(kinds) == set(KINDS)
            for kind, figures in kinds.items():
                where = (scenario, concurrency, kind)
                assert figures["errors"] == 0, (where, figures.get("error"))
                assert not figures["exhausted"], where
                assert all(figures[name] > 0 for name in FIGURES), (where, figures)
    # ConfirmCompletion beside GetSession runs of its own repetitions, at every concurrency.
    yardstick = report["yardsticks"]["ConfirmCompletion"]
    assert yardstick["scenario"] == "GetSession"
    assert set(yardstick["concurrency"]) == set(report["scenarios"]["ConfirmCompletion"])
    for pair in yardstick["concurrency"].values():
        assert pair["yardstick"]["errors"] == 0 and pair["ratio"] > 0, pair
    assert "## Against a yardstick measured in the same repetitions" in (tmp_path / "latest.md").read_text()
    assert set(report["scale"]["cases"]) == {"GetSession", "ListSessions", "ListMessages", "ListLeaderboard"}
    for scenario, case in report["scale"]["cases"].items():
        assert case["small"]["p50_ms"] > 0 and case["large"]["p50_ms"] > 0, scenario
        assert case["small"]["errors"] == case["large"]["errors"] == 0, scenario
        assert case["p50_ratio"] > 0, scenario
    board = report["scale"]["board"]
    assert board["deep_rank"] == int(0.9 * board["users"]) > 0, board
    for scenario, case in report["workers"].items():
        assert case["1"]["ops_per_s"] > 0 and case["2"]["ops_per_s"] > 0, scenario
        assert case["1"]["errors"] == case["2"]["errors"] == 0, scenario
    # The hot RPCs over mutual TLS: the services, the fused and echo floors on TLS, the fused floor's
    # plaintext twin beside them; a TLS run that failed its handshake would show as errors or no calls.
    tls = report["tls"]
    assert tls["mutual"] is True
    assert set(tls["scenarios"]) == {"GetSession", "CreateSession", "AppendMessage", "ConfirmCompletion"}
    for scenario, case in tls["scenarios"].items():
        assert set(case["kinds"]) == set(TLS_KINDS), scenario
        for kind, figures in case["kinds"].items():
            where = ("tls", scenario, kind)
            assert figures["errors"] == 0, (where, figures.get("error"))
            assert not figures["exhausted"], where
            assert all(figures[name] > 0 for name in FIGURES), (where, figures)
        assert case["ratio"] > 0 and case["floor_tls_over_plaintext"] > 0, scenario
    markdown = (tmp_path / "latest.md").read_text()
    assert "## TLS: the hot RPCs over mutual TLS" in markdown
    # Tracing off, head-sampled at 0.01 and 0.1, and on for every call (exported to the bench's OTLP
    # receiver), the same scenarios on restarted services; "off" set beside the main table's service
    # figures at that concurrency. Beside off and on, the fused floor untraced and traced:
    # OpenTelemetry's own cost for those calls.
    tracing = report["tracing"]
    assert set(tracing["scenarios"]) == {"GetSession", "ConfirmCompletion"}
    for scenario, case in tracing["scenarios"].items():
        assert set(case["sampled"]) == {"0.01", "0.1"}, scenario
        sampled = {f"at {ratio}": at["figures"] for ratio, at in case["sampled"].items()}
        assert all(at["ratio"] > 0 for at in case["sampled"].values()), (scenario, case["sampled"])
        modes = {mode: case[mode] for mode in ("off", "on", "floor_off", "floor_on")} | sampled
        for mode, figures in modes.items():
            where = ("tracing", scenario, mode)
            assert figures["errors"] == 0, (where, figures.get("error"))
            assert not figures["exhausted"], where
            assert all(figures[name] > 0 for name in FIGURES), (where, figures)
        main = report["scenarios"][scenario][str(tracing["concurrency"])]["service"]
        assert case["main_ops_per_s"] == main["ops_per_s"], scenario
        assert case["ratio"] > 0 and case["off_over_main"] > 0 and case["noise"] >= 0, (scenario, case)
        assert case["floor_ratio"] > 0, (scenario, case)
    # The spans really left the services: none with tracing off, both services' with it on.
    assert tracing["spans"]["off"] == {}
    assert set(tracing["spans"]["on"]) == {"session_service", "reputation_service"}, tracing["spans"]
    assert all(count > 0 for count in tracing["spans"]["on"].values()), tracing["spans"]
    assert tracing["floor_spans"] > 0
    # Head sampling exports far fewer spans than always_on.
    for ratio in ("0.01", "0.1"):
        assert sum(tracing["spans"][ratio].values()) < sum(tracing["spans"]["on"].values()), tracing["spans"]
    assert "## Tracing: off, head-sampled, and on for every call" in markdown
    # Overload: the session service at MAX_CONCURRENT_RPCS = M, measured at concurrency M and 4 x M;
    # refused calls (RESOURCE_EXHAUSTED OVERLOADED) counted and timed apart, never errors.
    overload = report["overload"]
    limit = overload["max_concurrent_rpcs"]
    assert overload["concurrency"] == {"limit": limit, "overload": 4 * limit}
    assert set(overload["scenarios"]) == {"GetSession", "CreateSession"}
    refused = 0
    for scenario, case in overload["scenarios"].items():
        for level in ("limit", "overload"):
            figures = case[level]
            where = ("overload", scenario, level)
            assert figures["errors"] == 0, (where, figures.get("error"))
            assert figures["calls"] > 0 and figures["ops_per_s"] > 0, (where, figures)
            assert figures["p50_ms"] > 0 and figures["p99_ms"] > 0, (where, figures)
            assert figures["rss_peak_mib"] > 0 and figures["server_p99_ms"] > 0, (where, figures)
            for run in figures["runs"]:
                if run["refused"]:
                    assert 0 < run["refused_p50_ms"] <= run["refused_p99_ms"], (where, run)
                    assert run["server_refused_p99_ms"] > 0, (where, run)
                    assert 0 < run["refusal_rate"] < 1, (where, run)
            refused += sum(run["refused"] for run in figures["runs"])
        assert case["p99_ratio"] > 0 and case["rss_ratio"] > 0, scenario
    # At 4 x the limit some calls are refused (the write's handler holds a database connection, so
    # it always reaches the limit), and their latencies are reported.
    assert refused > 0
    assert any(case["overload"].get("refused_p99_ms", 0) > 0 for case in overload["scenarios"].values())
    assert f"## Overload: MAX_CONCURRENT_RPCS = {limit}, concurrency {limit} vs {4 * limit}" in markdown
    assert f"session_service (1 worker, MAX_CONCURRENT_RPCS={limit})" in report["peak_rss_mib"]
    assert any("(1 worker, TLS)" in name for name in report["peak_rss_mib"])
    assert any("(1 worker, tracing)" in name for name in report["peak_rss_mib"])
    two_workers = [name for name in report["peak_rss_mib"] if "(2 workers)" in name]
    assert len(two_workers) == 4, report["peak_rss_mib"]  # two processes for each service
    assert all(mib > 0 for mib in report["peak_rss_mib"].values())


def test_the_committed_reference_picture_is_drawn_from_the_committed_report(tmp_path):
    drawn = tmp_path / "reference.png"
    done = subprocess.run(
        [sys.executable, "-m", "bench.plot", str(RESULTS / "reference.json"), str(drawn)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Same layout as the committed picture (the pixels may differ with the fonts at hand).
    assert assert_a_picture(drawn) == assert_a_picture(RESULTS / "reference.png")
