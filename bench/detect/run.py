#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""Detection latency on a blackholed connection: vigil against three other client libraries.

One server (server.js, Node ws) runs in network namespace A, every client in namespace B,
linked by a veth pair. All clients are connected at once, each to its own server port. At a
random moment the driver cuts every client's current TCP flow in the same iptables
transaction (DROP both directions in A, matched on the flow's ports): from then on nothing
arrives and nothing is refused, as when a NAT or load balancer silently forgets a flow. New
connections still pass, so a client that gives up on the dead flow can reconnect at once.

Measured per client and run, from the cut:
  detect_ms     until the application is told the connection is dead (see the client
                scripts for what that means in each library);
  reconnect_ms  until the next WebSocket handshake completed.
And once, on a busy connection (the server sends a message every 50 ms for --busy seconds),
how many pings each client sent (counted by the server).

Needs root (namespaces, iptables), node with tests/peers/node_modules (npm ci --prefix
tests/peers), Debian's python3-websockets, python3-websocket and python3-matplotlib, and the
vigil client (ninja -C BUILD bench/vigil-bench-detect-client).

  sudo /usr/bin/python3 bench/detect/run.py --build build-release
"""

import argparse
import csv
import json
import math
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SRV_IP = "10.203.0.1"
CLI_IP = "10.203.0.2"
BASE_PORT = 9301
BUSY_PERIOD_MS = 50

FIELDS = ["setting", "library", "config", "ping_interval_ms", "ping_timeout_ms", "close_timeout",
          "run", "cut_offset_ms", "cut_call_ms", "since_last_ping_ms", "detect_ms", "closed_ms",
          "reconnect_ms", "reason", "busy_s", "pings_busy"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd, input=None, check=True):
    return subprocess.run(cmd, input=input, text=True, check=check,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# ---------------------------------------------------------------------------------------
# Network namespaces


class Netns:
    def __init__(self):
        tag = os.getpid() % 100000
        self.srv = f"vdet-srv-{tag}"
        self.cli = f"vdet-cli-{tag}"
        self.veth_srv = f"vds{tag}"
        self.veth_cli = f"vdc{tag}"
        self.created = False

    def setup(self):
        self.teardown()
        self.created = True
        sh("ip", "netns", "add", self.srv)
        sh("ip", "netns", "add", self.cli)
        sh("ip", "link", "add", self.veth_srv, "netns", self.srv, "type", "veth",
           "peer", "name", self.veth_cli, "netns", self.cli)
        for ns, dev, ip in ((self.srv, self.veth_srv, SRV_IP), (self.cli, self.veth_cli, CLI_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def teardown(self):
        # Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in (self.srv, self.cli):
            sh("ip", "netns", "del", ns, check=False)

    def exec_prefix(self, ns):
        return ["ip", "netns", "exec", ns]

    def cut(self, flows):
        """Drops every packet of the given (server port, client port) flows, in one commit."""
        lines = ["*filter"]
        for sport, cport in flows:
            lines.append(f"-A INPUT -p tcp -s {CLI_IP} --sport {cport} --dport {sport} -j DROP")
            lines.append(f"-A OUTPUT -p tcp -d {CLI_IP} --dport {cport} --sport {sport} -j DROP")
        lines.append("COMMIT")
        sh(*self.exec_prefix(self.srv), "iptables-restore", "--noflush",
           input="\n".join(lines) + "\n")

    def restore(self):
        sh(*self.exec_prefix(self.srv), "iptables", "-F", "INPUT")
        sh(*self.exec_prefix(self.srv), "iptables", "-F", "OUTPUT")


# ---------------------------------------------------------------------------------------
# Processes that speak JSON lines


class Proc:
    def __init__(self, name, argv, events, logdir, env=None, stdin=False):
        self.name = name
        self.stderr_path = Path(logdir) / f"{name}.stderr"
        self.stderr = open(self.stderr_path, "w")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  text=True, env=env, start_new_session=True)
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events):
        for line in self.p.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                events.put((self.name, json.loads(line)))
            except json.JSONDecodeError:
                events.put((self.name, {"event": "garbage", "line": line}))
        events.put((self.name, {"event": "exited", "t": time.monotonic()}))

    def send(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def stop(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=3)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait()
        self.stderr.close()


# ---------------------------------------------------------------------------------------
# The clients under test


class Client:
    def __init__(self, library, config, port, argv, timeout, close_timeout):
        self.library = library
        self.config = config
        self.port = port
        self.argv = argv
        self.timeout = timeout          # the pong timeout it was given, in seconds
        self.close_timeout = close_timeout
        self.name = f"{library}-{config}"
        self.up = False
        self.connected_t = -math.inf
        self.dead_t = -math.inf
        self.closed_t = -math.inf
        self.reason = ""
        self.flow = None                # the client port of its current TCP flow
        self.flow_t = -math.inf         # when the server saw that flow connect
        self.last_ping_t = -math.inf    # last ping the server got on that flow
        self.unexpected = 0             # disconnects with no cut in force
        self.proc = None                # its process, once started


def fmt_s(x):
    return f"{x:g} s"


def make_clients(args, build, i, t):
    c = args.tuned_close_timeout
    # vigil and websocket-client require the pong timeout to be shorter than the interval:
    # they get the nearest millisecond below it.
    strict = min(t, round(i - 0.001, 3))
    py = args.python
    vigil = str(build / "bench" / "vigil-bench-detect-client")
    url = lambda port: f"ws://{SRV_IP}:{port}/"
    specs = [
        ("vigil", "defaults", strict, "5 s (default)",
         [vigil, "--ping-interval", str(i), "--pong-timeout", str(strict)]),
        ("vigil", "tuned", strict, fmt_s(c),
         [vigil, "--ping-interval", str(i), "--pong-timeout", str(strict), "--close-timeout", str(c)]),
        ("websockets", "defaults", t, "10 s (default)",
         [py, str(HERE / "websockets_client.py"), "--ping-interval", str(i), "--ping-timeout", str(t)]),
        ("websockets", "tuned", t, fmt_s(c),
         [py, str(HERE / "websockets_client.py"), "--ping-interval", str(i), "--ping-timeout", str(t),
          "--close-timeout", str(c)]),
        ("websocket-client", "defaults", strict, "3 s (fixed)",
         [py, str(HERE / "websocket_client.py"), "--ping-interval", str(i), "--ping-timeout", str(strict)]),
        ("ws", "defaults", t, "none (terminate)",
         ["node", str(HERE / "ws_client.js"), "--ping-interval", str(i), "--ping-timeout", str(t)]),
    ]
    clients = []
    for n, (lib, cfg, timeout, close, argv) in enumerate(specs):
        if args.only and lib not in args.only:
            continue
        port = BASE_PORT + n
        clients.append(Client(lib, cfg, port, argv + [url(port)], timeout, close))
    return clients


# ---------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, args, netns, clients, logdir, interval):
        self.args = args
        self.interval = interval
        self.netns = netns
        self.clients = clients
        self.by_name = {c.name: c for c in clients}
        self.by_port = {c.port: c for c in clients}
        self.events = queue.Queue()
        self.logdir = logdir
        self.procs = []
        self.server = None
        self.listening = False
        self.busy_done = None

    def start(self, server_args=()):
        env = dict(os.environ)
        env["NODE_PATH"] = str(REPO / "tests" / "peers" / "node_modules")
        ports = ",".join(str(c.port) for c in self.clients)
        self.server = Proc("server", self.netns.exec_prefix(self.netns.srv) +
                           ["node", str(HERE / "server.js"), "--host", SRV_IP, "--ports", ports,
                            *server_args],
                           self.events, self.logdir, env=env, stdin=True)
        self.procs.append(self.server)
        self.wait_for(lambda: self.listening, 10, "the server to listen")
        for c in self.clients:
            c.proc = Proc(c.name, self.netns.exec_prefix(self.netns.cli) + c.argv,
                          self.events, self.logdir, env=env)
            self.procs.append(c.proc)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()

    def handle(self, who, ev, cut_active):
        kind = ev.get("event")
        t = ev.get("t")
        if who == "server":
            if kind == "listening":
                self.listening = True
            elif kind == "connected":
                c = self.by_port[ev["port"]]
                c.flow, c.flow_t, c.last_ping_t = ev["remote_port"], t, -math.inf
            elif kind == "ping":
                c = self.by_port[ev["port"]]
                if ev["remote_port"] == c.flow:
                    c.last_ping_t = t
            elif kind == "busy_done":
                self.busy_done = ev
            elif kind == "exited":
                raise RuntimeError(f"the server exited; see {self.server.stderr_path}")
            return
        c = self.by_name[who]
        if kind == "connected":
            c.up, c.connected_t = True, t
        elif kind == "disconnected":
            c.up, c.dead_t, c.reason = False, t, ev.get("reason", "")
            if not cut_active:
                c.unexpected += 1
                log(f"{c.name}: disconnected without a cut: {c.reason}")
        elif kind == "closed":
            c.closed_t = t
        elif kind == "exited":
            raise RuntimeError(f"client {c.name} exited; see {self.logdir}/{c.name}.stderr")

    def pump(self, until, cut_active=False, done=None):
        """Handles events until the monotonic time `until`, or until done() holds."""
        while True:
            if done is not None and done():
                return True
            left = until - time.monotonic()
            if left <= 0:
                return done() if done is not None else True
            try:
                who, ev = self.events.get(timeout=min(left, 0.05))
            except queue.Empty:
                continue
            self.handle(who, ev, cut_active)

    def wait_for(self, cond, seconds, what):
        if not self.pump(time.monotonic() + seconds, done=cond):
            raise RuntimeError(f"timed out after {seconds} s waiting for {what}")

    def all_up(self):
        # Up on the client's side, and the server has seen that same connection arrive.
        return all(c.up and c.flow_t > c.dead_t for c in self.clients)

    def busy(self, seconds):
        self.wait_for(self.all_up, 30, "every client to connect")
        before = {c.name: c.unexpected for c in self.clients}
        self.busy_done = None
        self.server.send(f"busy {seconds}")
        self.wait_for(lambda: self.busy_done is not None, seconds + 15, "the busy phase to end")
        for c in self.clients:
            if c.unexpected != before[c.name]:
                raise RuntimeError(f"{c.name} lost its connection during the busy phase")
        return {c.name: self.busy_done["pings"][str(c.port)] for c in self.clients}

    def one_run(self, run, rng):
        a = self.args
        self.wait_for(self.all_up, 30, "every client to connect")
        # A few heartbeat cycles first, then a random point within one cycle.
        offset = rng.uniform(0, self.interval)
        start = time.monotonic()
        self.pump(start + a.settle * self.interval + offset)
        if not self.all_up():
            log(f"run {run}: a client reconnected during the settle time; starting over")
            return None
        flows = [(c.port, c.flow) for c in self.clients]
        since_ping = {c.name: c.last_ping_t for c in self.clients}
        t_cut = time.monotonic()
        self.netns.cut(flows)
        cut_call = time.monotonic() - t_cut

        def finished():
            return all(c.dead_t > t_cut and c.connected_t > c.dead_t for c in self.clients)

        self.pump(t_cut + a.cap, cut_active=True, done=finished)
        self.netns.restore()
        rows = []
        for c in self.clients:
            detected = c.dead_t > t_cut
            back = detected and c.connected_t > c.dead_t
            closed = c.closed_t if c.closed_t > t_cut else c.dead_t
            rows.append({
                "library": c.library,
                "config": c.config,
                "ping_interval_ms": round(self.interval * 1000),
                "ping_timeout_ms": round(c.timeout * 1000),
                "close_timeout": c.close_timeout,
                "run": run,
                "cut_offset_ms": round(offset * 1000, 1),
                "cut_call_ms": round(cut_call * 1000, 1),
                "since_last_ping_ms": round((t_cut - since_ping[c.name]) * 1000, 1)
                if since_ping[c.name] > -math.inf else "",
                "detect_ms": round((c.dead_t - t_cut) * 1000, 1) if detected else "",
                "closed_ms": round((closed - t_cut) * 1000, 1) if detected else "",
                "reconnect_ms": round((c.connected_t - t_cut) * 1000, 1) if back else "",
                "reason": c.reason if detected else f"not detected within {a.cap} s",
            })
        summary = ", ".join(f"{r['library']}/{r['config']} {r['detect_ms']}" for r in rows)
        log(f"run {run}: cut (took {cut_call * 1000:.1f} ms); detect ms: {summary}")
        return rows


# ---------------------------------------------------------------------------------------
# Figures


def percentile(values, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def groups(rows, key=("library", "config")):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in key), []).append(r)
    return out


def num(x):
    return float(x) if x not in ("", None) else math.nan


def ms(x):
    if math.isnan(x):
        return "-"
    return f"{x / 1000:.2f} s" if x >= 1000 else f"{x:.0f} ms"


def table(rows):
    lines = []
    for (setting,), srows in groups(rows, ("setting",)).items():
        g = groups(srows)
        n = max(len(rs) for rs in g.values())
        lines += [
            f"**Ping interval / pong timeout {setting}**, {n} cuts per client, times from the cut:",
            "",
            "| library | config | interval / timeout | close wait | detect median | p99 | max"
            " | reconnect median | p99 | max | pings, busy |",
            "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for (lib, cfg), rs in g.items():
            det = [num(r["detect_ms"]) for r in rs]
            rec = [num(r["reconnect_ms"]) for r in rs]
            missed = sum(math.isnan(d) for d in det)
            det_ok = [d for d in det if not math.isnan(d)]
            rec_ok = [d for d in rec if not math.isnan(d)]
            r0 = rs[0]
            settings = f"{int(r0['ping_interval_ms']) / 1000:g} s / {int(r0['ping_timeout_ms']) / 1000:g} s"
            pings = f"{r0['pings_busy']} in {r0['busy_s']} s" if r0.get("pings_busy", "") != "" else "-"
            worst = ms(max(det_ok)) if det_ok else ""
            if missed:
                worst += (", " if worst else "") + f"{missed} of {len(det)} not detected"
            cells = [lib, cfg, settings, r0["close_timeout"],
                     ms(percentile(det_ok, 50)), ms(percentile(det_ok, 99)), worst,
                     ms(percentile(rec_ok, 50)), ms(percentile(rec_ok, 99)),
                     ms(max(rec_ok)) if rec_ok else "-", pings]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_setting = groups(rows, ("setting",))
    fig, all_axes = plt.subplots(len(by_setting), 3, figsize=(17, 5.2 * len(by_setting)),
                                 gridspec_kw={"width_ratios": [3, 3, 2]}, squeeze=False)
    rng = random.Random(1)
    for axes, ((setting,), srows) in zip(all_axes, by_setting.items()):
        g = groups(srows)
        labels = [f"{lib.replace('-', '-' + chr(10))}\n{cfg}" for lib, cfg in g]
        colors = ["#1f77b4" if lib == "vigil" else "#7f7f7f" for lib, _ in g]
        det = [[num(r["detect_ms"]) / 1000 for r in rs if r["detect_ms"] != ""] for rs in g.values()]
        rec = [[num(r["reconnect_ms"]) / 1000 for r in rs if r["reconnect_ms"] != ""] for rs in g.values()]
        pings = [int(rs[0]["pings_busy"]) if rs[0].get("pings_busy", "") != "" else 0
                 for rs in g.values()]
        r0 = srows[0]
        interval = int(r0["ping_interval_ms"]) / 1000
        for ax, data, title in ((axes[0], det, "cut → application told the connection is dead"),
                                (axes[1], rec, "cut → reconnected (new flows pass at once)")):
            ax.boxplot([d if d else [math.nan] for d in data], labels=labels, whis=(0, 100),
                       widths=0.5, medianprops={"color": "black"})
            for k, ys in enumerate(data):
                xs = [k + 1 + rng.uniform(-0.15, 0.15) for _ in ys]
                ax.scatter(xs, ys, s=10, color=colors[k], alpha=0.7, zorder=3)
            ax.set_yscale("log")
            lo, hi = ax.get_ylim()
            ticks = [x for x in (0.2, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 30, 60) if lo <= x <= hi]
            ax.set_yticks(ticks)
            ax.set_yticklabels([f"{x:g}" for x in ticks])
            ax.minorticks_off()
            ax.set_ylabel("seconds (log scale)")
            ax.set_title(f"{setting}: {title}", fontsize=10)
            ax.grid(axis="y", which="both", alpha=0.3)
            ax.tick_params(axis="x", labelsize=8)
        vigil_t = [int(r["ping_timeout_ms"]) for r in srows if r["library"] == "vigil"]
        if vigil_t:
            bound = interval + min(vigil_t) / 1000
            axes[0].axhline(bound, color="#1f77b4", linestyle="--", linewidth=1,
                            label=f"vigil's bound, interval + timeout = {bound:g} s")
            axes[0].legend(loc="center left", fontsize=8)
        axes[2].bar(range(len(labels)), pings, color=colors)
        axes[2].set_xticks(range(len(labels)))
        axes[2].set_xticklabels(labels, fontsize=8)
        for k, v in enumerate(pings):
            axes[2].text(k, v, str(v), ha="center", va="bottom", fontsize=9)
        axes[2].set_title(f"{setting}: pings sent on a busy connection\n"
                          f"({r0.get('busy_s', '?')} s, a server message every {BUSY_PERIOD_MS} ms)",
                          fontsize=10)
    fig.suptitle("Detection on a blackholed connection (one server, every client cut at the same moment)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------


def preflight(args, build):
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces and iptables)")
    for tool in ("ip", "iptables", "iptables-restore", "node"):
        if shutil.which(tool) is None:
            missing.append(tool)
    if not (REPO / "tests" / "peers" / "node_modules" / "ws").is_dir():
        missing.append("tests/peers/node_modules/ws (npm ci --prefix tests/peers)")
    if subprocess.run([args.python, "-c", "import websockets, websocket"],
                      stderr=subprocess.DEVNULL).returncode != 0:
        missing.append(f"websockets and websocket-client for {args.python} "
                       "(apt-get install python3-websockets python3-websocket)")
    client = build / "bench" / "vigil-bench-detect-client"
    if (not args.only or "vigil" in args.only) and not os.access(client, os.X_OK):
        missing.append(f"{client} (ninja -C {build} bench/vigil-bench-detect-client)")
    if missing:
        sys.exit("run.py: missing: " + "; ".join(missing))



def parse_settings(text):
    out = []
    for part in text.split(","):
        try:
            i, t = (float(x) for x in part.split("/"))
        except ValueError:
            sys.exit(f"run.py: --settings: '{part}' is not INTERVAL/TIMEOUT in seconds")
        if not (0 < t <= i):
            sys.exit(f"run.py: --settings: '{part}': need 0 < timeout <= interval")
        out.append((i, t))
    return out


def measure(args, build, netns, logdir, interval, timeout, rng):
    setting = f"{interval:g} s / {timeout:g} s"
    clients = make_clients(args, build, interval, timeout)
    bench = Bench(args, netns, clients, logdir, interval)
    rows = []
    try:
        bench.start()
        log(f"{setting}: load average {os.getloadavg()[0]:.1f}; busy phase, {args.busy:g} s")
        pings = bench.busy(args.busy)
        log(f"{setting}: pings on the busy connection: " +
            ", ".join(f"{k} {v}" for k, v in pings.items()))
        run = 0
        while run < args.runs:
            got = bench.one_run(run + 1, rng)
            if got is None:
                continue
            run += 1
            for r in got:
                r["setting"] = setting
                r["busy_s"] = f"{args.busy:g}"
                r["pings_busy"] = pings[f"{r['library']}-{r['config']}"]
            rows.extend(got)
    finally:
        bench.stop()
    log(f"{setting}: done; load average {os.getloadavg()[0]:.1f}")
    return rows


# ---------------------------------------------------------------------------------------
# What every driver here (run.py, diagnose.py) shares


def common_args(p, name):
    """The options of every driver; `name` names its results under bench/results/."""
    p.add_argument("--build", default="build", help="meson build directory (default: build)")
    p.add_argument("--python", default="/usr/bin/python3",
                   help="interpreter with Debian's websockets and websocket-client")
    p.add_argument("--only", type=lambda s: s.split(","), default=None,
                   help="comma-separated libraries to run (vigil, websockets, websocket-client, ws)")
    p.add_argument("--csv", default=str(REPO / "bench" / "results" / f"{name}.csv"))
    p.add_argument("--png", default=str(REPO / "bench" / "results" / f"{name}.png"))
    p.add_argument("--from-csv", action="store_true",
                   help="measure nothing: redraw the plot and the table from --csv")


def redraw(args, plot_fn, table_fn):
    """--from-csv: redraws the plot and prints the table; False when measuring instead."""
    if not args.from_csv:
        return False
    with open(args.csv) as f:
        rows = list(csv.DictReader(f))
    plot_fn(rows, args.png)
    print(table_fn(rows))
    return True


def resolve_build(args):
    build = Path(args.build)
    if not build.is_absolute() and not build.exists():
        build = REPO / build
    build = build.resolve()
    preflight(args, build)
    return build


def in_namespaces(prefix, body):
    """Runs body(netns, logdir) between the namespaces' setup and their removal, which also
    happens on Ctrl-C, kill or an error; the processes' stderr is kept only on failure."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    netns = Netns()
    logdir = tempfile.mkdtemp(prefix=prefix)
    try:
        netns.setup()
        result = body(netns, logdir)
    except BaseException:
        log(f"failed; the processes' stderr is kept in {logdir}")
        raise
    finally:
        netns.teardown()
    shutil.rmtree(logdir, ignore_errors=True)
    return result


def write_results(args, rows, fields, plot_fn, table_fn):
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    plot_fn(rows, args.png)
    print(table_fn(rows))
    log(f"wrote {args.csv} and {args.png}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=30, help="cuts per client and setting (default 30)")
    p.add_argument("--settings", default="1/1,1/0.5",
                   help="comma-separated ping interval/pong timeout pairs in seconds (default "
                        "1/1,1/0.5); vigil and websocket-client, which need the timeout shorter "
                        "than the interval, get 1 ms less when they are equal")
    p.add_argument("--tuned-close-timeout", type=float, default=0.1,
                   help="close timeout of the 'tuned' configs, s (default 0.1)")
    p.add_argument("--busy", type=float, default=60, help="length of the busy phase, s (default 60)")
    p.add_argument("--quick", action="store_true", help="5 runs and a 20 s busy phase")
    p.add_argument("--settle", type=float, default=3,
                   help="heartbeat cycles between connecting and the random cut point (default 3)")
    p.add_argument("--cap", type=float, default=60, help="longest wait for one cut's outcome, s")
    p.add_argument("--seed", type=int, default=None, help="seed for the cut offsets")
    common_args(p, "detect")
    args = p.parse_args()
    if redraw(args, plot, table):
        return

    if args.quick:
        if "--runs" not in sys.argv:
            args.runs = 5
        if "--busy" not in sys.argv:
            args.busy = 20
    settings = parse_settings(args.settings)
    build = resolve_build(args)
    rng = random.Random(args.seed)

    def body(netns, logdir):
        rows = []
        for interval, timeout in settings:
            rows += measure(args, build, netns, logdir, interval, timeout, rng)
        return rows

    rows = in_namespaces("vigil-detect-", body)
    write_results(args, rows, FIELDS, plot, table)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
