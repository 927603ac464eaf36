"""`python -m bench [--smoke] [--out DIR]`: start the stack, seed it, measure, write the report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench import plot, report, seed
from bench.cases import KINDS, TLS_KINDS, Runner, Timing, median, percentile, ratio
from bench.loadgen import LoadPool
from bench.progress import Progress
from bench.stack import ALWAYS_ON, TRACED_FLOOR, Stack
from bench.workloads import SCENARIOS, Data

RESULTS = Path(__file__).resolve().parent / "results"
SCALE_SCENARIOS = ("GetSession", "ListSessions", "ListMessages")
# Scenarios judged against another RPC's throughput, measured beside them (see _scenarios).
YARDSTICKS = {"ConfirmCompletion": "GetSession"}
# The scale table's ListLeaderboard row: the first page ("small") against the page after this
# share of the board's users ("large": rank 900,000 of 1,000,000), on the same board, alternating.
DEEP_RANK = 0.9


@dataclass(frozen=True)
class Settings:
    smoke: bool
    concurrency: tuple[int, ...]
    repeat: int
    warmup: float
    window: float
    lead: float  # seconds load processes get to connect before a run starts
    clients: int
    small: int  # sessions in the read set the scenarios use, and the scale table's small size
    large: int
    conversation: int  # messages in the one long session ListMessages pages through
    workers_scenarios: tuple[str, ...]
    workers_concurrency: int
    tls_scenarios: tuple[str, ...]  # measured with the services, fused and echo floors on mutual TLS
    tls_concurrency: int
    # The session service restarted with MAX_CONCURRENT_RPCS = overload_limit, these measured at
    # concurrency overload_limit ("at the limit") and OVERLOAD_FACTOR times it ("overload").
    overload_scenarios: tuple[str, ...]
    overload_limit: int
    # Measured with the services' tracing off, head-sampled at each of tracing_ratios
    # (parentbased_traceidratio) and on for every call (always_on), at a concurrency the main table
    # has too: its service figures of the same run are the yardstick for "off".
    tracing_scenarios: tuple[str, ...]
    tracing_concurrency: int
    tracing_ratios: tuple[str, ...]


OVERLOAD_FACTOR = 4
FULL = Settings(
    smoke=False,
    concurrency=(1, 16, 64),
    repeat=3,
    warmup=0.4,
    window=1.2,
    lead=0.3,
    clients=max(2, (os.cpu_count() or 2) // 2),
    small=10_000,
    large=1_000_000,
    conversation=10_000,
    workers_scenarios=("GetSession", "CreateSession"),
    workers_concurrency=64,
    tls_scenarios=("GetSession", "CreateSession", "AppendMessage", "ConfirmCompletion"),
    tls_concurrency=16,
    overload_scenarios=("GetSession", "CreateSession"),
    overload_limit=16,
    tracing_scenarios=("GetSession", "ConfirmCompletion"),
    tracing_concurrency=16,
    tracing_ratios=tuple(report.SAMPLED_TRACING_TARGETS),
)
SMOKE = replace(FULL, smoke=True, concurrency=(4,), repeat=1, warmup=0.1, window=0.3, lead=0.2, clients=2)
SMOKE = replace(SMOKE, small=500, large=5_000, conversation=300, workers_concurrency=4, tls_concurrency=4)
SMOKE = replace(SMOKE, overload_limit=4, tracing_concurrency=4)


def _say(line: str) -> None:
    """A result, under the progress line of the step that measured it."""
    print(f"    {line}", file=sys.stderr, flush=True)


def _steps(settings: Settings) -> int:
    """How many progress steps run() takes, counted before it starts so that every "n/N" is true."""
    setup = 4  # the database, the small set, the board, the services with the floors and load processes
    # The large set seeded; each read on the small and large set; the leaderboard's two pages.
    scale = 1 + 2 * len(SCALE_SCENARIOS) + 1
    workers = 1 + 2 * len(settings.workers_scenarios)  # the restart with 2 workers; 1 and 2 workers
    tls = 1 + len(settings.tls_scenarios)  # the restart on TLS, then each scenario
    overload = 1 + len(settings.overload_scenarios)  # the restart with the limit, then each scenario
    # In each repetition: tracing off, at each ratio, then on, each after a restart.
    tracing = (2 + len(settings.tracing_ratios)) * settings.repeat
    finish = 2  # the stack stopped, the report written
    measured = len(SCENARIOS) * len(settings.concurrency)
    return setup + measured + scale + workers + tls + tracing + overload + finish


def _scenarios(
    runner: Runner, settings: Settings, progress: Progress, yardsticks: dict[str, Any]
) -> dict[str, Any]:
    """Every scenario at every concurrency; the kinds alternate within each repetition so a busy
    moment on the machine hits all of them alike. A scenario judged against another RPC
    (YARDSTICKS) has that RPC's service run in each of its repetitions too, into `yardsticks`: the
    machine's speed drifts over minutes, so only runs made together compare."""
    results: dict[str, Any] = {}
    for scenario in SCENARIOS:
        yardstick = YARDSTICKS.get(scenario)
        for concurrency in settings.concurrency:
            also = f", and {yardstick} on the service" * bool(yardstick)
            progress.step(
                f"{scenario} c={concurrency}: {', '.join(KINDS)}{also}; {settings.repeat} run(s) each"
            )
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
            beside: list[dict[str, Any]] = []
            for _ in range(settings.repeat):
                for kind in KINDS:
                    runs[kind].append(runner.once(scenario, kind, concurrency))
                if yardstick:
                    beside.append(runner.once(yardstick, "service", concurrency))
            kinds = {kind: median(kind_runs) for kind, kind_runs in runs.items()}
            results.setdefault(scenario, {})[str(concurrency)] = kinds
            service, fused = kinds["service"], kinds["fused"]
            over_fused = ratio(service, fused)
            line = f"{scenario:18} c={concurrency:<3} {service['ops_per_s']:9,.0f} ops/s"
            line += f"  ÷ fused {over_fused:.2f}"
            if yardstick:
                against = median(beside)
                over = ratio(service, against)
                yardsticks.setdefault(scenario, {"scenario": yardstick, "concurrency": {}})["concurrency"][
                    str(concurrency)
                ] = {"yardstick": against, "ratio": over}
                line += f"  ÷ {yardstick} (same repetitions) {over:.2f}"
            _say(line)
    return results


