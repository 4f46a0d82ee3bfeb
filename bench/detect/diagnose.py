#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""Whose fault it was: what vigil and three other client libraries report, and when, under
four injected faults.

The same two network namespaces, server (server.js, Node ws) and clients as run.py, one
client per library with its default settings apart from the heartbeat. Each run injects one
fault at a random moment a few heartbeat cycles after every client is connected:

  path    the path dies: every packet of every client's current flow is dropped (iptables, in
          the server's namespace). Right answer: network. A warning before the verdict is
          possible, as TCP retransmits the ping unanswered.
  peer    the peer process hangs: server.js is stopped with SIGSTOP; its kernel still
          acknowledges every segment. Right answer: peer_unresponsive.
  block   our own loop blocks: on each client's next ping the server sends the text message
          "block S", and the client's message handler blocks its loop for S seconds while
          the pong is on its way (for these two faults the server answers each ping 150 ms
          after it arrived, as a peer that far away would, so that the block begins before
          the pong is read). The peer is healthy: any verdict is a false one.
  stop    our own process is stopped: on each client's next ping (as the server sees it) the
          driver stops the client with SIGSTOP for S seconds, then SIGCONT. Any verdict is a
          false one.
For path and peer the server answers pings at once.

Per client and run it records what the application was told (the verdict, its reason and,
for vigil, its diagnosis), when (from the fault), and the first warning before it: vigil's
on_suspect, or on_stall for the last two faults; the others have no such event.

Needs what run.py needs (root, node with tests/peers/node_modules, Debian's
python3-websockets, python3-websocket and python3-matplotlib, the vigil client).

  sudo /usr/bin/python3 bench/detect/diagnose.py --build build-release
  /usr/bin/python3 bench/detect/diagnose.py --from-csv     # redraws the plot and the table
