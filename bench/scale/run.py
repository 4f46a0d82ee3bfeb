#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""The scale benchmark: one server, N clients in a second process, heartbeats for a while.

Runs, one after the other and in one invocation, so that every ratio comes from one run:

  beast  the floor: plain Beast server and clients (a timer and async_ping per connection)
  vigil  vigil::server and vigil::session clients
  node   Node's ws server with its README heartbeat, against the plain Beast clients

For each: RSS per connection on both sides (VmRSS before and after connecting, divided by
the connections), CPU of both processes over the hold (getrusage user+sys seconds per second),
heartbeat segments per second and the spread of the server's pings (from the kernel's
per-socket TCP_INFO, read with `ss`: time since each socket last sent data), then broadcasts
of one message to every client (time until the last client has it).

Writes a long-format CSV (run, impl, metric, value) and a PNG, and prints the table that
bench/README.md holds. Needs python3-matplotlib for the PNG (skipped with a warning without).

    /usr/bin/python3 bench/scale/run.py --build build-release
"""

import argparse
import csv
import json
import os
import queue
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Proc:
    """A child speaking the benchmark's protocol: commands on stdin, JSON lines on stdout."""

    def __init__(self, name, argv, log_dir):
        self.name = name
        self.err_path = os.path.join(log_dir, f"{name}.stderr")
        self.err = open(self.err_path, "w")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, text=True, bufsize=1)
        self.q = queue.Queue()
        self.held = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.p.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                sys.stderr.write(f"{self.name}: not JSON: {line}")
        self.q.put(None)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def wait(self, event, timeout, pred=lambda e: True):
        for i, e in enumerate(self.held):
            if e["event"] == event and pred(e):
                return self.held.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no '{event}' within {timeout} s (see {self.err_path})")
            try:
                e = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if e is None:
                raise RuntimeError(f"{self.name} exited (status {self.p.wait()}); see {self.err_path}")
            if e["event"] == event and pred(e):
                return e
            self.held.append(e)

    def stats(self):
        self.send("stats")
        return self.wait("stats", 30)

    def quit(self):
        try:
            self.send("quit")
        except (BrokenPipeError, ValueError):
            pass
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()


