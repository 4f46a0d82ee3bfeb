#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
#
# The Python `websocket-client` side of the detection benchmark (bench/detect/run.py):
# WebSocketApp.run_forever(ping_interval, ping_timeout), run again as soon as it returns
# (the library has no reconnect of its own in 1.2.3). A pong timeout reaches the
# application as on_error(WebSocketTimeoutException); run_forever then closes the socket,
# which waits up to 3 s for the server's close frame (WebSocket.close()'s fixed default:
# run_forever has no setting for it), calls on_close and returns.
#
#   /usr/bin/python3 websocket_client.py --ping-interval S --ping-timeout S URL
#
# websocket-client refuses ping_timeout >= ping_interval.
#
# A text message "block S" makes on_message block run_forever's thread for S seconds
# (bench/detect/diagnose.py: a handler that blocks the loop).
#
# JSON lines on stdout: {"event":"connected","t":T}, {"event":"disconnected","t":T,
# "reason":...} (on_error, or on_close when no error came first), {"event":"closed","t":T}
# (on_close). T is time.monotonic() (CLOCK_MONOTONIC), as the driver reads it.

import argparse
import json
import sys
import time

import websocket


def emit(event, **fields):
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def run(args):
    while True:
        state = {"opened": False, "reported": False}

        def on_open(ws):
            state["opened"] = True
            emit("connected")

        def on_error(ws, e):
            if state["opened"] and not state["reported"]:
                state["reported"] = True
                emit("disconnected", reason=f"{type(e).__name__}: {e}")

        def on_close(ws, code, reason):
            if state["opened"]:
                if not state["reported"]:
                    state["reported"] = True
                    emit("disconnected", reason=f"close {code}")
                emit("closed")

        def on_message(ws, message):
            if isinstance(message, str) and message.startswith("block "):
                time.sleep(float(message[6:]))

        app = websocket.WebSocketApp(args.url, on_open=on_open, on_error=on_error,
                                     on_close=on_close, on_message=on_message)
        app.run_forever(ping_interval=args.ping_interval, ping_timeout=args.ping_timeout)
        if not state["opened"]:
            # A refused attempt is retried after a pause, not in a tight loop.
            time.sleep(0.1)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--ping-interval", type=float, required=True)
    p.add_argument("--ping-timeout", type=float, required=True)
    p.add_argument("url")
    try:
        run(p.parse_args())
    except KeyboardInterrupt:
        sys.exit(0)