"""

import argparse
import collections
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as detect  # noqa: E402  (the namespaces, processes and statistics of run.py)

HERE = detect.HERE
REPO = detect.REPO
FAULTS = ("block", "stop", "path", "peer")   # "peer" last: its restart floods the server
EXPECTED = {"path": "network", "peer": "peer_unresponsive", "block": None, "stop": None}
PONG_DELAY_MS = 150

FIELDS = ["fault", "library", "config", "ping_interval_ms", "ping_timeout_ms", "block_s", "run",
          "expected", "verdict_ms", "reason", "diagnosis", "attribution", "warning",
          "warning_ms", "stall_late_ms"]


class Client:
    def __init__(self, library, config, port, argv, timeout):
        self.library, self.config, self.port, self.argv = library, config, port, argv
        self.timeout = timeout
        self.name = f"{library}-{config}"
        self.proc = None
        self.up = False
        self.connected_t = self.dead_t = -math.inf
        self.flow = None
        self.flow_t = -math.inf
        self.fault_t = None         # when this client's fault began (per client for block/stop)
        self.verdict = None         # the first disconnect after fault_t: (t, reason, diagnosis)
        self.suspects = []          # (t, diagnosis)
        self.stalls = []            # (t, late_ms)


def make_clients(args, build, interval, timeout):
    strict = min(timeout, round(interval - 0.001, 3))
    py = args.python
    specs = [
        ("vigil", "defaults", strict,
         [str(build / "bench" / "vigil-bench-detect-client"), "--ping-interval", str(interval),
          "--pong-timeout", str(strict)]),
        ("websockets", "defaults", timeout,
         [py, str(HERE / "websockets_client.py"), "--ping-interval", str(interval),
          "--ping-timeout", str(timeout)]),
        ("websocket-client", "defaults", strict,
         [py, str(HERE / "websocket_client.py"), "--ping-interval", str(interval),
          "--ping-timeout", str(strict)]),
        ("ws", "defaults", timeout,
         ["node", str(HERE / "ws_client.js"), "--ping-interval", str(interval),
          "--ping-timeout", str(timeout)]),
    ]
    out = []
    for n, (lib, cfg, t, argv) in enumerate(specs):
        if args.only and lib not in args.only:
            continue
        port = detect.BASE_PORT + n
        out.append(Client(lib, cfg, port, argv + [f"ws://{detect.SRV_IP}:{port}/"], t))
    return out


class Bench(detect.Bench):
    """run.py's bench (processes, event pump) with faults of its own."""

    def __init__(self, args, netns, clients, logdir, interval):
        super().__init__(args, netns, clients, logdir, interval)
        self.fault = None           # the fault in force, if any
        self.stop_armed = False     # "stop": stop each client on its next ping
        self.timers = []

    def start(self):
        super().start(server_args=("--pong-delay", "0"))

    def stop(self):
        for t in self.timers:
            t.cancel()
        for c in self.clients:
            if c.proc is not None:
                self.cont(c.proc.p.pid)
        if self.server is not None:
            self.cont(self.server.p.pid)
        for p in reversed(self.procs):
            p.stop()

    @staticmethod
    def cont(pid):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def on_server(self, ev):
        kind = ev.get("event")
        if kind == "listening":
            self.listening = True
        elif kind == "connected" and ev.get("remote_port"):
            # (A connection the client had given up on while the server was stopped arrives
            # with its socket already gone, and no remote port.)
            c = self.by_port[ev["port"]]
            c.flow, c.flow_t = ev["remote_port"], ev["t"]
        elif kind == "block_sent":
            c = self.by_port[ev["port"]]
            if ev["remote_port"] == c.flow and c.fault_t is None:
                c.fault_t = ev["t"]
        elif kind == "ping" and self.stop_armed:
            c = self.by_port[ev["port"]]
            if ev["remote_port"] == c.flow and c.fault_t is None:
                c.fault_t = time.monotonic()
                os.kill(c.proc.p.pid, signal.SIGSTOP)
                t = threading.Timer(self.args.block, self.cont, (c.proc.p.pid,))
                self.timers.append(t)
                t.start()
        elif kind == "exited":
            raise RuntimeError(f"the server exited; see {self.server.stderr_path}")

    def handle(self, who, ev, cut_active=False):
        if who == "server":
            return self.on_server(ev)
        c = self.by_name[who]
        kind, t = ev.get("event"), ev.get("t")
        if kind == "connected":
            c.up, c.connected_t = True, t
        elif kind == "disconnected":
            c.up, c.dead_t = False, t
            # Only the first one counts: a retry into the stopped server ends too, later.
            if c.fault_t is not None and c.verdict is None:
                c.verdict = (t, ev.get("reason", ""), ev.get("diagnosis", ""))
            if self.fault is None:
                detect.log(f"{c.name}: disconnected with no fault in force: {ev.get('reason')}")
        elif kind == "suspect":
            c.suspects.append((t, ev.get("diagnosis", "")))
        elif kind == "stall":
            c.stalls.append((t, ev.get("late_ms")))
        elif kind == "exited":
            raise RuntimeError(f"client {c.name} exited; see {self.logdir}/{c.name}.stderr")

    def settle(self, rng, interval):
        self.wait_for(self.all_up, 60, "every client to connect")
        self.pump(time.monotonic() + self.args.settle * interval + rng.uniform(0, interval))
        return self.all_up()

    def inject(self, fault, interval):
        """Starts the fault; returns when every client's outcome is in."""
        a = self.args
        for c in self.clients:
            c.fault_t, c.verdict, c.suspects, c.stalls = None, None, [], []
        self.fault = fault
        t0 = time.monotonic()
        if fault in ("path", "peer"):
            if fault == "path":
                self.netns.cut([(c.port, c.flow) for c in self.clients])
            else:
                os.kill(self.server.p.pid, signal.SIGSTOP)
            for c in self.clients:
                c.fault_t = t0
            self.pump(t0 + a.cap, done=lambda: all(c.verdict for c in self.clients))
            if fault == "path":
                self.netns.restore()
            else:
                self.cont(self.server.p.pid)
        else:
            if fault == "block":
                self.server.send(f"block {a.block:g}")
            else:
                self.stop_armed = True
            # Every client pings within an interval of silence; then watch for a verdict
            # until the block is over and two more heartbeat cycles have passed.
            self.pump(t0 + 3 * interval, done=lambda: all(c.fault_t for c in self.clients))
            self.stop_armed = False
            last = max((c.fault_t for c in self.clients if c.fault_t), default=t0)
            self.pump(last + a.block + 2 * interval + 1)
        self.fault = None
        # Late stragglers: every client back before the next run.
        self.wait_for(self.all_up, 60, "every client to reconnect")

    def rows(self, fault, run, interval):
        out = []
        for c in self.clients:
            t0 = c.fault_t
            verdict = c.verdict is not None
            v_t, v_reason, v_diag = c.verdict or (None, "", "")
            expected = EXPECTED[fault]
            if t0 is None:
                attribution = "not triggered"
            elif expected is None:
                attribution = "false verdict" if verdict else "no verdict"
            elif not verdict:
                attribution = "missed"
            elif not v_diag:
                attribution = "none given"
            else:
                attribution = "correct" if v_diag == expected else "wrong"
            warning, warning_t = "", None
            if t0 is not None and fault in ("path", "peer") and c.suspects:
                warning, warning_t = f"suspect {c.suspects[0][1]}", c.suspects[0][0]
            late = ""
            if t0 is not None and fault in ("block", "stop") and c.stalls:
                warning, warning_t = "stall", c.stalls[0][0]
                late = max(s[1] for s in c.stalls)
            out.append({
                "fault": fault, "library": c.library, "config": c.config,
                "ping_interval_ms": round(interval * 1000),
                "ping_timeout_ms": round(c.timeout * 1000),
                "block_s": f"{self.args.block:g}", "run": run,
                "expected": expected or "no verdict",
                "verdict_ms": round((v_t - t0) * 1000, 1) if verdict else "",
                "reason": v_reason, "diagnosis": v_diag,
                "attribution": attribution, "warning": warning,
                "warning_ms": round((warning_t - t0) * 1000, 1) if warning_t else "",
                "stall_late_ms": late,
            })
        return out


