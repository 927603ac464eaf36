"""The report drawn: per RPC, throughput and p99 against concurrency beside the fused floor; then the
scale and the workers cases. `python -m bench.plot REPORT.json OUT.png` draws a saved report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLUMNS = 4  # two RPCs a row, each as a throughput and a p99 panel
LINES = {"service": ("service", "tab:blue", "-"), "fused": ("fused floor", "tab:gray", "--")}


def draw(report: dict[str, Any], path: Path) -> Path:
    """Writes the picture of `report` (as `python -m bench` writes it to latest.json) to `path`."""
    scenarios = list(report["scenarios"].items())
    rows = (len(scenarios) + 1) // 2 + 1  # the last row: scale and workers
    figure = Figure(figsize=(4.2 * COLUMNS, 3.1 * rows), layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend: no display needed
    panels = figure.subplots(rows, COLUMNS, squeeze=False)
    for index, (scenario, by_concurrency) in enumerate(scenarios):
        row, column = divmod(2 * index, COLUMNS)
        _rpc(panels[row][column], panels[row][column + 1], scenario, by_concurrency)
    if len(scenarios) % 2:
        for spare in panels[-2][2:]:
            spare.set_axis_off()
    panels[0][0].legend(loc="lower right", fontsize="small")
    _scale(panels[-1][0], panels[-1][1], report["scale"])
    _workers(panels[-1][2], panels[-1][3], report["workers"])
    machine, settings = report["machine"], report["settings"]
    title = (
        f"Benchmark {machine['date']}: {machine['host']}, {machine['cores']} cores; "
        f"runs of {settings['window']} s, median of {settings['repeat']}"
    )
    figure.suptitle(title + ("  (smoke run: the numbers mean nothing)" if settings["smoke"] else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def _rpc(throughput: Axes, latency: Axes, scenario: str, by_concurrency: dict[str, Any]) -> None:
    levels = sorted(by_concurrency, key=int)
    x = [int(level) for level in levels]
    for kind, (label, color, style) in LINES.items():
        ops = [by_concurrency[level][kind]["ops_per_s"] for level in levels]
        p99 = [by_concurrency[level][kind]["p99_ms"] for level in levels]
        throughput.plot(x, ops, marker="o", color=color, linestyle=style, label=label)
        latency.plot(x, p99, marker="o", color=color, linestyle=style, label=label)
    for position, level in zip(x, levels, strict=True):
        service, fused = by_concurrency[level]["service"], by_concurrency[level]["fused"]
        if fused["ops_per_s"]:
            ratio = service["ops_per_s"] / fused["ops_per_s"]
            throughput.annotate(
                f"{ratio:.2f}",
                (position, service["ops_per_s"]),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize="x-small",
                color=LINES["service"][1],
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            )
    throughput.set_title(f"{scenario}: calls/s (labels: ÷ fused)", fontsize="medium")
    latency.set_title(f"{scenario}: p99 latency, ms", fontsize="medium")
    for panel in (throughput, latency):
        panel.set_xscale("log", base=2)
        panel.set_xticks(x, [str(value) for value in x])
        panel.minorticks_off()
        panel.set_xlabel("concurrency", fontsize="small")
        panel.set_ylim(bottom=0, top=panel.get_ylim()[1] * 1.1)
        panel.grid(alpha=0.3)


def _bars(
    panel: Axes, groups: list[str], before: tuple[str, list[float]], after: tuple[str, list[float]]
) -> None:
    """Two bars a scenario, labelled with the second's ratio to the first."""
    for offset, (label, values) in ((-0.2, before), (0.2, after)):
        panel.bar([group + offset for group in range(len(groups))], values, 0.4, label=label)
    tops = [max(pair) for pair in zip(before[1], after[1], strict=True)]
    for group, (first, second) in enumerate(zip(before[1], after[1], strict=True)):
        panel.annotate(
            f"x{second / first:.2f}" if first else "",
            (group, tops[group]),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize="x-small",
        )
    panel.set_xticks(range(len(groups)), groups, fontsize="small")
    panel.set_ylim(top=max(tops) * 1.35)  # room for the legend above the bars
    panel.legend(fontsize="x-small", loc="upper center", ncols=2)
    panel.grid(axis="y", alpha=0.3)


def _scale(p50: Axes, p99: Axes, scale: dict[str, Any]) -> None:
    names = list(scale["cases"])
    sizes = scale["sizes"]
    for panel, figure in ((p50, "p50_ms"), (p99, "p99_ms")):
        small, large = (
            (f"{sizes[size]:,} sessions", [scale["cases"][name][size][figure] for name in names])
            for size in ("small", "large")
        )
        _bars(panel, names, small, large)
        panel.set_title(f"Scale, concurrency 1: {figure[:3]} latency, ms", fontsize="medium")


def _workers(throughput: Axes, latency: Axes, workers: dict[str, Any]) -> None:
    names = list(workers)
    concurrency = ", ".join(sorted({str(case["concurrency"]) for case in workers.values()}))
    for panel, figure, title in (
        (throughput, "ops_per_s", "calls/s"),
        (latency, "p99_ms", "p99 latency, ms"),
    ):
        one, two = (
            (f"{count} worker{'s' * (count != '1')}", [workers[name][count][figure] for name in names])
            for count in ("1", "2")
        )
        _bars(panel, names, one, two)
        panel.set_title(f"Workers, concurrency {concurrency}: {title}", fontsize="medium")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("report", type=Path, help="a report's JSON (latest.json, reference.json)")
    parser.add_argument("picture", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    print(draw(json.loads(args.report.read_text()), args.picture))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
