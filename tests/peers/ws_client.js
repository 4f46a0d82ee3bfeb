#!/usr/bin/env node
// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// A WebSocket client built on Node's `ws`, for vigil's server tests. It keeps itself alive
// the way the ws README teaches: a ping every interval, and the connection is terminated
// when the previous ping got no pong by the next tick. It reports JSON lines on stdout, one
// object per line with "event" and "t" (seconds since start):
//   open (with protocol, the subprotocol agreed); ping (the server pinged us); pong (answer to our ping, with rtt_ms); message
//   (text, or bytes for binary); terminated (our heartbeat gave up); silent; close (code,
//   reason); error (message).
//
//   node ws_client.js [--ping-interval MS] [--send TEXT]... [--silent-after MS]
//                     [--protocol NAME]... [--header NAME:VALUE]... [--origin ORIGIN] URL
//
//   --ping-interval MS  0 (default) sends no pings.
//   --send TEXT         sent once the connection is open (repeatable, in order).
//   --silent-after MS   that long after the open, stop reading, writing and answering pings
//                       without closing: a client that vanished (a frozen phone, a pulled
//                       cable). Only the server's heartbeat can find out.
//   --protocol NAME     a subprotocol to offer (repeatable, in order).
//   --header N:V        an extra header of the upgrade request (repeatable).
//   --origin ORIGIN     the Origin header, as a browser sends it.
//
// Exits 0 when the connection has closed, 1 if it never opened (a refused upgrade prints
// "rejected" with the HTTP status). SIGTERM or SIGINT closes the connection (1000, at most
// half a second) and exits 0.
'use strict';

const path = require('path');
const WebSocket = require(path.join(__dirname, 'node_modules', 'ws'));

const started = process.hrtime.bigint();

function emit(event, fields) {
    const t = Number(process.hrtime.bigint() - started) / 1e9;
    process.stdout.write(JSON.stringify({ event, t, ...fields }) + '\n');
}

function usage(message) {
    process.stderr.write(`ws_client.js: ${message}\n`);
    process.exit(64);
}

function parse(argv) {
    const opts = { url: null, pingInterval: 0, send: [], silentAfter: null, protocols: [], headers: {}, origin: null };
    for (let i = 0; i < argv.length; ++i) {
        const arg = argv[i];
        const value = () => {
            if (i + 1 >= argv.length) usage(`${arg} needs a value`);
            return argv[++i];
        };
        if (arg === '--ping-interval') opts.pingInterval = Number(value());
        else if (arg === '--send') opts.send.push(value());
        else if (arg === '--silent-after') opts.silentAfter = Number(value());
        else if (arg === '--protocol') opts.protocols.push(value());
        else if (arg === '--origin') opts.origin = value();
        else if (arg === '--header') {
            const h = value();
            const colon = h.indexOf(':');
            if (colon <= 0) usage(`bad --header ${h}`);
            opts.headers[h.slice(0, colon).trim()] = h.slice(colon + 1).trim();
        }
        else if (arg.startsWith('--')) usage(`unknown argument ${arg}`);
        else if (opts.url === null) opts.url = arg;
        else usage(`unexpected argument ${arg}`);
    }
    if (opts.url === null) usage('a URL is needed');
    if (!(opts.pingInterval >= 0)) usage('bad --ping-interval');
    if (opts.silentAfter !== null && !(opts.silentAfter >= 0)) usage('bad --silent-after');
    return opts;
}

const opts = parse(process.argv.slice(2));

// Pongs are sent by hand, so that going silent can stop them even for frames already read.
const wsOptions = { autoPong: false, headers: opts.headers };
if (opts.origin !== null) wsOptions.origin = opts.origin;
const ws = new WebSocket(opts.url, opts.protocols, wsOptions);
let silent = false;
let opened = false;
let ticker = null;
let pingSent = null;
let awaitingPong = false;

function stopTicker() {
    if (ticker !== null) {
        clearInterval(ticker);
        ticker = null;
    }
}

ws.on('open', () => {
    opened = true;
    emit('open', { protocol: ws.protocol });
    for (const text of opts.send) ws.send(text);
    if (opts.pingInterval > 0) {
        ticker = setInterval(() => {
            if (awaitingPong) {
                emit('terminated', { reason: 'no pong' });
                stopTicker();
                ws.terminate();
                return;
            }
            awaitingPong = true;
            pingSent = process.hrtime.bigint();
            ws.ping();
        }, opts.pingInterval);
    }
    if (opts.silentAfter !== null) {
        setTimeout(() => {
            silent = true;
            stopTicker();
            // The kernel keeps receiving; this process just never looks again.
            ws._socket.pause();
            // A paused socket does not keep Node's event loop alive: without this the process
            // would exit, and its kernel would close the connection for it.
            setInterval(() => {}, 60000);
            emit('silent', {});
        }, opts.silentAfter);
    }
});

ws.on('ping', (data) => {
    if (silent) return;
    emit('ping', {});
    ws.pong(data);
});

ws.on('pong', () => {
    if (silent) return;
    awaitingPong = false;
    const rtt = pingSent === null ? null : Number(process.hrtime.bigint() - pingSent) / 1e6;
    emit('pong', { rtt_ms: rtt });
});

ws.on('message', (data, isBinary) => {
    if (silent) return;
    if (isBinary) emit('message', { bytes: data.length });
    else emit('message', { text: data.toString('utf8') });
});

ws.on('unexpected-response', (req, res) => {
    emit('rejected', { status: res.statusCode });
    req.destroy();
    process.exit(1);
});

ws.on('error', (err) => emit('error', { message: err.message }));

ws.on('close', (code, reason) => {
    stopTicker();
    emit('close', { code, reason: reason.toString('utf8') });
    process.exit(opened ? 0 : 1);
});

function shutdown() {
    stopTicker();
    if (silent || ws.readyState !== WebSocket.OPEN) process.exit(0);
    ws.close(1000, 'bye');
    setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
