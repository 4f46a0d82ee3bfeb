#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""A WebSocket client built on Python's websocket-client (`import websocket`), for vigil's
server tests. It runs WebSocketApp.run_forever with its own ping_interval/ping_timeout
heartbeat and reports JSON lines on stdout, one object per line with "event" and "t"
(seconds since start): open; ping (the server pinged us); pong (answer to our ping, with
rtt_ms); message (text, or bytes for binary); silent; error (message); close (code, reason).

    /usr/bin/python3 wsclient_peer.py [--ping-interval S] [--ping-timeout S]
                                      [--send TEXT]... [--silent-after S] URL

--silent-after S: that long after the open, the client stops reading its socket (so it
answers no ping and sees no close frame) and stops its own pings, without closing: a
client that vanished. websocket-client has no switch for that; run_forever takes a custom
dispatcher (the loop that waits for the socket to be readable and calls back to read a
frame), and ours simply stops calling back once silent. Pings are sent by the library's
ping thread through `WebSocket.ping`, which is replaced by a no-op at that moment.

Exits 0 after the connection closed, 1 if it never opened. SIGTERM or SIGINT closes the
connection (1000) and exits 0; a silent client exits at once.
"""

import argparse
import json
import selectors
import signal
import sys
import threading
import time

import websocket

STARTED = time.monotonic()
_out_lock = threading.Lock()


def emit(event, **fields):
    line = json.dumps({"event": event, "t": time.monotonic() - STARTED, **fields})
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class SilenceableDispatcher:
    """The library's default dispatcher loop, plus a point after which it stops reading."""

    def __init__(self, app, silent_after, stop):
        self.app = app
        self.silent_after = silent_after
        self.stop = stop
        self.silent = False
        self.opened_at = None

    def go_silent(self):
        self.silent = True
        # The library's ping thread calls this; it must not send anything any more.
        self.app.sock.ping = lambda *args, **kwargs: None
        emit("silent")

    def read(self, sock, read_callback, check_callback):
        self.opened_at = time.monotonic()
        while self.app.keep_running and not self.stop.is_set():
            if (not self.silent and self.silent_after is not None
                    and time.monotonic() - self.opened_at >= self.silent_after):
                self.go_silent()
            if self.silent:
                # Vanished: wait for SIGTERM, never touching the socket again.
                self.stop.wait(0.05)
                continue
            sel = selectors.DefaultSelector()
            sel.register(sock, selectors.EVENT_READ)
            ready = sel.select(0.02)
            sel.close()
            if ready and not read_callback():
                break
            check_callback()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--ping-interval", type=float, default=0.0)
    parser.add_argument("--ping-timeout", type=float, default=None)
    parser.add_argument("--send", action="append", default=[])
    parser.add_argument("--silent-after", type=float, default=None)
    args = parser.parse_args()

    stop = threading.Event()
    state = {"opened": False, "closed": False}

    def on_open(ws):
        state["opened"] = True
        emit("open")
        for text in args.send:
            ws.send(text)

    def on_ping(ws, data):
        # websocket-client has already answered it (recv_data_frame sends the pong).
        emit("ping")

    def on_pong(ws, data):
        rtt = (time.time() - ws.last_ping_tm) * 1000.0 if ws.last_ping_tm else None
        emit("pong", rtt_ms=rtt)

    def on_message(ws, data):
        if isinstance(data, bytes):
            emit("message", bytes=len(data))
        else:
            emit("message", text=data)

    def on_error(ws, error):
        emit("error", message=f"{type(error).__name__}: {error}")

    def on_close(ws, code, reason):
        state["closed"] = True
        emit("close", code=code, reason=reason)

    app = websocket.WebSocketApp(args.url, on_open=on_open, on_ping=on_ping, on_pong=on_pong,
                                 on_message=on_message, on_error=on_error, on_close=on_close)
    dispatcher = SilenceableDispatcher(app, args.silent_after, stop)

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    app.run_forever(ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
                    dispatcher=dispatcher)

    if stop.is_set() and not state["closed"]:
        if dispatcher.silent:
            emit("exit")
            return 0
        # The dispatcher returned without a teardown: close properly ourselves.
        app.keep_running = False
        try:
            if app.sock:
                app.sock.close(status=websocket.STATUS_NORMAL, timeout=0.5)
        except Exception as e:  # the peer may already be gone; exiting is all that is left
            emit("error", message=f"{type(e).__name__}: {e}")
        emit("close", code=1000, reason="", initiated="client")
    emit("exit")
    return 0 if state["opened"] else 1


if __name__ == "__main__":
    sys.exit(main())
