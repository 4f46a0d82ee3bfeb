#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
#
# The Python `websockets` side of the detection benchmark (bench/detect/run.py): the library's
# keepalive (ping_interval, ping_timeout) and its own reconnecting iterator
# (`async for ws in connect(...)`). The application learns that the connection is dead when
# recv() raises ConnectionClosed; after a keepalive timeout that happens only once the
# library has finished closing, which waits close_timeout (default 10 s) for the server.
#
#   /usr/bin/python3 websockets_client.py --ping-interval S --ping-timeout S
#                                         [--close-timeout S] URL
#
# A text message "block S" makes the receiving code block the event loop for S seconds
# (time.sleep), as a slow synchronous call in a handler would (bench/detect/diagnose.py).
#
# JSON lines on stdout: {"event":"connected","t":T}, {"event":"disconnected","t":T,
# "reason":...}. T is time.monotonic() (CLOCK_MONOTONIC), as the driver reads it.

import argparse
import asyncio
import json
import sys
import time

import websockets


def emit(event, **fields):
    print(json.dumps({"event": event, "t": time.monotonic(), **fields}), flush=True)


def block(message):
    if isinstance(message, str) and message.startswith("block "):
        time.sleep(float(message[6:]))


async def main(args):
    kwargs = {"ping_interval": args.ping_interval, "ping_timeout": args.ping_timeout}
    if args.close_timeout is not None:
        kwargs["close_timeout"] = args.close_timeout
    async for ws in websockets.connect(args.url, **kwargs):
        emit("connected")
        try:
            while True:
                block(await ws.recv())
        except websockets.ConnectionClosed as e:
            emit("disconnected", reason=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--ping-interval", type=float, required=True)
    p.add_argument("--ping-timeout", type=float, required=True)
    p.add_argument("--close-timeout", type=float, default=None,
                   help="default: the library's (10 s)")
    p.add_argument("url")
    try:
        asyncio.run(main(p.parse_args()))
    except KeyboardInterrupt:
        sys.exit(0)
