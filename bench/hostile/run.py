#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""Attacks on a WebSocket server's memory, against vigil-serve and a Node `ws` server, each
with its defaults: what the server held at its peak (RSS from /proc), whether it leaked
descriptors, what the offenders got, and the echo latency a well-behaved client saw meanwhile.

    /usr/bin/python3 bench/hostile/run.py --build build [--csv F] [--png F] [--only ATTACK]

Each attack runs against a fresh server process: one well-behaved client (1 KiB echoes every
20 ms) starts first, the attackers run for the attack's window, then they close and the
server's descriptors are counted again. Prints a markdown table (bench/README.md has the last
one). Standard library only (plus matplotlib for the plot, when installed).
"""

import argparse
import base64
import csv
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

KiB = 1024
MiB = 1024 * KiB
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


# ---------------------------------------------------------------------------------------
# A raw WebSocket client: frames built by hand, masked with the all-zero key (legal, and the
# payload then goes out as is, so megabytes cost nothing to mask).

def frame(op, payload=b"", fin=True, announce=None):
    n = len(payload) if announce is None else announce
    head = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\0\0\0\0" + payload


def connect(port, rcvbuf=0, timeout=5.0):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode(errors="replace"))
    s.setblocking(True)
    return s, head.split(b"\r\n\r\n", 1)[1]


class reader:
    """Frames from a server (unmasked), reassembled into messages."""

    def __init__(self, sock, pending=b""):
        self.sock = sock
        self.buf = pending

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def frame(self):
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def message(self):
        data = b""
        while True:
            fin, op, payload = self.frame()
            if op == 0x9:
                self.sock.sendall(frame(0xA, payload))
                continue
            if op == 0xA:
                continue
            if op == 0x8:
                return op, payload
            data += payload
            if fin:
                return op, data


def close_code_of(sock, pending=b"", wait=2.0):
    """What the server said last: its close code, "reset", "closed" (no close frame) or
    "open" (nothing within `wait`)."""
    sock.settimeout(wait)
    r = reader(sock, pending)
    try:
        while True:
            fin, op, payload = r.frame()
            if op == 0x8:
                return str(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else "1005"
    except socket.timeout:
        return "open"
    except ConnectionResetError:
        return "reset"
    except (ConnectionError, OSError):
        return "closed"


# ---------------------------------------------------------------------------------------
# The servers, and what /proc says of them

class server:
    def __init__(self, kind, build):
        if kind == "vigil":
            cmd = [os.path.join(build, "examples", "vigil-serve"), "--port", "0", "--mode", "echo"]
        else:
            cmd = ["node", os.path.join(ROOT, "tests", "peers", "ws_server.js"), "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = json.loads(self.proc.stdout.readline())
        assert first["event"] == "listening", first
        self.port = first["port"]
        self.events = []
        # Drained all along: a server writing an event per message must never block on us.
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") in ("client_disconnected", "close", "closed", "rejected"):
                self.events.append(e)

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class sampler(threading.Thread):
    """The server's RSS every 20 ms; the peak is what the attack made it hold."""

    def __init__(self, srv):
        super().__init__(daemon=True)
        self.srv, self.peak, self.stopped = srv, 0.0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, self.srv.rss_mib())
            except OSError:
                return
            time.sleep(0.02)


