"""Closed-loop load from separate processes, spawned once and reused for every case: `run`
spreads one case's concurrency over them and reads the servers' CPU around the window."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import replace

from bench.caller import Job, Result, serve_jobs


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class LoadPool:
    """`processes` spawned load processes; `run` spreads one case's concurrency over them."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers = []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=serve_jobs, args=(child,), daemon=True)
            process.start()
            child.close()
            self._workers.append((process, parent))

    @property
    def db_pid(self) -> int:
        """The process that runs the db floor (alone, with all the concurrency, as one service would)."""
        return int(self._workers[0][0].pid or 0)

    def run(
        self,
        job: Job,
        warmup: float,
        window: float,
        sample: Callable[[], dict[str, float]],
        lead: float,
    ) -> tuple[Result, dict[str, float]]:
        """Runs `job` with its `slots` spread over the processes; returns the merged result and how
        much each CPU counter of `sample` grew between the start and the end of the window."""
        processes = 1 if job.kind == "db" else min(len(self._workers), job.slots)
        shares = _split(job.slots, processes)
        calls = _split(job.calls[1] - job.calls[0], processes)
        start = time.monotonic() + lead
        times = (start, start + warmup, start + warmup + window)
        first = job.calls[0]
        for index, (share, count) in enumerate(zip(shares, calls, strict=True)):
            part = replace(
                job, slots=share, calls=(first, first + count), times=times, seed=job.seed * 100 + index
            )
            self._workers[index][1].send(part)
            first += count
        time.sleep(max(0.0, times[1] - time.monotonic()))
        cpu_before = sample()
        time.sleep(max(0.0, times[2] - time.monotonic()))
        cpu_after = sample()
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
        merged = Result()
        for _, conn in self._workers[:processes]:
            part = conn.recv()
            merged.calls += part.calls
            merged.errors += part.errors
            merged.latencies.extend(part.latencies)
            merged.refused += part.refused
            merged.refused_latencies.extend(part.refused_latencies)
            merged.exhausted |= part.exhausted
            merged.sizes.extend(part.sizes)
            merged.error = merged.error or part.error
        return merged, cpu

    def close(self) -> None:
        for process, conn in self._workers:
            with contextlib.suppress(OSError):  # a process that died has nothing to be told
                conn.send(None)
            process.join(10)
            if process.is_alive():
                process.kill()
