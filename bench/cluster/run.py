#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""One vigil-serve node against three, fanned out through one Redis, with the same total
clients: broadcast latency to every client (p50/p99 per delivery, and per message until the
last client had it), deliveries per second, Redis's and the nodes' CPU during the broadcasts,
and, on three nodes, the recovery after one node is killed with SIGKILL (time until all its
clients are back on the survivors, the most handshakes in any 100 ms).

    /usr/bin/python3 bench/cluster/run.py --build build [--clients N] [--messages M]
        [--rates R1,R2] [--csv F] [--png F]

Every node runs with --fanout, so the Redis hop is in both configurations. Standard library
only (plus matplotlib for the plot, when installed). Prints a markdown table.
"""

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Proc:
    """A child whose stdout JSON lines are read by a thread (so it never blocks on a pipe)."""

    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            with self.cv:
                self.lines.append(j)
                self.cv.notify_all()

    def wait(self, key, value, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for j in self.lines:
                    if j.get(key) == value:
                        self.lines.remove(j)
                        return j
                left = deadline - time.monotonic()
                if left <= 0 or self.p.poll() is not None and not self.lines:
                    raise RuntimeError(f"no {key}={value} from {self.p.args[0]} within {timeout} s")
                self.cv.wait(min(left, 0.5))

    def kill(self, sig=signal.SIGKILL):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()


def run_config(args, nodes_n, rate, redis_pid, redis_port, recovery):
    nodes = []
    try:
        for _ in range(nodes_n):
            n = Proc([os.path.join(args.build, "examples", "vigil-serve"), "--mode", "broadcast",
                      "--fanout", f"redis://127.0.0.1:{redis_port}/bench", "--max-connections", "100000"])
            nodes.append(n)
        ports = [n.wait("event", "listening", 10)["port"] for n in nodes]
        for n in nodes:
            n.wait("event", "fanout_up", 10)
        argv = [os.path.join(args.build, "bench", "cluster", "vigil-bench-cluster"), "--clients", str(args.clients),
                "--messages", str(args.messages), "--rate", str(rate)]
        for p in ports:
            argv += ["--url", f"ws://127.0.0.1:{p}/"]
        if recovery:
            argv.append("--recovery")
        driver = Proc(argv)
        try:
            connected = driver.wait("phase", "connected", 180)
            driver.wait("phase", "broadcast_start", 30)
            cpu0 = [cpu_seconds(redis_pid)] + [cpu_seconds(n.p.pid) for n in nodes]
            t0 = time.monotonic()
            b = driver.wait("phase", "broadcast", 120)
            wall = time.monotonic() - t0
            cpu1 = [cpu_seconds(redis_pid)] + [cpu_seconds(n.p.pid) for n in nodes]
            r = {"nodes": nodes_n, "clients": args.clients, "rate": rate, "connect_s": connected["seconds"], **{
                k: b[k] for k in ("p50_ms", "p99_ms", "all_p50_ms", "all_p99_ms", "deliveries_per_s", "lost")}}
            r["redis_cpu_pct"] = 100 * (cpu1[0] - cpu0[0]) / wall
            r["nodes_cpu_pct"] = 100 * sum(cpu1[1:]) - 100 * sum(cpu0[1:])
            r["nodes_cpu_pct"] /= wall
            if recovery:
                driver.wait("phase", "ready_to_kill", 30)
                nodes[0].kill()
                rec = driver.wait("phase", "recovery", 120)
                r.update({"recovery_s": rec["seconds"], "reconnected": rec["reconnected"],
                          "peak_per_100ms": rec["peak_per_100ms"], "all_up": rec["all_up"]})
            return r
        finally:
            driver.kill(signal.SIGTERM)
    finally:
        for n in nodes:
            n.kill(signal.SIGTERM)


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib not installed: no {path})")
        return
    labels = [f"{r['nodes']} node{'s' if r['nodes'] > 1 else ''}, {r['rate']:.0f}/s" +
              (" + kill" if "recovery_s" in r else "") for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.set_yscale("log")
    width = 0.2
    keys = [("p50_ms", "delivery p50"), ("p99_ms", "delivery p99"), ("all_p50_ms", "all clients p50"),
            ("all_p99_ms", "all clients p99")]
    for i, (k, name) in enumerate(keys):
        ax.bar([x + i * width for x in range(len(rows))], [r[k] for r in rows], width, label=name)
    ax.set_xticks([x + 1.5 * width for x in range(len(rows))])
    ax.set_xticklabels(labels)
    ax.set_ylabel("ms from publish")
    ax.set_title(f"Broadcast to {rows[0]['clients']} clients through Redis")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--clients", type=int, default=3000, help="total, split over the nodes")
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--rates", default="10,100",
                    help="broadcasts per second, comma-separated: a rate the machine keeps up with, and one it "
                         "does not (what is delivered then is the capacity)")
    ap.add_argument("--csv", default=os.path.join(ROOT, "bench", "results", "cluster.csv"))
    ap.add_argument("--png", default=os.path.join(ROOT, "bench", "results", "cluster.png"))
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("SKIP: redis-server is not installed (Debian: redis-server)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        time.sleep(0.5)
        rates = [float(x) for x in args.rates.split(",")]
        plan = [(n, rate, False) for rate in rates for n in (1, 3)] + [(3, rates[0], True)]
        for nodes_n, rate, recovery in plan:
            rows.append(run_config(args, nodes_n, rate, redis.pid, redis_port, recovery))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        redis.kill()
        redis.wait()
    print(f"\n| nodes | clients | broadcasts/s | delivery p50 / p99 (ms) | all clients p50 / p99 (ms) | deliveries/s | lost "
          f"| Redis CPU | nodes' CPU | recovery |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        rec = "" if "recovery_s" not in r else \
            f"{r['reconnected']} back in {r['recovery_s']:.2f} s, peak {r['peak_per_100ms']} handshakes/100 ms"
        print(f"| {r['nodes']} | {r['clients']} | {r['rate']:.0f} | {r['p50_ms']:.1f} / {r['p99_ms']:.1f} | "
              f"{r['all_p50_ms']:.1f} / {r['all_p99_ms']:.1f} | {r['deliveries_per_s']:.0f} | {r['lost']} | "
              f"{r['redis_cpu_pct']:.1f}% | {r['nodes_cpu_pct']:.0f}% | {rec} |")
    keys = sorted({k for r in rows for k in r})
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.csv}")
    plot(rows, args.png)


if __name__ == "__main__":
    main()