def _workers(runner: Runner, stack: Stack, settings: Settings, progress: Progress) -> dict[str, Any]:
    """The services with one worker each (as the stack arrives: plaintext), then restarted with two."""
    concurrency = settings.workers_concurrency
    results: dict[str, Any] = {s: {"concurrency": concurrency} for s in settings.workers_scenarios}
    for workers in (1, 2):
        if stack.workers != workers:
            progress.step(f"restarting the services with {workers} workers each")
            stack.stop_services()
            stack.start_services(workers)
        each = f"{workers} worker{'s' * (workers > 1)} per service"
        for scenario in settings.workers_scenarios:
            progress.step(f"{scenario} c={concurrency}, {each}; {settings.repeat} run(s)")
            case = runner.case(scenario, "service", concurrency)
            results[scenario][str(workers)] = case
            _say(f"{scenario:18} {workers} worker(s) {case['ops_per_s']:9,.0f} ops/s")
    for case in results.values():
        case["speedup"] = ratio(case["2"], case["1"])
    return results


def _tls(runner: Runner, stack: Stack, settings: Settings, progress: Progress) -> dict[str, Any]:
    """The hot RPCs with the services (one worker each) serving mutual TLS, against the fused floor
    over TLS, the echo floor over TLS and, in the same repetitions, the fused floor over plaintext."""
    began = time.monotonic()
    progress.step("restarting the services (1 worker each) on mutual TLS")
    stack.stop_services()
    stack.start_services(1, tls=True)
    concurrency = settings.tls_concurrency
    results: dict[str, Any] = {}
    kinds_named = ", ".join(TLS_KINDS).replace("_", " ")
    for scenario in settings.tls_scenarios:
        progress.step(f"{scenario} c={concurrency} over TLS: {kinds_named}; {settings.repeat} run(s) each")
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in TLS_KINDS}
        for _ in range(settings.repeat):
            for name, (kind, tls) in TLS_KINDS.items():
                runs[name].append(runner.once(scenario, kind, concurrency, tls=tls))
        kinds = {name: median(name_runs) for name, name_runs in runs.items()}
        service, fused, plaintext = kinds["service"], kinds["fused"], kinds["fused_plaintext"]
        over_fused = ratio(service, fused)
        floor_ratio = ratio(fused, plaintext)
        results[scenario] = {
            "kinds": kinds,
            "ratio": over_fused,  # service over TLS / fused floor over TLS
            "floor_tls_over_plaintext": floor_ratio,  # fused floor: TLS / plaintext throughput
            "floor_tls_cpu_us_per_call": fused["cpu_us_per_call"] - plaintext["cpu_us_per_call"],
        }
        _say(
            f"{scenario:18} c={concurrency:<3} TLS {service['ops_per_s']:9,.0f} ops/s  ÷ fused TLS "
            f"{over_fused:.2f}  fused TLS ÷ plaintext {floor_ratio:.2f}"
        )
    return {
        "concurrency": concurrency,
        "mutual": bool(stack.server_tls["TLS_CLIENT_CA_FILE"]),
        "scenarios": results,
        "seconds": time.monotonic() - began,  # the restart included
    }