class good_client(threading.Thread):
    """1 KiB echoes every 20 ms; the round trips and whether it was cut off."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.sock, pending = connect(port)
        self.r = reader(self.sock, pending)
        self.rtts, self.failure, self.stopped = [], None, threading.Event()

    def run(self):
        payload = os.urandom(KiB)
        self.sock.settimeout(10)
        try:
            while not self.stopped.is_set():
                t = time.monotonic()
                self.sock.sendall(frame(0x2, payload))
                op, data = self.r.message()
                if op == 0x8 or data != payload:
                    self.failure = "closed" if op == 0x8 else "wrong echo"
                    return
                self.rtts.append((time.monotonic() - t) * 1000)
                time.sleep(0.02)
        except (OSError, ConnectionError) as e:
            self.failure = type(e).__name__

    def percentile(self, p):
        if not self.rtts:
            return float("nan")
        v = sorted(self.rtts)
        return v[min(len(v) - 1, int(len(v) * p / 100))]


# ---------------------------------------------------------------------------------------
# The attacks. Each returns its attackers' sockets (with pending bytes) after its window.

def hold_partials(port, count, announce, send, window):
    """`count` connections each send `send` bytes of a message announced as `announce`."""
    socks = []
    for _ in range(count):
        try:
            s, pending = connect(port)
        except (OSError, ConnectionError):
            continue
        socks.append((s, pending))
    body = frame(0x2, b"x" * send, announce=announce)
    def push(s):
        s.settimeout(window)
        try:
            s.sendall(body)
        except OSError:
            pass
    threads = [threading.Thread(target=push, args=(s,), daemon=True) for s, _ in socks]
    for t in threads:
        t.start()
    time.sleep(window)
    return socks


def attack_slow_large(port):
    # The first attack: 15 MiB of a 16,000,000-byte frame, never finished.
    return hold_partials(port, 40, 16_000_000, 15 * MiB, 8.0)


def attack_many_partial(port):
    # 200 connections each holding all but the last byte of a 1 MiB message.
    return hold_partials(port, 200, MiB, MiB - 1, 8.0)


def attack_echo_slow_reader(port):
    # 1 MiB messages as fast as the server takes them; the echoes read at 3 MB/s.
    s, pending = connect(port, rcvbuf=64 * KiB)
    stop = time.monotonic() + 8.0
    msg = frame(0x2, b"e" * MiB)
    def send():
        s.settimeout(1.0)
        while time.monotonic() < stop:
            try:
                s.sendall(msg)
            except socket.timeout:
                continue
            except OSError:
                return
    t = threading.Thread(target=send, daemon=True)
    t.start()
    s2 = s.dup()
    s2.settimeout(0.5)
    while time.monotonic() < stop:
        try:
            if not s2.recv(30 * KiB):
                break
        except socket.timeout:
            pass
        except OSError:
            break
        time.sleep(0.01)  # 30 KiB per 10 ms: about 3 MB/s
    s2.close()
    return [(s, pending)]


def attack_ping_flood(port):
    # 125-byte pings as fast as they go out, and the pongs never read.
    s, pending = connect(port, rcvbuf=16 * KiB)
    ping = frame(0x9, b"p" * 125) * 64
    stop = time.monotonic() + 8.0
    s.settimeout(0.2)
    while time.monotonic() < stop:
        try:
            s.sendall(ping)
        except socket.timeout:
            continue
        except OSError:
            break
    return [(s, pending)]


def attack_trickle(port):
    # 100 connections start a 64 KiB message and send one more byte per second.
    socks = []
    for _ in range(100):
        try:
            s, pending = connect(port)
            s.sendall(frame(0x2, b"t", announce=64 * KiB))
            socks.append((s, pending))
        except (OSError, ConnectionError):
            pass
    stop = time.monotonic() + 14.0
    while time.monotonic() < stop:
        time.sleep(1.0)
        for s, _ in socks:
            try:
                s.sendall(b"t")
            except OSError:
                pass
    return socks


ATTACKS = {
    "slow_large": ("40 x 15 MiB of a 16,000,000-byte frame, never finished", attack_slow_large),
    "many_partial": ("200 x 1 MiB message but its last byte", attack_many_partial),
    "echo_slow_reader": ("1 MiB messages flat out, echoes read at 3 MB/s", attack_echo_slow_reader),
    "ping_flood": ("125-byte pings flat out, pongs never read", attack_ping_flood),
    "trickle": ("100 x a 64 KiB message at 1 byte/s", attack_trickle),
}


def outcome(socks):
    codes = {}
    deadline = time.monotonic() + 1.0  # for all of them: what was said is already here
    for s, pending in socks:
        c = close_code_of(s, pending, wait=max(0.01, deadline - time.monotonic()))
        codes[c] = codes.get(c, 0) + 1
    return ", ".join(f"{n} {c}" for c, n in sorted(codes.items(), key=lambda kv: -kv[1]))


def run_one(kind, name, build):
    srv = server(kind, build)
    try:
        time.sleep(0.3)
        base_rss, base_fds = srv.rss_mib(), srv.fds()
        good = good_client(srv.port)
        good.start()
        samp = sampler(srv)
        samp.start()
        socks = ATTACKS[name][1](srv.port)
        got = outcome(socks)
        good.stopped.set()
        good.join(5)
        samp.stopped.set()
        samp.join(2)
        for s, _ in socks:
            s.close()
        good.sock.close()
        # Descriptors back to the baseline within 5 s, or the excess is a leak.
        deadline, fds = time.monotonic() + 5, srv.fds()
        while fds > base_fds and time.monotonic() < deadline:
            time.sleep(0.1)
            fds = srv.fds()
        return {
            "server": kind, "attack": name, "baseline_rss_mib": round(base_rss, 1),
            "peak_rss_mib": round(samp.peak, 1), "fds_before": base_fds, "fds_after": fds,
            "offenders_got": got, "good_p50_ms": round(good.percentile(50), 2),
            "good_p99_ms": round(good.percentile(99), 2), "good_echoes": len(good.rtts),
            "good_failure": good.failure or "",
            "reasons": ", ".join(sorted({e.get("reason", "") for e in srv.events if e.get("reason")})),
        }
    finally:
        srv.stop()


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
        return
    names = list(dict.fromkeys(r["attack"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for i, kind in enumerate(("vigil", "node")):
        peaks = [next((r["peak_rss_mib"] for r in rows if r["attack"] == n and r["server"] == kind), 0) for n in names]
        ax.bar([x + (i - 0.5) * width for x in range(len(names))], peaks, width, label=f"{kind} (defaults)")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylabel("server peak RSS (MiB)")
    ax.set_title("What each attack made the server hold")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--csv", default=os.path.join(ROOT, "bench", "results", "hostile.csv"))
    ap.add_argument("--png", default=os.path.join(ROOT, "bench", "results", "hostile.png"))
    ap.add_argument("--only", choices=sorted(ATTACKS), action="append")
    ap.add_argument("--servers", default="vigil,node")
    args = ap.parse_args()
    rows = []
    for name in args.only or ATTACKS:
        for kind in args.servers.split(","):
            row = run_one(kind, name, args.build)
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    os.makedirs(os.path.dirname(args.csv), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.png)
    print("| attack | server | peak RSS (MiB, baseline) | fds before/after | offenders got | "
          "well-behaved echo p50 / p99 (ms), echoes |")
    print("|---|---|---:|---:|---|---:|")
    for r in rows:
        good = f"{r['good_p50_ms']} / {r['good_p99_ms']}, {r['good_echoes']}"
        if r["good_failure"]:
            good += f" ({r['good_failure']} after {r['good_echoes']} echoes)"
        print(f"| {ATTACKS[r['attack']][0]} | {r['server']} | {r['peak_rss_mib']} ({r['baseline_rss_mib']}) | "
              f"{r['fds_before']}/{r['fds_after']} | {r['offenders_got']} | {good} |")


if __name__ == "__main__":
    main()
