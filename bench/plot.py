#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""Draws bench/results/echo.png from the CSV that vigil-bench-echo --csv writes.

usage: plot.py [echo.csv [echo.png]]   (defaults: results/echo.csv, results/echo.png
                                         next to this script)
"""

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = {64: 0.95, 65536: 0.98}
MODES = [("round_trip", "echo round trips"), ("bulk", "bulk throughput")]


def size_label(size):
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def load(path):
    runs = defaultdict(list)
    units = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["mode"], int(row["size_bytes"]), row["client"])
            runs[key].append(float(row["value"]))
            units[row["mode"]] = row["unit"]
    return {k: statistics.median(v) for k, v in runs.items()}, units


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "echo.csv"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "results" / "echo.png"
    medians, units = load(src)
    sizes = sorted({size for (_, size, _) in medians})

    fig, axes = plt.subplots(1, len(MODES) * len(sizes), figsize=(3.2 * len(MODES) * len(sizes), 4))
    panel = 0
    for mode, title in MODES:
        for size in sizes:
            ax = axes[panel]
            panel += 1
            raw = medians.get((mode, size, "raw"), 0.0)
            vig = medians.get((mode, size, "vigil"), 0.0)
            bars = ax.bar(["raw Beast", "vigil"], [raw, vig], color=["#8c8c8c", "#2b6cb0"])
            ax.bar_label(bars, fmt="%.4g", fontsize=8)
            ratio = vig / raw if raw else float("nan")
            target = TARGETS.get(size)
            verdict = "" if target is None else (" ok" if ratio >= target else " below target")
            ax.set_title(f"{title}, {size_label(size)}\nvigil/raw = {ratio:.3f}{verdict}", fontsize=9)
            ax.set_ylabel(units.get(mode, ""))
            ax.margins(y=0.15)
    fig.suptitle("vigil::session vs raw Beast, same in-process echo server (medians)", fontsize=10)
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
