"""The report: a header naming the machine, then the tables, as markdown and as JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from bench.cases import KINDS, ratio

PACKAGES = ("grpcio", "protobuf", "SQLAlchemy", "asyncpg", "PyJWT")
SCALE_TARGET = 1.3
# Service / fused floor throughput wanted at concurrency 16 (plaintext and TLS alike).
READ_TARGET, WRITE_TARGET = 0.85, 0.8
READS = ("GetSession", "ListSessions", "ListMessages")
# Overload (concurrency 4 x MAX_CONCURRENT_RPCS against at the limit): accepted p99 ratio, refusal
# latency as the caller sees it, peak RSS ratio.
OVERLOAD_P99_TARGET, REFUSAL_TARGET_MS, OVERLOAD_RSS_TARGET = 2.0, 10.0, 1.5
# ConfirmCompletion / GetSession throughput wanted at concurrency 16, and its PostgreSQL CPU per call
# against the fused floor's.
YARDSTICK_TARGET, PG_FLOOR_TARGET = 0.3, 1.3
# Tracing on (every span exported) / off throughput wanted.
# Tracing head-sampled at these ratios (parentbased_traceidratio), its throughput ÷ tracing off at
# least this; always_on is reported, not targeted.
SAMPLED_TRACING_TARGETS = {"0.01": 0.97, "0.1": 0.9}


async def postgres_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


def machine(postgres: str) -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "cores": os.cpu_count(),
        "cpu": model,
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": postgres,
        "packages": {name: metadata.version(name) for name in PACKAGES},
        "load_average_at_start": os.getloadavg(),
    }


def _f(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in m["packages"].items())
    out = [
        "# Benchmark" + (" (smoke run: tiny counts, numbers mean nothing)" if s["smoke"] else ""),
        "",
        f"- **Machine**: {m['host']}, {m['cores']} cores ({m['cpu']}), {m['os']}",
        f"- **Software**: Python {m['python']}; {m['postgres']}; {versions}",
        f"- **When**: {m['date']}; load average {_load(m['load_average_at_start'])} at start, "
        f"{_load(m['load_average_at_end'])} at end; wall time {report['wall_seconds']:.0f} s",
        f"- **Method**: closed loop from {s['clients']} load processes; {s['warmup']} s warm-up, then "
        f"{s['window']} s measured per run; median of {s['repeat']} runs; DB pool {s['pool_size']} per "
        "process. Server CPU = utime+stime of the server processes over the window / calls; PG CPU = "
        "the same for the postmaster and its backends (embedded database only).",
        "- **Floors**: *fused* = bare grpc.aio handler, same JWT check and SQL on asyncpg; *db* = that SQL "
        "on asyncpg from one process, no gRPC; *rpc* = empty grpc.aio echo of the same message sizes. "
        "All plaintext except in the TLS section.",
        "",
        "## Throughput and latency (service; floors' throughput beside)",
        "",
    ]
    rows, cpu_rows = [], []
    for scenario, by_concurrency in report["scenarios"].items():
        for concurrency, kinds in by_concurrency.items():
            svc, fused = kinds["service"], kinds["fused"]
            over_fused = ratio(svc, fused)
            latency = ratio(svc, fused, "p50_ms")
            figures = [svc["ops_per_s"], svc["p50_ms"], svc["p95_ms"], svc["p99_ms"]]
            floors = [kinds[kind]["ops_per_s"] for kind in ("fused", "db", "rpc")]
            errors = str(sum(kind["errors"] for kind in kinds.values()))
            rows.append(
                [
                    scenario,
                    concurrency,
                    *map(_f, figures),
                    f"**{over_fused:.2f}**",
                    f"{latency:.2f}",
                    *map(_f, floors),
                    errors,
                ]
            )
            cpu = [kinds[kind]["cpu_us_per_call"] for kind in KINDS]
            cpu_rows.append(
                [
                    scenario,
                    concurrency,
                    *map(_f, cpu),
                    _f(svc["pg_cpu_us_per_call"]),
                    _f(fused["pg_cpu_us_per_call"]),
                ]
            )
    head = [
        "scenario",
        "conc",
        "ops/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "÷ fused",
        "p50 ÷ fused p50",
        "fused ops/s",
        "db ops/s",
    ]
    out += _table([*head, "rpc ops/s", "errors"], rows)
    out += ["## CPU per call (µs)", ""]
    out += _table(["scenario", "conc", *KINDS, "PG (service)", "PG (fused)"], cpu_rows)
    out += _yardsticks(report)
    out += _tls(report["tls"]) + _tracing(report["tracing"])
    if "overload" in report:
        out += _overload(report["overload"])
    out += _scale(report["scale"]) + _workers(report["workers"])
    out += ["## Peak RSS (VmHWM)", ""]
    out += _table(["process", "MiB"], [[name, _f(mib)] for name, mib in report["peak_rss_mib"].items()])
    return "\n".join(out)


def _yardsticks(report: dict[str, Any]) -> list[str]:
    """Each scenario judged against another RPC, beside that RPC's service runs of the same
    repetitions; and its PostgreSQL CPU per call against the fused floor's doing the same SQL."""
    out = [
        "## Against a yardstick measured in the same repetitions",
        "",
        "The machine's speed drifts over minutes (the fused floor's own throughput moves with it), so a "
        "scenario judged against another RPC has that RPC's service run in each of its repetitions. "
        f"Target at concurrency 16: ≥ {YARDSTICK_TARGET} of the yardstick's throughput; PostgreSQL CPU "
        f"per call ≤ {PG_FLOOR_TARGET} times the fused floor's, at every concurrency.",
        "",
    ]
    rows = []
    for scenario, case in report.get("yardsticks", {}).items():
        for concurrency, pair in case["concurrency"].items():
            svc, fused = (
                report["scenarios"][scenario][concurrency]["service"],
                report["scenarios"][scenario][concurrency]["fused"],
            )
            pg = ratio(svc, fused, "pg_cpu_us_per_call")
            rows.append(
                [
                    scenario,
                    concurrency,
                    _f(svc["ops_per_s"]),
                    f"{case['scenario']} {_f(pair['yardstick']['ops_per_s'])}",
                    f"**{pair['ratio']:.2f}**",
                    "-" if concurrency != "16" else _met(pair["ratio"] >= YARDSTICK_TARGET),
                    f"{_f(svc['pg_cpu_us_per_call'])} / {_f(fused['pg_cpu_us_per_call'])}",
                    f"**{pg:.2f}**",
                    _met(pg <= PG_FLOOR_TARGET),
                ]
            )
    head = ["scenario", "conc", "ops/s", "yardstick ops/s", "÷ yardstick", "target: met"]
    return out + _table([*head, "PG µs service / fused", "PG ÷ fused", "target: met"], rows)


