"""One case is a scenario against one kind of server at one concurrency, run `repeat` times: rows
pre-created for every run that consumes them, server CPU read around the window, medians kept."""

from __future__ import annotations

import asyncio
import random
import statistics
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from bench import seed
from bench.caller import Job, Result
from bench.loadgen import LoadPool
from bench.procs import cpu_seconds
from bench.stack import Stack
from bench.workloads import SCENARIOS, Data, batch_rows

KINDS = ("service", "fused", "db", "rpc")
# The TLS rows: name -> (kind, over TLS). The service, the fused floor and the echo floor over mutual
# TLS, and beside them, in the same repetitions, the same fused floor process over plaintext: what
# TLS itself costs.
TLS_KINDS = {
    "service": ("service", True),
    "fused": ("fused", True),
    "rpc": ("rpc", True),
    "fused_plaintext": ("fused", False),
}
FIRST_GUESS_OPS = 1500.0  # calls/s assumed before a consuming scenario has been measured
MAX_ATTEMPTS = 3  # a run that used up its rows (or finished no call) is run again, with more of either


@dataclass(frozen=True)
class Timing:
    warmup: float
    window: float
    repeat: int
    lead: float  # between handing out a run and its start: time to connect channels or pools


def ratio(top: dict[str, Any], bottom: dict[str, Any], key: str = "ops_per_s") -> float:
    """`top`'s figure ÷ `bottom`'s (calls/s unless `key` names another); 0 when `bottom`'s is 0."""
    return top[key] / bottom[key] if bottom[key] else 0.0


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def summarize(result: Result, cpu: dict[str, float], window: float) -> dict[str, Any]:
    latencies = sorted(result.latencies)
    calls = max(result.calls, 1)
    summary: dict[str, Any] = {
        "ops_per_s": result.calls / window,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p95_ms": percentile(latencies, 0.95) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_us_per_call": cpu["server"] / calls * 1e6,
        "pg_cpu_us_per_call": cpu["postgres"] / calls * 1e6,
        "calls": result.calls,
        "errors": result.errors,
        "exhausted": result.exhausted,
        "refused": result.refused,  # RESOURCE_EXHAUSTED OVERLOADED: not in the calls, nor the errors
    }
    if result.refused:
        refusals = sorted(result.refused_latencies)
        summary["refused_per_s"] = result.refused / window
        summary["refusal_rate"] = result.refused / (result.refused + result.calls)
        summary["refused_p50_ms"] = percentile(refusals, 0.50) * 1000
        summary["refused_p99_ms"] = percentile(refusals, 0.99) * 1000
    if result.error:
        summary["error"] = result.error
    if result.sizes:
        summary["request_bytes"] = round(statistics.mean(s[0] for s in result.sizes))
        summary["response_bytes"] = round(statistics.mean(s[1] for s in result.sizes))
    return summary


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs that have it (errors summed), with the runs themselves kept."""
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(key for run in runs for key in run):
        values = [run[key] for run in runs if key in run]
        if isinstance(values[0], bool):
            merged[key] = any(values)
        elif key == "errors":
            merged[key] = sum(values)
        elif isinstance(values[0], int | float):
            merged[key] = statistics.median(values)
        else:
            merged[key] = next((value for value in values if value), values[0])
    merged["runs"] = runs
    return merged


class Runner:
    def __init__(self, stack: Stack, pool: LoadPool, timing: Timing, data: Data) -> None:
        self.stack = stack
        self.pool = pool
        self.timing = timing
        self.data = data
        self._sizes: dict[str, tuple[int, int]] = {}  # scenario -> (request, reply) bytes seen
        # (scenario, kind, TLS) -> the best (calls/s, at concurrency) seen
        self._rates: dict[tuple[str, str, bool], tuple[float, int]] = {}
        self._batches = 0
        self._random = random.Random(7)

    def case(
        self, scenario: str, kind: str, concurrency: int, data: Data | None = None, tls: bool = False
    ) -> dict[str, Any]:
        runs = [self.once(scenario, kind, concurrency, data, tls) for _ in range(self.timing.repeat)]
        return median(runs)

    def once(
        self, scenario: str, kind: str, concurrency: int, data: Data | None = None, tls: bool = False
    ) -> dict[str, Any]:
        """One run; consuming scenarios get freshly seeded rows, more if a run used them all up.
        With `tls` the calls go over mutual TLS (for "service", the services must be serving it)."""
        spec = SCENARIOS[scenario]
        target, pids = self._server(kind, spec.service, tls)
        sizes = self._sizes.get(scenario, (0, 0))
        job = Job(
            kind="raw" if kind == "rpc" else "db" if kind == "db" else "grpc",
            scenario=scenario,
            target=target,
            slots=concurrency,
            data=data or self.data,
            jwt=self.stack.jwt,
            page_secret=self.stack.page_secret,
            tls=self.stack.client_tls if tls else None,
            request_bytes=sizes[0],
            response_bytes=sizes[1],
            dsns=self.stack.dsns,
            pool_size=self.stack.pool_size,
            seed=self._random.randrange(1 << 30),
        )

        def sample() -> dict[str, float]:
            return {"server": sum(cpu_seconds(pid) for pid in pids), "postgres": self.stack.postgres_cpu()}

        self.stack.trim_logs()
        timing = self.timing
        window = timing.window
        for attempt in range(MAX_ATTEMPTS):
            if spec.consumes and kind != "rpc":
                calls = self._budget((scenario, kind, tls), concurrency) * 4**attempt
                job = replace(
                    job, data=replace(job.data, batch_tag=self._seed_batch(scenario, calls)), calls=(0, calls)
                )
            result, cpu = self.pool.run(job, timing.warmup, window, sample, timing.lead)
            if result.exhausted:
                continue
            if result.calls == 0:
                # Nothing finished inside the window (a first call stalled past it): an empty run
                # measures nothing, so measure again over a longer window.
                window *= 2
                continue
            break
        summary = summarize(result, cpu, window)
        if kind == "service" and "request_bytes" in summary:
            self._sizes[scenario] = (summary["request_bytes"], summary["response_bytes"])
        if summary["ops_per_s"] > self._rates.get((scenario, kind, tls), (0.0, 1))[0]:
            self._rates[(scenario, kind, tls)] = (summary["ops_per_s"], concurrency)
        return summary

    def _server(self, kind: str, service: str, tls: bool) -> tuple[str, list[int]]:
        """Where a kind of run sends its calls, and the processes whose CPU counts as its server's."""
        if kind == "service":
            if self.stack.tls != tls:
                raise RuntimeError(f"the services serve {'TLS' if self.stack.tls else 'plaintext'}")
            # The reputation service calls the session service: both serve a confirmation.
            pids = self.stack.service_pids("session" if service == "session" else None)
            return f"127.0.0.1:{self.stack.ports[service]}", pids
        if kind == "db":
            return "", [self.pool.db_pid]
        floor = "echo" if kind == "rpc" else kind  # "fused", or the traced one the tracing rows start
        process, port, tls_port = self.stack.floors[floor]
        return f"127.0.0.1:{tls_port if tls else port}", [process.pid]

    def _budget(self, case: tuple[str, str, bool], concurrency: int) -> int:
        """Rows enough for the run with a margin, from the best rate seen so far for this scenario
        and kind (scaled up, to a point, when the concurrency has grown since); a TLS case not yet
        measured starts from its plaintext twin's rate."""
        scenario, kind, _ = case
        rate, measured_at = self._rates.get(
            case, self._rates.get((scenario, kind, False), (FIRST_GUESS_OPS, 1))
        )
        expected = rate * min(4.0, max(1.0, concurrency / measured_at))
        seconds = self.timing.lead + self.timing.warmup + self.timing.window
        return int(expected * seconds * 1.5) + 20 * concurrency

    def _seed_batch(self, scenario: str, calls: int) -> str:
        self._batches += 1
        tag = f"batch{self._batches}"

        async def run() -> None:
            conn = await asyncpg.connect(self.stack.dsns[0])
            try:
                await seed.batch(conn, scenario, tag, batch_rows(scenario, calls))
            finally:
                await conn.close()

        asyncio.run(run())
        return tag
