#!/usr/bin/python3
# vigil: WebSocket connections that always find out they are dead.
# SPDX-License-Identifier: BSL-1.0
"""An echo server built on Python's `websockets` (asyncio), for vigil's client tests. It
reports JSON lines on stdout, one object per line with "event" and "t" (seconds since
start); the first line is {"event":"listening","port":P}. Then: connection, ping (a protocol
ping arrived; websockets answers it by itself), message (text, or bytes for binary),
rejected (status), close (code, reason).

    /usr/bin/python3 websockets_server.py [--host H] [--port P]
                                          [--reject STATUS [--retry-after S]]

--reject STATUS refuses every upgrade with that HTTP status from process_request (401, 503
...), with a Retry-After header when --retry-after is given.

--tokens makes it an authenticating server with single-use tokens, as exchanges issue listen
keys: GET /token answers 200 with a fresh token as the body (event token) and forgets the
one issued before; an upgrade is accepted only with the latest token, given as
`Authorization: Bearer TOKEN` or as `?token=TOKEN` in the target, and that token is then
used up. Anything else is refused with 401 (event rejected, with the token it carried).

The server sends no pings of its own. SIGTERM or SIGINT closes the server and exits 0.
"""

import argparse
import asyncio
import http
import json
import secrets
import signal
import urllib.parse
import sys
import time

import websockets
import websockets.server

STARTED = time.monotonic()


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, "t": time.monotonic() - STARTED, **fields}) + "\n")
    sys.stdout.flush()


def remote_of(ws):
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


class LoggingProtocol(websockets.server.WebSocketServerProtocol):
    """Reports the protocol pings it receives. websockets has no hook for them, so the
    frame reader is wrapped (read_frame exists in the legacy protocol of websockets 10)."""

    async def read_frame(self, max_size):
        frame = await super().read_frame(max_size)
        if frame.opcode == websockets.frames.Opcode.PING:
            emit("ping", id=getattr(self, "vigil_id", 0))
        return frame


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reject", type=int, default=0)
    parser.add_argument("--retry-after", default=None)
    parser.add_argument("--tokens", action="store_true")
    args = parser.parse_args()
    current_token = None

    next_id = 1

    def presented_token(path, headers):
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer "):]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        return query.get("token", [""])[0]

    def check_token(path, headers):
        nonlocal current_token
        if path == "/token":
            current_token = secrets.token_hex(8)
            emit("token", token=current_token)
            return (http.HTTPStatus.OK, [("Content-Type", "text/plain")], current_token.encode())
        token = presented_token(path, headers)
        if current_token is None or token != current_token:
            emit("rejected", status=401, token=token)
            return (http.HTTPStatus.UNAUTHORIZED, [], b"token expired or unknown")
        current_token = None
        emit("accepted", token=token)
        return None

    async def process_request(path, headers):
        if args.tokens:
            return check_token(path, headers)
        if not args.reject:
            return None
        extra = [("Retry-After", args.retry_after)] if args.retry_after is not None else []
        emit("rejected", status=args.reject)
        return (http.HTTPStatus(args.reject), extra, b"")

    async def handler(ws, path=None):
        nonlocal next_id
        ws.vigil_id = next_id
        next_id += 1
        emit("connection", id=ws.vigil_id, remote=remote_of(ws), target=ws.path)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    emit("message", id=ws.vigil_id, bytes=len(message))
                else:
                    emit("message", id=ws.vigil_id, text=message)
                await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        emit("close", id=ws.vigil_id, code=ws.close_code, reason=ws.close_reason)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    async with websockets.serve(handler, args.host, args.port, process_request=process_request,
                                create_protocol=LoggingProtocol, ping_interval=None, close_timeout=1,
                                compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        emit("listening", port=port, reject=args.reject or None)
        await stop
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
