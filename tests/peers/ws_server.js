#!/usr/bin/env node
// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// A WebSocket server built on Node's `ws`, the most used server library there is, for
// vigil's interoperability tests. It reports what it sees as JSON lines on stdout, one object
// per line with "event" and "t" (seconds since start); the first line is
// {"event":"listening","port":P}.
//
//   node ws_server.js [--host H] [--port P] [--mode echo|app-pong]
//                     [--reject STATUS [--retry-after S]] [--silent]
//
//   --mode echo       (default) echoes every message; protocol pings answered by ws itself.
//   --mode app-pong   answers the text message {"type":"ping"} with {"type":"pong"} and
//                     echoes the rest, but never answers a protocol ping: a server that only
//                     speaks the application-level heartbeat.
//   --reject STATUS   refuses every upgrade with that HTTP status (401, 503 ...), with a
//                     Retry-After header when --retry-after is given.
//   --silent          completes the upgrade, then never reads or writes again: a server that
//                     vanished without closing (pings go unanswered, no close frame, no FIN).
//
// SIGTERM or SIGINT closes the server and exits 0.
'use strict';

const http = require('http');
const path = require('path');
const { WebSocketServer } = require(path.join(__dirname, 'node_modules', 'ws'));

const started = process.hrtime.bigint();

function emit(event, fields) {
    const t = Number(process.hrtime.bigint() - started) / 1e9;
    // Pipes are written synchronously on Linux, so a line is out before a later exit().
    process.stdout.write(JSON.stringify({ event, t, ...fields }) + '\n');
}

function usage(message) {
    process.stderr.write(`ws_server.js: ${message}\n`);
    process.exit(64);
}

function parse(argv) {
    const opts = { host: '127.0.0.1', port: 0, mode: 'echo', reject: 0, retryAfter: null, silent: false };
    for (let i = 0; i < argv.length; ++i) {
        const arg = argv[i];
        const value = () => {
            if (i + 1 >= argv.length) usage(`${arg} needs a value`);
            return argv[++i];
        };
        if (arg === '--host') opts.host = value();
        else if (arg === '--port') opts.port = Number(value());
        else if (arg === '--mode') opts.mode = value();
        else if (arg === '--reject') opts.reject = Number(value());
        else if (arg === '--retry-after') opts.retryAfter = value();
        else if (arg === '--silent') opts.silent = true;
        else usage(`unknown argument ${arg}`);
    }
    if (!['echo', 'app-pong'].includes(opts.mode)) usage(`unknown mode ${opts.mode}`);
    if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad --port');
    if (opts.reject && (opts.reject < 100 || opts.reject > 599)) usage('bad --reject status');
    return opts;
}

const opts = parse(process.argv.slice(2));

// Protocol pings are answered by ws unless this server must stay mute on them.
const wss = new WebSocketServer({ noServer: true, autoPong: opts.mode === 'echo' && !opts.silent });
const server = http.createServer((req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain' });
    res.end('WebSocket only\n');
});

let nextId = 1;

function isAppPing(data, isBinary) {
    if (isBinary) return false;
    try {
        const m = JSON.parse(data.toString('utf8'));
        return m !== null && typeof m === 'object' && m.type === 'ping';
    } catch (e) {
        return false;
    }
}

server.on('upgrade', (req, socket, head) => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    if (opts.reject) {
        const headers = [`HTTP/1.1 ${opts.reject} ${http.STATUS_CODES[opts.reject] || 'Rejected'}`,
            'Connection: close', 'Content-Length: 0'];
        if (opts.retryAfter !== null) headers.push(`Retry-After: ${opts.retryAfter}`);
        socket.end(headers.join('\r\n') + '\r\n\r\n');
        emit('rejected', { remote, status: opts.reject });
        return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req, remote));
});

wss.on('connection', (ws, req, remote) => {
    const id = nextId++;
    emit('connection', { id, remote, target: req.url });
    ws.on('error', (err) => emit('error', { id, message: err.message }));
    ws.on('close', (code, reason) => emit('close', { id, code, reason: reason.toString('utf8') }));
    if (opts.silent) {
        // Stop reading: the kernel still takes the client's bytes, nothing comes back.
        ws._socket.pause();
        emit('silent', { id });
        return;
    }
    ws.on('ping', () => emit('ping', { id }));
    ws.on('pong', () => emit('pong', { id }));
    ws.on('message', (data, isBinary) => {
        if (opts.mode === 'app-pong' && isAppPing(data, isBinary)) {
            emit('app_ping', { id });
            ws.send('{"type":"pong"}');
            return;
        }
        if (isBinary) emit('message', { id, bytes: data.length });
        else emit('message', { id, text: data.toString('utf8') });
        ws.send(data, { binary: isBinary });
    });
});

function shutdown() {
    for (const ws of wss.clients) ws.terminate();
    server.close();
    process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.on('error', (err) => {
    process.stderr.write(`ws_server.js: ${err.message}\n`);
    process.exit(1);
});
server.listen(opts.port, opts.host, () => {
    emit('listening', { port: server.address().port, mode: opts.mode, reject: opts.reject || undefined,
        silent: opts.silent || undefined });
});