def _spread(runs: list[dict[str, Any]]) -> float:
    """Run-to-run noise of a case: (max - min) / median of its runs' throughput."""
    rates = [run["ops_per_s"] for run in runs]
    middle = statistics.median(rates)
    return (max(rates) - min(rates)) / middle if middle else 0.0


def _tracing(
    runner: Runner, stack: Stack, settings: Settings, progress: Progress, main: dict[str, Any]
) -> dict[str, Any]:
    """The services (one worker each, plaintext) with tracing off, head-sampled at each of
    `tracing_ratios` (OTEL_TRACES_SAMPLER=parentbased_traceidratio), then on for every call
    (always_on), their spans exported to the bench's local OTLP receiver, which counts and drops
    them. Each mode runs on freshly restarted services, the modes alternating within each
    repetition. The "off" figures are set beside the `main` table's service figures of the run.

    Beside off and on, the same calls to the fused floor, untraced (off) and a second one traced by
    the same instrumentation and exporter for every call (on): what OpenTelemetry itself costs for
    those spans, with no framework around the calls."""
    began = time.monotonic()
    endpoint = stack.start_receiver()
    traced_floor = stack.start_floor("fused", otlp_endpoint=endpoint)
    concurrency = settings.tracing_concurrency
    # mode -> (where the services export, what they sample, the floor measured beside them)
    modes: dict[str, tuple[str, str, str | None]] = {"off": ("", ALWAYS_ON, "fused")}
    modes |= {sampled: (endpoint, sampled, None) for sampled in settings.tracing_ratios}
    modes["on"] = (endpoint, ALWAYS_ON, traced_floor)
    runs: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
        kind: {mode: {scenario: [] for scenario in settings.tracing_scenarios} for mode in modes}
        for kind in ("service", "fused")
    }
    spans: dict[str, Counter[str]] = {mode: Counter() for mode in modes}
    named = " and ".join(settings.tracing_scenarios)
    for repetition in range(1, settings.repeat + 1):
        for mode, (otlp_endpoint, sampled, floor) in modes.items():
            exporting = f", exporting to {otlp_endpoint}" * bool(otlp_endpoint)
            ratio_of = f", sampling {sampled} of the traces" * (sampled != ALWAYS_ON)
            progress.step(
                f"tracing {mode}, run {repetition}/{settings.repeat}: restarting the services (1 worker "
                f"each{exporting}{ratio_of}), then {named} c={concurrency} on them"
                + f" and on the {floor} floor"
                * bool(floor)
            )
            stack.stop_services()
            before = Counter(stack.spans_received())
            stack.start_services(1, otlp_endpoint=otlp_endpoint, sampled=sampled)
            for scenario in settings.tracing_scenarios:
                runs["service"][mode][scenario].append(runner.once(scenario, "service", concurrency))
                if floor:
                    runs["fused"][mode][scenario].append(runner.once(scenario, floor, concurrency))
            stack.stop_services()  # a traced service exports the spans it still holds as it stops
            spans[mode] += Counter(stack.spans_received()) - before
    before = Counter(stack.spans_received())
    stack.stop_floor(traced_floor)
    # The traced floor exports in batches, whenever it likes: its spans are counted apart.
    floor_spans = sum(spans[mode].pop(TRACED_FLOOR, 0) for mode in modes)
    floor_spans += (Counter(stack.spans_received()) - before)[TRACED_FLOOR]
    results: dict[str, Any] = {}
    for scenario in settings.tracing_scenarios:
        off, on = (median(runs["service"][mode][scenario]) for mode in ("off", "on"))
        floor_off, floor_on = (median(runs["fused"][mode][scenario]) for mode in ("off", "on"))
        reference = main[scenario][str(concurrency)]["service"]
        sampled_cases = {}
        for sampled in settings.tracing_ratios:
            figures = median(runs["service"][sampled][scenario])
            sampled_cases[sampled] = {
                "figures": figures,
                "ratio": ratio(figures, off),
                "cpu_us_added": figures["cpu_us_per_call"] - off["cpu_us_per_call"],
            }
        results[scenario] = {
            "off": off,
            "on": on,
            "ratio": ratio(on, off),  # on / off
            "cpu_us_added": on["cpu_us_per_call"] - off["cpu_us_per_call"],
            "sampled": sampled_cases,
            "floor_off": floor_off,
            "floor_on": floor_on,
            "floor_ratio": ratio(floor_on, floor_off),
            "floor_cpu_us_added": floor_on["cpu_us_per_call"] - floor_off["cpu_us_per_call"],
            "main_ops_per_s": reference["ops_per_s"],
            "off_over_main": ratio(off, reference),
            # The larger run-to-run spread of the two: "off" within it costs nothing measurable.
            "noise": max(_spread(reference["runs"]), _spread(off["runs"])),
        }
        at_ratios = ", ".join(
            f"at {sampled} {case['figures']['ops_per_s']:,.0f} ops/s (÷ off {case['ratio']:.2f})"
            for sampled, case in sampled_cases.items()
        )
        _say(
            f"{scenario:18} c={concurrency:<3} tracing off {off['ops_per_s']:9,.0f} ops/s "
            f"(÷ main table {results[scenario]['off_over_main']:.2f}), {at_ratios}, always on "
            f"{on['ops_per_s']:,.0f} ops/s (÷ off {results[scenario]['ratio']:.2f}); fused floor on ÷ off "
            f"{results[scenario]['floor_ratio']:.2f}"
        )
    return {
        "concurrency": concurrency,
        "endpoint": endpoint,
        "spans": {mode: dict(counts) for mode, counts in spans.items()},  # by service name
        "floor_spans": floor_spans,
        "receiver_cpu_seconds": stack.receiver_cpu_seconds(),
        "scenarios": results,
        "seconds": time.monotonic() - began,  # the restarts included
    }