def _load(values: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _tls(tls: dict[str, Any]) -> list[str]:
    mode = "mutual TLS" if tls["mutual"] else "TLS (server certificate only)"
    out = [
        "## TLS: the hot RPCs over " + mode,
        "",
        f"Concurrency {tls['concurrency']}, one worker per service. The services serve {mode} "
        "(TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE; ECDSA P-256 certificates from a private CA); "
        "the reputation service dials the session service over it too. The load processes dial TLS "
        "and present a client certificate. *fused TLS* is the fused floor's process serving the same "
        "handlers on a TLS port; *fused plaintext* is that same process on its plaintext port, measured "
        "in the same repetitions: their ratio is the cost of TLS itself. *rpc TLS* is the echo floor "
        f"over TLS. Targets: service ÷ fused TLS ≥ {READ_TARGET} for reads, ≥ {WRITE_TARGET} for writes. "
        f"This section took {tls['seconds']:.0f} s of the wall time.",
        "",
    ]
    rows, cpu_rows = [], []
    for scenario, case in tls["scenarios"].items():
        kinds = case["kinds"]
        svc, fused, plain = kinds["service"], kinds["fused"], kinds["fused_plaintext"]
        target = READ_TARGET if scenario in READS else WRITE_TARGET
        latency = ratio(svc, fused, "p50_ms")
        figures = [svc["ops_per_s"], svc["p50_ms"], svc["p95_ms"], svc["p99_ms"]]
        floors = [fused["ops_per_s"], plain["ops_per_s"]]
        rows.append(
            [
                scenario,
                *map(_f, figures),
                f"**{case['ratio']:.2f}**",
                f"{latency:.2f}",
                f"{target:.2f}: {'yes' if case['ratio'] >= target else 'NO'}",
                *map(_f, floors),
                f"**{case['floor_tls_over_plaintext']:.2f}**",
                _f(kinds["rpc"]["ops_per_s"]),
                str(sum(kind["errors"] for kind in kinds.values())),
            ]
        )
        cpu = [kinds[name]["cpu_us_per_call"] for name in ("service", "fused", "fused_plaintext", "rpc")]
        cpu_rows.append([scenario, *map(_f, cpu), f"{case['floor_tls_cpu_us_per_call']:+.0f}"])
    head = ["scenario", "ops/s", "p50 ms", "p95 ms", "p99 ms", "÷ fused TLS", "p50 ÷ fused TLS p50"]
    head += ["target: met", "fused TLS ops/s", "fused plaintext ops/s", "fused TLS ÷ plaintext"]
    out += _table([*head, "rpc TLS ops/s", "errors"], rows)
    out += ["CPU per call (µs) with TLS: the server processes, as in the table above.", ""]
    cpu_head = ["scenario", "service TLS", "fused TLS", "fused plaintext", "rpc TLS", "TLS on the floor"]
    return out + _table(cpu_head, cpu_rows)


def _counts(spans: dict[str, int]) -> str:
    by_service = ", ".join(f"{name or 'no service.name'} {count:,}" for name, count in sorted(spans.items()))
    return f"{sum(spans.values()):,}" + (f" ({by_service})" if by_service else "")


def _tracing(tracing: dict[str, Any]) -> list[str]:
    spans = tracing["spans"]
    sampled_spans = "; ".join(
        f"sampling {sampled}: {_counts(spans[sampled])}" for sampled in SAMPLED_TRACING_TARGETS
    )
    targets = ", ".join(f"≥ {target} at {sampled}" for sampled, target in SAMPLED_TRACING_TARGETS.items())
    out = [
        "## Tracing: off, head-sampled, and on for every call (spans exported over OTLP)",
        "",
        f"Concurrency {tracing['concurrency']}, one worker per service, plaintext. *off*: the services "
        "with no OTEL_* variable set, as in every other section. Otherwise OTEL_EXPORTER_OTLP_ENDPOINT "
        "is a local OTLP/gRPC receiver the bench starts (bench/otlp_receiver.py: counts the spans, "
        "drops them), and OTEL_TRACES_SAMPLER is *parentbased_traceidratio* with OTEL_TRACES_SAMPLER_ARG "
        f"{' or '.join(SAMPLED_TRACING_TARGETS)} (what production runs: that share of the traces the "
        "services start, and every trace a caller sampled), or *always_on*. The services are restarted "
        "for each mode, the modes alternating within each repetition. The receiver got "
        f"{_counts(spans['off'])} spans with tracing off, {sampled_spans}, and {_counts(spans['on'])} "
        f"always on; it runs on the same cores and used {tracing['receiver_cpu_seconds']:.1f} s of CPU, "
        f"not in the CPU column. Targets: throughput ÷ off {targets}; always_on is reported, not "
        "targeted. Off costs nothing measurable: its throughput ÷ the main table's service figure of "
        "this run is at least 1 - the run-to-run noise (the larger (max - min) / median of the two "
        "cases' runs); faster is no cost. Both run the same code with nothing instrumented, so that "
        "column shows the drift between two measurements. "
        f"This section took {tracing['seconds']:.0f} s of the wall time.",
        "",
    ]
    rows = []
    for scenario, case in tracing["scenarios"].items():
        off = case["off"]
        row = [scenario, _f(off["ops_per_s"])]
        for sampled, target in SAMPLED_TRACING_TARGETS.items():
            at = case["sampled"][sampled]
            row += [_f(at["figures"]["ops_per_s"]), f"**{at['ratio']:.2f}**", _met(at["ratio"] >= target)]
            row.append(f"{at['cpu_us_added']:+.0f}")
        no_slower = case["off_over_main"] >= 1 - case["noise"]
        row += [_f(case["main_ops_per_s"]), f"**{case['off_over_main']:.2f}**", f"±{case['noise']:.2f}"]
        row.append(_met(no_slower))
        rows.append(row)
    head = ["scenario", "ops/s off"]
    for sampled, target in SAMPLED_TRACING_TARGETS.items():
        head += [f"ops/s at {sampled}", "÷ off", f"≥ {target}: met", "CPU µs added"]
    head += ["main table ops/s", "off ÷ main", "noise", "off no slower"]
    out += _table(head, rows)
    out += [
        "",
        "Always on, every call traced. *Floor*: the same calls to the fused floor (the same JWT check "
        "and SQL, no framework around them), untraced, and a second fused floor traced by the same "
        "instrumentation and exporter, measured in the same repetitions: what OpenTelemetry itself "
        f"costs for those calls' spans ({tracing['floor_spans']:,} exported).",
        "",
    ]
    rows = []
    for scenario, case in tracing["scenarios"].items():
        off, on = case["off"], case["on"]
        figures = [(off[key], on[key]) for key in ("p50_ms", "p99_ms", "cpu_us_per_call")]
        rows.append(
            [
                scenario,
                _f(off["ops_per_s"]),
                _f(on["ops_per_s"]),
                f"**{case['ratio']:.2f}**",
                *(_f(value) for pair in figures for value in pair),
                f"{case['cpu_us_added']:+.0f}",
                f"**{case['floor_ratio']:.2f}**",
                f"{case['floor_cpu_us_added']:+.0f}",
                str(
                    off["errors"]
                    + on["errors"]
                    + sum(at["figures"]["errors"] for at in case["sampled"].values())
                    + case["floor_off"]["errors"]
                    + case["floor_on"]["errors"]
                ),
            ]
        )
    head = ["scenario", "ops/s off", "ops/s on", "on ÷ off", "p50 ms off", "p50 ms on", "p99 ms off"]
    head += ["p99 ms on", "CPU µs off", "CPU µs on", "CPU µs added", "floor on ÷ off"]
    head += ["floor CPU µs added", "errors"]
    return out + _table(head, rows)


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _overload(overload: dict[str, Any]) -> list[str]:
    limit = overload["max_concurrent_rpcs"]
    at, over = overload["concurrency"]["limit"], overload["concurrency"]["overload"]
    rss = "during that run" if overload["rss_peak_per_run"] else "since the restart (VmHWM not resettable)"
    out = [
        f"## Overload: MAX_CONCURRENT_RPCS = {limit}, concurrency {at} vs {over}",
        "",
        f"The session service restarted (one worker, plaintext) with MAX_CONCURRENT_RPCS={limit}; each "
        f"scenario at concurrency {at} (*at the limit*) and {over} (*overload*), alternating within each "
        "repetition. Closed loop with no backoff: a refused caller (RESOURCE_EXHAUSTED OVERLOADED) sends "
        "its next call at once, the worst case for the server. Refusals are counted and timed apart from "
        "the accepted calls, and are not errors. Latencies are the caller's; *in server* is the "
        "service's own duration_ms from its call log (time inside its interceptor, warm-up included): "
        "the difference is time spent before the call reached the interceptor. RSS is the session "
        f"service's peak {rss}; it was {overload['rss_start_mib']:.0f} MiB after the restart. "
        f"Targets: accepted p99 at {over} ≤ {OVERLOAD_P99_TARGET} x p99 at {at}; refusal p99 ≤ "
        f"{REFUSAL_TARGET_MS:.0f} ms; peak RSS at {over} ≤ {OVERLOAD_RSS_TARGET} x at {at}. "
        f"This section took {overload['seconds']:.0f} s of the wall time.",
        "",
    ]
    rows, refusal_rows = [], []
    for scenario, case in overload["scenarios"].items():
        a, b = case["limit"], case["overload"]
        figures = [a["ops_per_s"], b["ops_per_s"], a["p50_ms"], b["p50_ms"], a["p99_ms"], b["p99_ms"]]
        inside = f"{_f(b.get('server_p50_ms', 0.0))} / {_f(b.get('server_p99_ms', 0.0))}"
        rows.append(
            [
                scenario,
                *map(_f, figures),
                f"**{case['p99_ratio']:.2f}**",
                _met(case["p99_ratio"] <= OVERLOAD_P99_TARGET),
                inside,
                str(a["errors"] + b["errors"]),
            ]
        )
        refused = b.get("refused_p99_ms")  # over the runs that had refusals
        refusal_rows.append(
            [
                scenario,
                f"{sum(run['refused'] for run in a['runs']):,}",
                f"{sum(run['refused'] for run in b['runs']):,}",
                _f(b["refused_per_s"]),
                f"{b['refusal_rate']:.0%}",
                _f(b.get("refused_p50_ms", 0.0)),
                f"**{_f(refused)}**" if refused is not None else "-",
                _f(b.get("server_refused_p99_ms", 0.0)),
                _met(refused <= REFUSAL_TARGET_MS) if refused is not None else "no refusals",
                _f(a["rss_peak_mib"]),
                _f(b["rss_peak_mib"]),
                f"**{case['rss_ratio']:.2f}**",
                _met(case["rss_ratio"] <= OVERLOAD_RSS_TARGET),
            ]
        )
    head = ["scenario", f"ops/s at {at}", f"ops/s at {over}", f"p50 ms at {at}", f"p50 ms at {over}"]
    head += [f"p99 ms at {at}", f"p99 ms at {over}", "p99 ratio", f"≤ {OVERLOAD_P99_TARGET}: met"]
    out += ["Accepted calls:", ""]
    out += _table([*head, f"in server p50 / p99 ms at {over}", "errors"], rows)
    head = ["scenario", f"refused at {at}", f"refused at {over}", f"refused/s at {over}", "refused share"]
    head += ["refusal p50 ms"]
    head += ["refusal p99 ms", "in server refusal p99 ms", f"≤ {REFUSAL_TARGET_MS:.0f} ms: met"]
    head += [f"RSS MiB at {at}", f"RSS MiB at {over}", "RSS ratio", f"≤ {OVERLOAD_RSS_TARGET}: met"]
    out += [
        f"Refusals at concurrency {over} (counts: all runs; rates and latencies: medians, the latencies "
        "over the runs that had refusals) and memory:",
        "",
    ]
    return out + _table(head, refusal_rows)


def _scale(scale: dict[str, Any]) -> list[str]:
    small, large = scale["sizes"]["small"], scale["sizes"]["large"]
    rows_small, rows_large = scale["rows"]["small"]["sessions"], scale["rows"]["large"]["sessions"]
    out = [
        "## Scale: latency with the sessions table small and large",
        "",
        f"Concurrency 1. Seeded sets of {small:,} and {large:,} sessions (rows in the table then: "
        f"{rows_small:,} and {rows_large:,}); ListMessages pages through one session of "
        f"{scale['conversation']:,} messages. Seeding the large set took "
        f"{scale['seed_seconds']['large']:.1f} s. ListLeaderboard pages the all-time board of "
        f"{scale['board']['users']:,} users: its small column is the first page (rank 1), its large "
        f"column the page after rank {scale['board']['deep_rank']:,}, measured alternately after the "
        "large set was seeded. "
        f"Target: large/small p50 ≤ {SCALE_TARGET}.",
        "",
    ]
    rows = []
    for scenario, case in scale["cases"].items():
        a, b = case["small"], case["large"]
        verdict = _met(case["p50_ratio"] <= SCALE_TARGET)
        p50, p99 = f"**{case['p50_ratio']:.2f}**", f"{case['p99_ratio']:.2f}"
        rows.append(
            [scenario, _f(a["p50_ms"]), _f(b["p50_ms"]), p50, _f(a["p99_ms"]), _f(b["p99_ms"]), p99, verdict]
        )
    head = [
        "scenario",
        "p50 ms small",
        "p50 ms large",
        "p50 ratio",
        "p99 ms small",
        "p99 ms large",
        "p99 ratio",
    ]
    return out + _table([*head, "≤ target"], rows)


def _workers(workers: dict[str, Any]) -> list[str]:
    out = ["## Workers: SESSION_WORKERS / REPUTATION_WORKERS = 1 vs 2", ""]
    rows = []
    for scenario, case in workers.items():
        one, two = case["1"], case["2"]
        figures = [(one[key], two[key]) for key in ("ops_per_s", "p50_ms", "cpu_us_per_call")]
        pairs = [_f(value) for pair in figures for value in pair]
        rows.append([scenario, str(case["concurrency"]), *pairs[:2], f"{case['speedup']:.2f}", *pairs[2:]])
    head = [
        "scenario",
        "conc",
        "ops/s 1",
        "ops/s 2",
        "speedup",
        "p50 ms 1",
        "p50 ms 2",
        "CPU µs 1",
        "CPU µs 2",
    ]
    return out + _table(head, rows)


def write(report: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "latest.json").write_text(json.dumps(report, indent=1, default=str))
    path = folder / "latest.md"
    path.write_text(markdown(report))
    return path
