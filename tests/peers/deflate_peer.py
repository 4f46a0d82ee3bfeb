#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""Python's `websockets` (which offers and accepts permessage-deflate by default) for vigil's
compression tests. It reports JSON lines on stdout, one object per line with "event" and "t"
(seconds since start).

    /usr/bin/python3 deflate_peer.py server [--no-deflate]
    /usr/bin/python3 deflate_peer.py client [--no-deflate] [--sizes N,N,...] URL

server: first line {"event":"listening","port":P}; echoes every message; connection (offered:
  the client's Sec-WebSocket-Extensions, extensions: the server's answer), message (bytes,
  binary), close (code).
client: open (extensions: the server's answer); for each size a text and a binary message of
  that many bytes (JSON-like; the largest sent in three fragments), each echo compared byte
  for byte: echoed (size, binary, same); then done, and a close with 1000.
--no-deflate: compression off.
"""

import argparse
import asyncio
import json
import signal
import sys
import time

import websockets

STARTED = time.monotonic()
MAX_SIZE = 512 * 1024 * 1024


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic() - STARTED, **fields}) + "\n")
    sys.stdout.flush()


def payload(size, binary):
    parts = []
    total = 0
    i = 0
    while total < size:
        part = '{"type":"chat","user":"u%d","text":"hello %d","binary":%s}' % (i % 17, i, "true" if binary else "false")
        parts.append(part)
        total += len(part)
        i += 1
    text = "".join(parts)[:size]
    return text.encode() if binary else text


async def serve(args):
    async def handler(ws, path=None):
        emit("connection", offered=ws.request_headers.get("Sec-WebSocket-Extensions", ""),
             extensions=ws.response_headers.get("Sec-WebSocket-Extensions", ""))
        try:
            async for message in ws:
                emit("message", bytes=len(message), binary=isinstance(message, bytes))
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        emit("close", code=ws.close_code)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    compression = None if args.no_deflate else "deflate"
    async with websockets.serve(handler, "127.0.0.1", 0, ping_interval=None, close_timeout=1,
                                compression=compression, max_size=MAX_SIZE) as server:
        emit("listening", port=server.sockets[0].getsockname()[1])
        await stop
    return 0


async def client(args):
    compression = None if args.no_deflate else "deflate"
    async with websockets.connect(args.url, ping_interval=None, close_timeout=1, compression=compression,
                                  max_size=MAX_SIZE) as ws:
        emit("open", extensions=ws.response_headers.get("Sec-WebSocket-Extensions", ""))
        largest = max(args.sizes)
        for size in args.sizes:
            for binary in (False, True):
                data = payload(size, binary)
                if size == largest and size >= 3:
                    third = size // 3
                    await ws.send([data[:third], data[third:2 * third], data[2 * third:]])
                else:
                    await ws.send(data)
                echo = await ws.recv()
                emit("echoed", size=size, binary=binary, same=echo == data)
        emit("done")
        await ws.close(1000, "done")
    emit("close", code=ws.close_code)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--no-deflate", action="store_true")
    parser.add_argument("--sizes", default="10,100,5000,200000",
                        type=lambda s: [int(n) for n in s.split(",")])
    args = parser.parse_intermixed_args()
    if args.role == "client" and not args.url:
        parser.error("a URL is needed")
    return asyncio.run(serve(args) if args.role == "server" else client(args))


if __name__ == "__main__":
    sys.exit(main())