def _server_side(durations: dict[str, list[float]]) -> dict[str, float]:
    """The session service's own timing of a run's calls (its call log, warm-up included): how long
    the accepted and the refused calls spent inside its interceptor. The client's latency less
    this is the wait before the call reached the interceptor (and the client's own share)."""
    figures = {}
    for prefix, code in (("server", "OK"), ("server_refused", "RESOURCE_EXHAUSTED")):
        ordered = sorted(durations.get(code, []))
        if ordered:
            figures[f"{prefix}_p50_ms"] = percentile(ordered, 0.50)
            figures[f"{prefix}_p99_ms"] = percentile(ordered, 0.99)
    return figures


def _overload(runner: Runner, stack: Stack, settings: Settings, progress: Progress) -> dict[str, Any]:
    """The session service (one worker, plaintext) restarted with MAX_CONCURRENT_RPCS = M; each
    scenario at concurrency M and at OVERLOAD_FACTOR x M, alternating within each repetition.
    Refused callers send their next call at once (closed loop, no backoff: the worst case). Each
    run starts the service's VmHWM afresh, so its peak RSS is the peak during that run."""
    began = time.monotonic()
    limit = settings.overload_limit
    levels = {"limit": limit, "overload": OVERLOAD_FACTOR * limit}
    progress.step(f"restarting the services (1 worker each), the session service with limit {limit}")
    stack.stop_services()
    stack.start_services(1, limit=limit)
    rss_start = stack.session_rss_mib("VmRSS")
    peak_reset = True
    results: dict[str, Any] = {}
    for scenario in settings.overload_scenarios:
        both = " and ".join(f"c={concurrency}" for concurrency in levels.values())
        progress.step(f"{scenario} at {both}, limit {limit}; {settings.repeat} run(s) each")
        runs: dict[str, list[dict[str, Any]]] = {level: [] for level in levels}
        for _ in range(settings.repeat):
            for level, concurrency in levels.items():
                logged = stack.session_log_size()
                peak_reset &= stack.reset_session_peak_rss()
                run = runner.once(scenario, "service", concurrency)
                run["rss_peak_mib"] = stack.session_rss_mib()
                run.setdefault("refused_per_s", 0.0)
                run.setdefault("refusal_rate", 0.0)
                run.update(_server_side(stack.session_calls(logged, SCENARIOS[scenario].method)))
                runs[level].append(run)
        at, over = (median(runs[level]) for level in levels)
        case: dict[str, Any] = {"limit": at, "overload": over}
        # overload / at the limit
        for name, figure in {
            "ops": "ops_per_s",
            "p50": "p50_ms",
            "p99": "p99_ms",
            "rss": "rss_peak_mib",
        }.items():
            case[f"{name}_ratio"] = ratio(over, at, figure)
        results[scenario] = case
        _say(
            f"{scenario:18} c={levels['overload']:<3} limit {limit}: {over['ops_per_s']:7,.0f} ops/s "
            f"p99 {over['p99_ms']:.1f} ms ({case['p99_ratio']:.2f} x c={limit}), "
            f"{over['refused_per_s']:,.0f} refused/s, p99 {over.get('refused_p99_ms', 0.0):.2f} ms "
            f"(server {over.get('server_refused_p99_ms', 0.0):.2f} ms), "
            f"RSS {over['rss_peak_mib']:.0f} MiB ({case['rss_ratio']:.2f} x)"
        )
    return {
        "max_concurrent_rpcs": limit,
        "concurrency": levels,
        "rss_start_mib": rss_start,
        "rss_peak_per_run": peak_reset,  # False: VmHWM could not be reset, peaks since the restart
        "scenarios": results,
        "seconds": time.monotonic() - began,  # the restart included
    }


