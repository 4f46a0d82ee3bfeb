#!/usr/bin/env node
// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// Node's `ws` with permessage-deflate (RFC 7692), for vigil's compression tests. It reports
// JSON lines on stdout, one object per line with "event" and "t" (seconds since start).
//
//   node deflate_peer.js server [--no-deflate] [--bomb MIB]
//   node deflate_peer.js client [--no-deflate] [--bomb MIB] [--sizes N,N,...] URL
//
// server: first line {"event":"listening","port":P}; echoes every message with its type;
//   connection (offered: the client's Sec-WebSocket-Extensions, extensions: what was
//   agreed), message (bytes, binary), close (code).
// client: open (extensions); for each size, a text and a binary message of that many bytes
//   (JSON-like, so it compresses; the largest sent in three fragments) and the echo compared
//   byte for byte: echoed (size, binary, same); then done, and a close with 1000.
// --bomb MIB: instead, send one binary message of MIB mebibytes of zeros (about a
//   thousandth of it compressed) once open: bomb_sent, then close (code) when the peer ends it.
// --no-deflate: compression off (the other side must then fall back to none).
'use strict';

const path = require('path');
const WebSocket = require(path.join(__dirname, 'node_modules', 'ws'));

const started = process.hrtime.bigint();

function emit(event, fields) {
    const t = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(JSON.stringify({ event, t, ...fields }) + '\n');
}

function usage(message) {
    process.stderr.write(`deflate_peer.js: ${message}\n`);
    process.exit(64);
}

function parse(argv) {
    const opts = { role: argv[0], url: null, deflate: true, bomb: 0, sizes: [10, 100, 5000, 200000] };
    if (opts.role !== 'server' && opts.role !== 'client') usage('first argument: server or client');
    for (let i = 1; i < argv.length; ++i) {
        const arg = argv[i];
        const value = () => {
            if (i + 1 >= argv.length) usage(`${arg} needs a value`);
            return argv[++i];
        };
        if (arg === '--no-deflate') opts.deflate = false;
        else if (arg === '--bomb') opts.bomb = Number(value());
        else if (arg === '--sizes') opts.sizes = value().split(',').map(Number);
        else if (arg.startsWith('--')) usage(`unknown argument ${arg}`);
        else if (opts.url === null) opts.url = arg;
        else usage(`unexpected argument ${arg}`);
    }
    if (!(opts.bomb >= 0)) usage('bad --bomb');
    if (opts.sizes.some((n) => !(n > 0))) usage('bad --sizes');
    if (opts.role === 'client' && opts.url === null) usage('a URL is needed');
    return opts;
}

const opts = parse(process.argv.slice(2));
// threshold 0: every message compressed, the smallest too.
const deflate = opts.deflate ? { threshold: 0 } : false;
const maxPayload = 512 * 1024 * 1024;

function sendBomb(ws) {
    ws.send(Buffer.alloc(opts.bomb * 1024 * 1024), { binary: true }, (err) => {
        emit('bomb_sent', { mib: opts.bomb, error: err ? err.message : null });
    });
}

// Deterministic, compressible, and different for every size and type.
function payload(size, binary) {
    let s = '';
    for (let i = 0; s.length < size; ++i)
        s += `{"type":"trade","symbol":"BTC-USD","price":${40000 + (i * 7) % 1000},"qty":${i % 13},"binary":${binary}}`;
    return Buffer.from(s.slice(0, size), 'utf8');
}

function runServer() {
    const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: deflate, maxPayload });
    wss.on('listening', () => emit('listening', { port: wss.address().port }));
    wss.on('connection', (ws, req) => {
        emit('connection', { offered: req.headers['sec-websocket-extensions'] || '', extensions: ws.extensions });
        if (opts.bomb > 0) sendBomb(ws);
        ws.on('message', (data, isBinary) => {
            emit('message', { bytes: data.length, binary: isBinary });
            ws.send(data, { binary: isBinary });
        });
        ws.on('close', (code) => emit('close', { code }));
        ws.on('error', (err) => emit('error', { message: err.message }));
    });
    const stop = () => wss.close(() => process.exit(0));
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

function runClient() {
    const ws = new WebSocket(opts.url, { perMessageDeflate: deflate, maxPayload });
    const queue = [];
    for (const size of opts.sizes) for (const binary of [false, true]) queue.push({ size, binary });
    const largest = Math.max(...opts.sizes);
    let expected = null;

    const next = () => {
        if (queue.length === 0) {
            emit('done', {});
            ws.close(1000, 'done');
            return;
        }
        const m = queue.shift();
        expected = { ...m, data: payload(m.size, m.binary) };
        if (m.size === largest && m.size >= 3) {
            const third = Math.floor(m.size / 3);
            ws.send(expected.data.subarray(0, third), { binary: m.binary, fin: false });
            ws.send(expected.data.subarray(third, 2 * third), { binary: m.binary, fin: false });
            ws.send(expected.data.subarray(2 * third), { binary: m.binary, fin: true });
        } else {
            ws.send(expected.data, { binary: m.binary });
        }
    };

    ws.on('open', () => {
        emit('open', { extensions: ws.extensions });
        if (opts.bomb > 0) sendBomb(ws);
        else next();
    });
    ws.on('message', (data, isBinary) => {
        if (expected === null) return;
        const same = isBinary === expected.binary && Buffer.compare(data, expected.data) === 0;
        emit('echoed', { size: expected.size, binary: expected.binary, same });
        next();
    });
    ws.on('unexpected-response', (req, res) => {
        emit('rejected', { status: res.statusCode });
        process.exit(1);
    });
    ws.on('error', (err) => emit('error', { message: err.message }));
    ws.on('close', (code) => {
        emit('close', { code });
        process.exit(0);
    });
    process.on('SIGTERM', () => process.exit(0));
}

if (opts.role === 'server') runServer();
else runClient();
