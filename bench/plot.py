#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""Draws the benchmark figures from the CSVs the benchmarks write.

usage: plot.py [echo.csv [echo.png]]           vigil-bench-echo --csv (defaults:
                                               results/echo.csv, results/echo.png)
       plot.py --storm [storm.csv [storm.png]]  vigil-bench-storm --csv (defaults:
                                               results/storm.csv, results/storm.png)
       plot.py --limiter [limiter.csv [limiter.png]]
                                               vigil-bench-storm --attempts-csv (defaults:
                                               results/limiter.csv, results/limiter.png)
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


def storm(args):
    src = Path(args[0]) if len(args) > 0 else HERE / "results" / "storm.csv"
    dst = Path(args[1]) if len(args) > 1 else HERE / "results" / "storm.png"
    times = defaultdict(list)
    rounds = defaultdict(set)
    server_back = defaultdict(list)
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            policy = row["policy"]
            times[policy].append(float(row["reconnect_ms"]))
            if row["round"] not in rounds[policy]:
                rounds[policy].add(row["round"])
                server_back[policy].append(float(row["server_back_ms"]))
    labels = {"full_jitter": "exponential, full jitter (default)", "constant": "constant 500 ms, no jitter"}
    colors = {"full_jitter": "#2b6cb0", "constant": "#c05621"}
    bin_ms = 100
    end = max(max(v) for v in times.values())
    edges = [i * bin_ms for i in range(int(end // bin_ms) + 2)]

    fig, axes = plt.subplots(len(times), 1, figsize=(9, 2.6 * len(times)), sharex=True)
    if len(times) == 1:
        axes = [axes]
    for ax, (policy, values) in zip(axes, times.items()):
        n_rounds = len(rounds[policy])
        # Pooled over the rounds, scaled to one restart.
        counts, _, _ = ax.hist(values, bins=edges, weights=[1.0 / n_rounds] * len(values),
                               color=colors.get(policy, "#555555"))
        peak = max(counts)
        back = statistics.median(server_back[policy])
        ax.axvline(back, color="black", linestyle=":", linewidth=1)
        ax.text(back, peak, " new server listening", fontsize=8, va="top")
        per_round = len(values) // n_rounds
        ax.set_title(
            f"{labels.get(policy, policy)}: {per_round} clients, mean of {n_rounds} restarts; "
            f"all back after {max(values) / 1000:.2f} s (slowest round)",
            fontsize=9,
        )
        ax.set_ylabel(f"reconnects per {bin_ms} ms")
    axes[-1].set_xlabel("time since the server went away (ms)")
    fig.suptitle("reconnect storm: when each client is back after a server restart", fontsize=10)
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


def limiter(args):
    """Connection attempts in the sliding window of the limiter's length, over time, for the
    first round of each policy: what a server that counts connects per window sees."""
    src = Path(args[0]) if len(args) > 0 else HERE / "results" / "limiter.csv"
    dst = Path(args[1]) if len(args) > 1 else HERE / "results" / "limiter.png"
    starts = defaultdict(list)
    limit = window = None
    with open(src, newline="") as f:
        for row in csv.DictReader(f):
            if row["round"] == "0":
                starts[row["policy"]].append(float(row["attempt_ms"]))
            limit, window = int(row["limit_connects"]), float(row["limit_window_ms"])
    labels = {
        "full_jitter": "exponential, full jitter (default)",
        "constant": "constant 500 ms, no jitter",
        "limited": "full jitter + shared rate_limiter",
    }
    colors = {"full_jitter": "#2b6cb0", "constant": "#c05621", "limited": "#2f855a"}
    fig, ax = plt.subplots(figsize=(9, 3.8))
    step = 10.0
    end = max(max(times) for times in starts.values()) + window
    for policy, times in starts.items():
        times.sort()
        xs, ys = [], []
        lo = hi = 0
        t = 0.0
        while t <= end:
            while hi < len(times) and times[hi] <= t:
                hi += 1
            while lo < hi and times[lo] <= t - window:
                lo += 1
            xs.append(t)
            ys.append(hi - lo)
            t += step
        ax.plot(xs, ys, color=colors.get(policy, "#555555"),
                label=f"{labels.get(policy, policy)}: max {max(ys)}")
    ax.axhline(limit, color="black", linestyle=":", linewidth=1)
    ax.text(0, limit, f" limit: {limit} per {window / 1000:g} s", fontsize=8, va="bottom")
    ax.set_xlabel("time since the server went away (ms)")
    ax.set_ylabel(f"attempts in the last {window / 1000:g} s")
    ax.set_title("connection attempts of every client together after a server restart (round 0)",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    dst.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--storm":
        storm(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--limiter":
        limiter(sys.argv[2:])
        return
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