def _reads(runner: Runner, settings: Settings, progress: Progress, size: int, data: Data) -> dict[str, Any]:
    """The scale scenarios at concurrency 1 on one seeded set."""
    cases = {}
    for name in SCALE_SCENARIOS:
        progress.step(f"{name} c=1 on the {size:,}-session set: service; {settings.repeat} run(s)")
        cases[name] = runner.case(name, "service", 1, data)
    return cases


def _scale(
    runner: Runner, stack: Stack, settings: Settings, progress: Progress, small: dict[str, Any]
) -> dict[str, Any]:
    """Seeds the large set next to the small one and measures the same reads on it."""
    progress.step(f"seeding {settings.large:,} more sessions")
    large_data, rows, seconds = asyncio.run(seed.seed_set(stack.dsns[0], "large", settings.large))
    data = replace(runner.data, set_tag=large_data.set_tag, set_size=large_data.set_size)
    large = _reads(runner, settings, progress, settings.large, data)
    cases = {name: {"small": small[name], "large": large[name]} for name in SCALE_SCENARIOS}
    deep = int(DEEP_RANK * data.board_size)
    progress.step(
        f"ListLeaderboard c=1 on the {data.board_size:,}-user board: rank 1 and after rank {deep:,}, "
        f"alternating; {settings.repeat} run(s) each"
    )
    pages: dict[str, list[dict[str, Any]]] = {"small": [], "large": []}
    for _ in range(settings.repeat):
        for page, rank in (("small", 0), ("large", deep)):
            pages[page].append(runner.once("ListLeaderboard", "service", 1, replace(data, board_rank=rank)))
    cases["ListLeaderboard"] = {page: median(runs) for page, runs in pages.items()}
    for case in cases.values():
        for figure in ("p50", "p99"):
            before, after = case["small"][f"{figure}_ms"], case["large"][f"{figure}_ms"]
            case[f"{figure}_ratio"] = after / before if before else 0.0
    return {
        "sizes": {"small": settings.small, "large": settings.large},
        "board": {"users": data.board_size, "deep_rank": deep},
        "rows": {"large": rows},
        "seed_seconds": {"large": seconds},
        "conversation": settings.conversation,
        "cases": cases,
    }


