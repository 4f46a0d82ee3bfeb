#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""A client built on Python's `websockets` (asyncio) that opens one connection and reports
how the upgrade went, for vigil's admission tests. One JSON line on stdout with "event" and
"t" (seconds since start): open (with subprotocol, null when none was agreed), rejected
(status: the server refused the upgrade with an HTTP status) or error (type and message:
the handshake failed otherwise, such as a subprotocol that was not offered).

    /usr/bin/python3 websockets_client.py [--subprotocol NAME]... [--header NAME:VALUE]...
                                          [--origin ORIGIN] URL

Exits 0 after an open (closing with 1000 at once), 1 otherwise.
"""

import argparse
import asyncio
import json
import sys
import time

import websockets
import websockets.exceptions

STARTED = time.monotonic()


def emit(event, **fields):
    line = {"event": event, "t": round(time.monotonic() - STARTED, 6)}
    line.update(fields)
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--subprotocol", action="append", default=[])
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--origin")
    parser.add_argument("url")
    args = parser.parse_args()
    headers = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            parser.error(f"bad --header {h}")
        headers.append((name.strip(), value.strip()))
    try:
        ws = await websockets.connect(args.url, subprotocols=args.subprotocol or None,
                                      extra_headers=headers, origin=args.origin, open_timeout=5)
    except websockets.exceptions.InvalidStatusCode as e:
        emit("rejected", status=e.status_code)
        return 1
    except (websockets.exceptions.InvalidHandshake, OSError) as e:
        emit("error", type=type(e).__name__, message=str(e))
        return 1
    emit("open", subprotocol=ws.subprotocol)
    await ws.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