# ---------------------------------------------------------------------------------------
# Table and plot


def short_reason(reason):
    reason = reason.split(";")[0]
    return reason if len(reason) <= 80 else reason[:77] + "..."


def table(rows):
    lines = []
    for (fault,), frows in detect.groups(rows, ("fault",)).items():
        g = detect.groups(frows)
        r0 = frows[0]
        n = max(len(rs) for rs in g.values())
        expected = r0["expected"]
        if fault in ("path", "peer"):
            lines += [f"**{fault}** ({n} runs; right answer: `{expected}`), times from the fault:", "",
                      "| library | verdicts | attribution | what it said | first warning, median"
                      " | verdict, median | max |",
                      "|---|--:|---|---|--:|--:|--:|"]
        else:
            lines += [f"**{fault}** ({n} runs, {r0['block_s']} s; a healthy peer, so the right answer"
                      " is no verdict):", "",
                      "| library | false verdicts | what it said | stall reported | lateness, median |",
                      "|---|--:|---|--:|--:|"]
        for (lib, _cfg), rs in g.items():
            ran = [r for r in rs if r["attribution"] != "not triggered"]
            said = collections.Counter(
                (r["diagnosis"] or short_reason(r["reason"])) for r in ran if r["verdict_ms"] != "")
            said_txt = ", ".join(f"{k} ({v})" for k, v in said.most_common(2)) or "-"
            if fault in ("path", "peer"):
                verdicts = [detect.num(r["verdict_ms"]) for r in ran if r["verdict_ms"] != ""]
                correct = sum(r["attribution"] == "correct" for r in ran)
                warn = [detect.num(r["warning_ms"]) if r["warning_ms"] != "" else detect.num(r["verdict_ms"])
                        for r in ran if r["verdict_ms"] != ""]
                has_warning = any(r["warning_ms"] != "" for r in ran)
                cells = [lib, f"{len(verdicts)} of {len(ran)}", f"{correct} of {len(ran)} correct",
                         said_txt,
                         detect.ms(detect.percentile(warn, 50)) + ("" if has_warning else " (the verdict)"),
                         detect.ms(detect.percentile(verdicts, 50)),
                         detect.ms(max(verdicts)) if verdicts else "-"]
            else:
                false = sum(r["attribution"] == "false verdict" for r in ran)
                stalls = [float(r["stall_late_ms"]) for r in ran if r["stall_late_ms"] != ""]
                cells = [lib, f"{false} of {len(ran)}", said_txt,
                         f"{len(stalls)} of {len(ran)}" if lib == "vigil" else "no such event",
                         detect.ms(detect.percentile(stalls, 50)) if stalls else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_fault = detect.groups(rows, ("fault",))
    libs = list(dict.fromkeys(r["library"] for r in rows))
    colors = {lib: ("#1f77b4" if lib == "vigil" else "#7f7f7f") for lib in libs}
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    rng = random.Random(1)
    for ax, fault in zip(axes[:2], ("path", "peer")):
        frows = by_fault.get((fault,), [])
        labels = []
        for k, lib in enumerate(libs):
            rs = [r for r in frows if r["library"] == lib and r["verdict_ms"] != ""]
            ys = [detect.num(r["verdict_ms"]) / 1000 for r in rs]
            ws = [detect.num(r["warning_ms"]) / 1000 for r in rs if r["warning_ms"] != ""]
            ax.scatter([k + rng.uniform(-0.12, 0.12) for _ in ys], ys, s=14, color=colors[lib],
                       alpha=0.7, zorder=3, label="verdict" if k == 0 else None)
            if ws:
                ax.scatter([k + rng.uniform(-0.12, 0.12) for _ in ws], ws, s=18, marker="^",
                           color="#2ca02c", alpha=0.8, zorder=3, label="first warning (suspect)")
            ran = [r for r in frows if r["library"] == lib and r["attribution"] != "not triggered"]
            correct = sum(r["attribution"] == "correct" for r in ran)
            labels.append(f"{lib}\n{correct}/{len(ran)} attributed")
        ax.set_xticks(range(len(libs)))
        ax.set_xticklabels(labels, fontsize=8)
        if any(r["verdict_ms"] != "" for r in frows):
            ax.set_yscale("log")
            ticks = [0.2, 0.5, 1, 2, 5, 10, 20, 50]
            ax.set_yticks(ticks)
            ax.set_yticklabels([f"{x:g}" for x in ticks])
            ax.minorticks_off()
        ax.set_ylabel("seconds from the fault (log scale)")
        expected = EXPECTED[fault]
        ax.set_title(f"{fault}: verdict and warning (right answer: {expected})", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        if frows:
            ax.legend(fontsize=8, loc="lower right")
    ax = axes[2]
    width = 0.38
    for j, fault in enumerate(("block", "stop")):
        frows = by_fault.get((fault,), [])
        vals, ns = [], []
        for lib in libs:
            ran = [r for r in frows if r["library"] == lib and r["attribution"] != "not triggered"]
            vals.append(sum(r["attribution"] == "false verdict" for r in ran))
            ns.append(len(ran))
        xs = [k + (j - 0.5) * width for k in range(len(libs))]
        ax.bar(xs, vals, width, color=["#d62728", "#ff7f0e"][j], label=f"{fault}")
        for x, v, n in zip(xs, vals, ns):
            ax.text(x, v, f"{v}/{n}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(libs)))
    ax.set_xticklabels(libs, fontsize=8)
    ax.set_ylabel("runs ending in a verdict")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title("false verdicts: our own loop blocked / process stopped\n(the peer answered every ping)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("Whose fault it was: what each client library reports under four injected faults")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------


def measure(args, build, netns, logdir, rng):
    interval, timeout = args.interval, args.timeout
    clients = make_clients(args, build, interval, timeout)
    bench = Bench(args, netns, clients, logdir, interval)
    rows = []
    try:
        bench.start()
        for fault in args.faults:
            # Set before the settling time, so that no pong of the old setting is pending.
            bench.server.send(f"pong-delay {PONG_DELAY_MS if fault in ('block', 'stop') else 0}")
            run = 0
            while run < args.runs:
                if not bench.settle(rng, interval):
                    detect.log(f"{fault} run {run + 1}: a client reconnected while settling; again")
                    continue
                run += 1
                bench.inject(fault, interval)
                got = bench.rows(fault, run, interval)
                detect.log(f"{fault} run {run}: " + ", ".join(
                    f"{r['library']} {r['attribution']}"
                    f"{' ' + str(r['verdict_ms']) if r['verdict_ms'] != '' else ''}" for r in got))
                rows.extend(got)
    finally:
        bench.stop()
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20, help="runs per fault (default 20)")
    p.add_argument("--faults", type=lambda s: s.split(","), default=list(FAULTS),
                   help="comma-separated, from block, stop, path, peer (default: all)")
    p.add_argument("--interval", type=float, default=1.0, help="ping interval, s (default 1)")
    p.add_argument("--timeout", type=float, default=0.5, help="pong timeout, s (default 0.5)")
    p.add_argument("--block", type=float, default=1.5,
                   help="how long the loop is blocked or the process stopped, s (default 1.5)")
    p.add_argument("--settle", type=float, default=3,
                   help="heartbeat cycles between connecting and the random fault point")
    p.add_argument("--cap", type=float, default=60, help="longest wait for one verdict, s")
    p.add_argument("--seed", type=int, default=None, help="seed for the fault moments")
    detect.common_args(p, "diagnose")
    args = p.parse_args()
    if detect.redraw(args, plot, table):
        return
    bad = [f for f in args.faults if f not in FAULTS]
    if bad:
        sys.exit(f"diagnose.py: --faults: unknown {', '.join(bad)} (known: {', '.join(FAULTS)})")
    if not (0 < args.timeout < args.interval) or args.block <= args.timeout:
        sys.exit("diagnose.py: need 0 < --timeout < --interval and --block > --timeout")
    build = detect.resolve_build(args)
    rng = random.Random(args.seed)

    def body(netns, logdir):
        detect.log(f"load average {os.getloadavg()[0]:.1f}")
        return measure(args, build, netns, logdir, rng)

    rows = detect.in_namespaces("vigil-diagnose-", body)
    detect.write_results(args, rows, FIELDS, plot, table)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