def run(settings: Settings, out: Path) -> Path:
    began = time.monotonic()
    progress = Progress("bench", _steps(settings))
    result: dict[str, Any] = {"settings": asdict(settings)}
    with tempfile.TemporaryDirectory(prefix="bench-") as folder, contextlib.ExitStack() as cleanup:
        stack = Stack(Path(folder))
        cleanup.callback(stack.close)  # runs last, after the load processes are gone
        progress.step("starting PostgreSQL and migrating both schemas")
        stack.start_database()
        stack.migrate()
        result["machine"] = report.machine(asyncio.run(report.postgres_version(stack.dsns[0])))
        result["settings"]["pool_size"] = stack.pool_size
        progress.step(
            f"seeding {settings.small:,} sessions and a {settings.conversation:,}-message conversation"
        )
        data, small_rows, small_seconds = asyncio.run(
            seed.seed_set(stack.dsns[0], "small", settings.small, settings.conversation)
        )
        progress.step(f"seeding the all-time leaderboard with {settings.large:,} users")
        asyncio.run(seed.board(stack.dsns[1], settings.large))
        data = replace(data, board_size=settings.large)
        progress.step(
            f"starting the services, the echo and fused floors and {settings.clients} load processes"
        )
        stack.start_services(1)
        for floor in ("echo", "fused"):
            stack.start_floor(floor)
        pool = LoadPool(settings.clients)
        cleanup.callback(pool.close)
        timing = Timing(settings.warmup, settings.window, settings.repeat, settings.lead)
        runner = Runner(stack, pool, timing, data)
        small = _reads(runner, settings, progress, settings.small, data)
        result["yardsticks"] = {}
        result["scenarios"] = _scenarios(runner, settings, progress, result["yardsticks"])
        result["scale"] = _scale(runner, stack, settings, progress, small)
        result["scale"]["rows"]["small"] = small_rows
        result["scale"]["seed_seconds"]["small"] = small_seconds
        result["workers"] = _workers(runner, stack, settings, progress)
        result["tls"] = _tls(runner, stack, settings, progress)
        result["tracing"] = _tracing(runner, stack, settings, progress, result["scenarios"])
        # Last: no later section needs the services without their limit.
        result["overload"] = _overload(runner, stack, settings, progress)
        progress.step("stopping the load processes, the services, the floors and PostgreSQL")
        cleanup.close()
        result["peak_rss_mib"] = stack.peaks
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["wall_seconds"] = time.monotonic() - began
    progress.step(f"writing latest.md, latest.json and latest.png to {out}")
    path = report.write(result, out)
    plot.draw(result, out / "latest.png")
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny counts and short windows: checks it all runs"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"report folder (default {RESULTS})")
    parser.add_argument("--repeat", type=int, help="runs per case (median reported)")
    parser.add_argument("--window", type=float, help="seconds measured per run")
    parser.add_argument("--clients", type=int, help="load generator processes")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the services, floors and database are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings = SMOKE if args.smoke else FULL
    overrides = {"repeat": args.repeat, "window": args.window, "clients": args.clients}
    settings = replace(settings, **{key: value for key, value in overrides.items() if value})
    path = run(settings, args.out)
    print(f"report: {path} (and {path.with_suffix('.json')}, {path.with_suffix('.png')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