def ss_snapshot(port):
    """Per-socket TCP_INFO of the server's established sockets."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    socks = []
    for line in out.splitlines():
        if not line[:1].isspace():
            continue  # the address line; the info line follows it
        info = {}
        for key in ("lastsnd", "lastrcv", "data_segs_out", "data_segs_in"):
            m = re.search(rf"\b{key}:(\d+)", line)
            info[key] = int(m.group(1)) if m else 0
        socks.append(info)
    return socks


def spread(snapshots, bucket_ms=10, span_ms=1000):
    """Pings per 10 ms bucket over the last second, from 'time since last sent' per socket.
    Per snapshot: the busiest bucket and how few buckets hold half the pings; both averaged
    over the snapshots. The buckets returned (for the plot) are the last snapshot's: averaging
    would smear a burst that lands at a different phase in each."""
    peaks, halves, buckets = [], [], []
    for snap in snapshots:
        buckets = [0] * (span_ms // bucket_ms)
        for s in snap:
            b = s["lastsnd"] // bucket_ms
            if b < len(buckets):
                buckets[b] += 1
        ordered = sorted(buckets, reverse=True)
        need, acc, half = sum(buckets) / 2, 0, 0
        for c in ordered:
            if acc >= need:
                break
            acc += c
            half += 1
        peaks.append(max(buckets))
        halves.append(half)
    return buckets, statistics.mean(peaks), statistics.mean(halves)


def median(v):
    return statistics.median(v) if v else float("nan")


def cpu_rate(a, b):
    return (b["user_s"] + b["sys_s"] - a["user_s"] - a["sys_s"]) / ((b["mono_ns"] - a["mono_ns"]) / 1e9)


# "vigil+deflate" and "vigil+deflate-takeover": vigil with permessage-deflate on both sides,
# without and with context takeover.
DEFLATE_IMPLS = {"vigil+deflate": "no-takeover", "vigil+deflate-takeover": "takeover"}


def run_scenario(impl, args, exe, log_dir):
    deflate = []
    if impl in DEFLATE_IMPLS:
        deflate = ["--deflate", DEFLATE_IMPLS[impl]]
    base = "vigil" if deflate else impl
    if impl == "node":
        server_argv = ["node", os.path.join(HERE, "ws_server.js"), "--ping-ms", str(args.ping_ms)]
        client_impl = "beast"
    else:
        server_argv = [exe, "server", "--impl", base, "--ping-ms", str(args.ping_ms),
                       "--pong-ms", str(args.pong_ms)] + deflate
        client_impl = base
    prefix = shlex.split(args.server_prefix)
    profile = None
    if args.callgrind and impl != "node":
        # Instrumentation off until the hold starts: the profile is the steady state only.
        profile = os.path.join(log_dir, f"callgrind.{impl}.out")
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={profile}"] + prefix
    server_argv = prefix + server_argv
    r = {"impl": impl, "clients_impl": client_impl}
    server = Proc(f"{impl}-server", server_argv, log_dir)
    clients = None
    try:
        port = server.wait("listening", 60)["port"]
        clients = Proc(f"{impl}-clients", [exe, "clients", "--impl", client_impl, "--port", str(port),
                                           "--ping-ms", str(args.ping_ms), "--pong-ms", str(args.pong_ms),
                                           "--concurrency", str(args.concurrency)] + deflate, log_dir)
        clients.wait("ready", 30)
        time.sleep(1)
        s0, c0 = server.stats(), clients.stats()
        clients.send(f"connect {args.clients}")
        conn = clients.wait("connected", 600)
        r["connect_s"] = conn["seconds"]
        r["connect_failed"] = conn["failed"]
        deadline = time.monotonic() + 60
        while server.stats()["open"] < conn["open"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(args.settle)
        s1, c1 = server.stats(), clients.stats()
        n = conn["open"]
        r["connections"] = n
        r["server_rss_per_conn_kib"] = (s1["rss_kb"] - s0["rss_kb"]) / n
        r["client_rss_per_conn_kib"] = (c1["rss_kb"] - c0["rss_kb"]) / n
        if "heap_kb" in s0 and "heap_kb" in s1:  # Node's server reports RSS only
            r["server_heap_per_conn_kib"] = (s1["heap_kb"] - s0["heap_kb"]) / n
        r["server_rss_base_kib"] = s0["rss_kb"]
        r["client_rss_base_kib"] = c0["rss_kb"]

        # The hold: CPU of both processes, and heartbeat segments per second.
        if profile:
            subprocess.run(["callgrind_control", "-i", "on", str(server.p.pid)], check=True, capture_output=True)
        snap0 = ss_snapshot(port)
        h0s, h0c = server.stats(), clients.stats()
        spreads = []
        step = args.hold / args.spread_samples
        for _ in range(args.spread_samples - 1):
            time.sleep(step)
            spreads.append(ss_snapshot(port))
        time.sleep(step)
        h1s, h1c = server.stats(), clients.stats()
        snap1 = ss_snapshot(port)
        if profile:
            subprocess.run(["callgrind_control", "-d", str(server.p.pid)], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-i", "off", str(server.p.pid)], check=True, capture_output=True)
            r["callgrind"] = profile
        spreads.append(snap1)
        secs = (h1s["mono_ns"] - h0s["mono_ns"]) / 1e9
        r["hold_s"] = secs
        r["server_cpu"] = cpu_rate(h0s, h1s)
        r["client_cpu"] = cpu_rate(h0c, h1c)
        for side, a, b in (("server", h0s, h1s), ("client", h0c, h1c)):
            wall = (b["mono_ns"] - a["mono_ns"]) / 1e9
            r[f"{side}_cpu_user"] = (b["user_s"] - a["user_s"]) / wall
            r[f"{side}_cpu_sys"] = (b["sys_s"] - a["sys_s"]) / wall
        r["open_after_hold"] = h1s["open"]
        r["client_open_after_hold"] = h1c["open"]
        if "ping_loop_last_ms" in h1s:
            r["ping_callback_ms"] = h1s["ping_loop_last_ms"]
        r["server_ended"] = h1s.get("ended", {})
        r["client_ended"] = h1c.get("ended", {})
        # Segment counters of sockets present in both snapshots (ss lists them in the same
        # order only by chance, so compare totals; connections do not come and go here).
        out0 = sum(s["data_segs_out"] for s in snap0)
        out1 = sum(s["data_segs_out"] for s in snap1)
        in0 = sum(s["data_segs_in"] for s in snap0)
        in1 = sum(s["data_segs_in"] for s in snap1)
        ss_secs = secs  # the snapshots bracket the stats calls within milliseconds
        r["pings_per_s"] = (out1 - out0) / ss_secs
        r["pongs_per_s"] = (in1 - in0) / ss_secs
        r["server_us_per_heartbeat"] = r["server_cpu"] / max(r["pongs_per_s"], 1e-9) * 1e6
        r["client_us_per_heartbeat"] = r["client_cpu"] / max(r["pongs_per_s"], 1e-9) * 1e6
        buckets, peak, half = spread(spreads)
        r["spread_buckets"] = buckets
        r["ping_peak_10ms"] = peak
        r["ping_buckets_for_half"] = half

        # Broadcasts: one message to every client; time until the last one has it.
        lat, first = [], []
        for k in range(1, args.broadcasts + 1):
            server.send(f"broadcast {k} {args.size}")
            b = server.wait("broadcast", 60, lambda e, k=k: e["k"] == k)
            d = clients.wait("broadcast_done", 120, lambda e, k=k: e["k"] == k)
            lat.append((d["last_ns"] - b["t0_ns"]) / 1e6)
            first.append((d["first_ns"] - b["t0_ns"]) / 1e6)
            r.setdefault("broadcast_call_ms", []).append((b["t1_ns"] - b["t0_ns"]) / 1e6)
            time.sleep(1)
        r["broadcast_all_ms"] = median(lat)
        r["broadcast_all_ms_min"] = min(lat, default=float("nan"))
        r["broadcast_all_ms_max"] = max(lat, default=float("nan"))
        r["broadcast_first_ms"] = median(first)
        # After the broadcasts every connection has compressed and inflated a message: with
        # permessage-deflate, that is when zlib's windows exist.
        s2 = server.stats()
        r["server_rss_per_conn_after_msgs_kib"] = (s2["rss_kb"] - s0["rss_kb"]) / max(r["connections"], 1)
        r["broadcast_call_ms"] = median(r.get("broadcast_call_ms", []))
    finally:
        # The server goes first, so that the TIME_WAIT sockets are on its fixed port and not
        # on the clients' ephemeral ones, which the next scenario needs.
        server.quit()
        if clients:
            clients.quit()
    return r


def ratio(a, b):
    return a / b if b else float("nan")


def table(results, load):
    by = {r["impl"]: r for r in results}
    rows = [
        ("server CPU (s/s)", "server_cpu", "{:.3f}"),
        ("  of which user", "server_cpu_user", "{:.3f}"),
        ("  of which sys", "server_cpu_sys", "{:.3f}"),
        ("client CPU (s/s)", "client_cpu", "{:.3f}"),
        ("server RSS per connection (KiB)", "server_rss_per_conn_kib", "{:.2f}"),
        ("client RSS per connection (KiB)", "client_rss_per_conn_kib", "{:.2f}"),
        ("server heap in use per connection (KiB)", "server_heap_per_conn_kib", "{:.2f}"),
        ("server RSS per connection after the broadcasts (KiB)", "server_rss_per_conn_after_msgs_kib", "{:.2f}"),
        ("pongs received per second", "pongs_per_s", "{:,.0f}"),
        ("pings sent per second", "pings_per_s", "{:,.0f}"),
        ("server CPU per heartbeat (us)", "server_us_per_heartbeat", "{:.1f}"),
        ("client CPU per heartbeat (us)", "client_us_per_heartbeat", "{:.1f}"),
        ("pings in the busiest 10 ms", "ping_peak_10ms", "{:,.0f}"),
        ("10 ms buckets holding half the pings", "ping_buckets_for_half", "{:.0f}"),
        ("one timer callback pinging all (ms)", "ping_callback_ms", "{:.0f}"),
        ("broadcast: all received (ms, median)", "broadcast_all_ms", "{:.1f}"),
        ("broadcast: first received (ms, median)", "broadcast_first_ms", "{:.1f}"),
        ("broadcast call returned (ms, median)", "broadcast_call_ms", "{:.1f}"),
        ("connections open after the hold", "open_after_hold", "{:,d}"),
    ]
    impls = [i for i in ("beast", "vigil", "node", *DEFLATE_IMPLS) if i in by]
    lines = [f"Load average at start {load[0]}, at end {load[1]}.", ""]
    head = "| metric | " + " | ".join(impls) + " |"
    if "vigil" in by:
        head += (" vigil/beast |" if "beast" in by else "") + (" vigil/node |" if "node" in by else "")
    lines.append(head)
    lines.append("|" + "---|" * (head.count("|") - 1))
    for label, key, fmt in rows:
        cells = []
        for i in impls:
            v = by[i].get(key)
            cells.append(fmt.format(v) if v is not None else "n/a")
        line = f"| {label} | " + " | ".join(cells) + " |"
        if "vigil" in by:
            for other in ("beast", "node"):
                if other in by:
                    a, b = by["vigil"].get(key), by[other].get(key)
                    line += f" {ratio(a, b):.2f} |" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else " |"
        lines.append(line)
    return "\n".join(lines)


def targets(results):
    by = {r["impl"]: r for r in results}
    out = []
    if "vigil" in by and "beast" in by:
        m = ratio(by["vigil"]["server_rss_per_conn_kib"], by["beast"]["server_rss_per_conn_kib"])
        out.append(f"server memory per idle connection vigil/beast = {m:.2f} (target <= 1.25): {'met' if m <= 1.25 else 'NOT met'}")
        c = ratio(by["vigil"]["server_cpu"], by["beast"]["server_cpu"])
        out.append(f"server heartbeat CPU vigil/beast = {c:.2f} (target <= 1.2): {'met' if c <= 1.2 else 'NOT met'}")
    if "vigil" in by and "node" in by:
        c = ratio(by["vigil"]["server_cpu"], by["node"]["server_cpu"])
        out.append(f"server heartbeat CPU vigil/node = {c:.2f} (target < 1): {'met' if c < 1 else 'NOT met'}")
        b = ratio(by["vigil"]["broadcast_all_ms"], by["node"]["broadcast_all_ms"])
        out.append(f"broadcast to all vigil/node = {b:.2f}")
    return out


def write_csv(path, results, load, args):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["impl", "metric", "value"])
        w.writerow(["", "load_start", load[0]])
        w.writerow(["", "load_end", load[1]])
        for k in ("clients", "hold", "ping_ms", "pong_ms", "size"):
            w.writerow(["", k, getattr(args, k)])
        for r in results:
            for k, v in r.items():
                if k in ("impl", "spread_buckets", "server_ended", "client_ended"):
                    continue
                w.writerow([r["impl"], k, f"{v:.6g}" if isinstance(v, float) else v])
            for i, c in enumerate(r["spread_buckets"]):
                w.writerow([r["impl"], f"pings_since_{i * 10:03d}ms", c])


def plot(path, results, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.stderr.write("matplotlib not found (apt-get install python3-matplotlib): no PNG written\n")
        return
    colors = {"beast": "#888888", "vigil": "#1f77b4", "node": "#2ca02c", "vigil+deflate": "#ff7f0e",
              "vigil+deflate-takeover": "#d62728"}
    impls = [r["impl"] for r in results]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    x = range(len(results))

    a = ax[0][0]
    w = 0.38
    a.bar([i - w / 2 for i in x], [r["server_cpu"] * 1000 for r in results], w, label="server",
          color=[colors[i] for i in impls])
    a.bar([i + w / 2 for i in x], [r["client_cpu"] * 1000 for r in results], w, label="clients",
          color=[colors[i] for i in impls], alpha=0.45)
    a.set_xticks(list(x), [f"{r['impl']}\n(clients: {r['clients_impl']})" for r in results])
    a.set_ylabel("CPU ms per second")
    a.set_title(f"CPU, {args.clients:,} connections, ping every {args.ping_ms} ms\n(solid: server, light: clients)")

    a = ax[0][1]
    a.bar([i - w / 2 for i in x], [r["server_rss_per_conn_kib"] for r in results], w, color=[colors[i] for i in impls])
    a.bar([i + w / 2 for i in x], [r["client_rss_per_conn_kib"] for r in results], w,
          color=[colors[i] for i in impls], alpha=0.45)
    a.set_xticks(list(x), impls)
    a.set_ylabel("KiB per connection (VmRSS)")
    a.set_title("Memory per idle connection (solid: server, light: clients)")

    a = ax[1][0]
    for r in results:
        b = r["spread_buckets"]
        a.step([i * 10 for i in range(len(b))], b, where="post", label=r["impl"], color=colors[r["impl"]])
    a.set_yscale("symlog")
    a.set_xlabel("ms since the socket last sent (10 ms buckets)")
    a.set_ylabel("server sockets")
    a.set_title("When each server socket last sent (one snapshot): bunched or spread")
    a.legend()

    a = ax[1][1]
    a.bar(list(x), [r["broadcast_all_ms"] for r in results], color=[colors[i] for i in impls])
    a.errorbar(list(x), [r["broadcast_all_ms"] for r in results],
               yerr=[[r["broadcast_all_ms"] - r["broadcast_all_ms_min"] for r in results],
                     [r["broadcast_all_ms_max"] - r["broadcast_all_ms"] for r in results]],
               fmt="none", color="black", capsize=4)
    a.set_xticks(list(x), impls)
    a.set_ylabel("ms until every client has it")
    a.set_title(f"Broadcast of one {args.size} B message (median, min-max of {args.broadcasts})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="build directory holding bench/scale/vigil-bench-scale")
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=60, help="seconds of heartbeats measured")
    ap.add_argument("--settle", type=float, default=5, help="seconds between connecting and measuring memory")
    ap.add_argument("--ping-ms", type=int, default=1000)
    ap.add_argument("--pong-ms", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=200, help="handshakes in flight while connecting")
    ap.add_argument("--broadcasts", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="broadcast message size in bytes")
    ap.add_argument("--spread-samples", type=int, default=3, help="ss snapshots over the hold")
    ap.add_argument("--impls", default="beast,vigil,node",
                    help="any of beast, vigil, node, vigil+deflate (permessage-deflate, no context "
                         "takeover), vigil+deflate-takeover")
    ap.add_argument("--server-prefix", default="", help="wrap the server command (perf record ...)")
    ap.add_argument("--callgrind", action="store_true",
                    help="run the C++ servers under callgrind, instrumented during the hold only (profiles in --log-dir)")
    ap.add_argument("--csv", default=os.path.join(ROOT, "bench", "results", "scale.csv"))
    ap.add_argument("--png", default=os.path.join(ROOT, "bench", "results", "scale.png"))
    ap.add_argument("--log-dir", default=None, help="children's stderr (default: a temporary directory)")
    args = ap.parse_args()

    exe = os.path.join(args.build, "bench", "scale", "vigil-bench-scale")
    if not os.access(exe, os.X_OK):
        sys.exit(f"run.py: {exe} not found; build it first (ninja -C {args.build} bench/scale/vigil-bench-scale)")
    if not shutil.which("ss"):
        sys.exit("run.py: `ss` (iproute2) is needed to read the sockets' TCP_INFO")
    impls = args.impls.split(",")
    if "node" in impls:
        ws = os.path.join(ROOT, "tests", "peers", "node_modules", "ws")
        if not shutil.which("node") or not os.path.isdir(ws):
            sys.stderr.write("run.py: SKIPPING the Node ws scenario: needs `node` and `npm ci --prefix tests/peers`\n")
            impls.remove("node")

    # Both processes hold a descriptor per connection: raise the limit for them (as ulimit -n).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, args.clients * 2 + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < args.clients + 256:
            sys.exit(f"run.py: RLIMIT_NOFILE hard limit {hard} is too low for {args.clients} connections")

    log_dir = args.log_dir or __import__("tempfile").mkdtemp(prefix="vigil-scale-")
    os.makedirs(log_dir, exist_ok=True)
    load0 = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    results = []
    for impl in impls:
        print(f"--- {impl}: {args.clients} connections, {args.hold:.0f} s hold", flush=True)
        r = run_scenario(impl, args, exe, log_dir)
        print(json.dumps({k: v for k, v in r.items() if k != "spread_buckets"}), flush=True)
        results.append(r)
        time.sleep(2)
    load1 = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    print()
    print(table(results, (load0, load1)))
    print()
    for t in targets(results):
        print(t)
    if args.csv:
        write_csv(args.csv, results, (load0, load1), args)
    if args.png:
        plot(args.png, results, args)


if __name__ == "__main__":
    main()
