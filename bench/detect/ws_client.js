#!/usr/bin/env node
// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The Node `ws` side of the detection benchmark (bench/detect/run.py), keeping itself alive
// with the heartbeat of ws's README ("How to detect and close broken connections?"): every
// interval, terminate() the connection if the previous ping got no pong, else ping again.
// The README runs it on the server; a client that pings applies it the same way. That
// pattern judges a ping at the next tick, so its timeout equals the interval; given a
// shorter --ping-timeout, a second timer judges each ping that much after it was sent.
// terminate() destroys the socket at once (no close handshake), and 'close' follows.
// On 'close' it connects again at once.
//
//   node ws_client.js --ping-interval S --ping-timeout S URL
//
// A text message "block S" makes the 'message' handler block the event loop for S seconds
// (Atomics.wait), as a slow synchronous call would (bench/detect/diagnose.py).
//
// JSON lines on stdout: {"event":"connected","t":T}, {"event":"disconnected","t":T,
// "reason":...}. T is CLOCK_MONOTONIC seconds (process.hrtime), as the driver reads it.
'use strict';

const WebSocket = require('ws');

function now() {
    return Number(process.hrtime.bigint()) / 1e9;
}

function emit(event, fields) {
    process.stdout.write(JSON.stringify({ event, t: now(), ...fields }) + '\n');
}

const args = process.argv.slice(2);
let interval = 0;
let timeout = 0;
let url = null;
for (let i = 0; i < args.length; ++i) {
    if (args[i] === '--ping-interval') interval = Number(args[++i]) * 1000;
    else if (args[i] === '--ping-timeout') timeout = Number(args[++i]) * 1000;
    else url = args[i];
}
if (!url || !(interval > 0) || !(timeout > 0) || timeout > interval) {
    process.stderr.write('usage: node ws_client.js --ping-interval S --ping-timeout S URL (timeout <= interval)\n');
    process.exit(64);
}

function connect() {
    const ws = new WebSocket(url);
    let opened = false;
    let ticker = null;
    let judge = null;
    let why = null;

    ws.isAlive = true;
    ws.on('open', () => {
        opened = true;
        emit('connected');
        ticker = setInterval(() => {
            if (ws.isAlive === false) {
                why = 'no pong by the next ping';
                return ws.terminate();
            }
            ws.isAlive = false;
            ws.ping();
            if (timeout < interval) {
                clearTimeout(judge);
                judge = setTimeout(() => {
                    if (ws.isAlive === false) {
                        why = 'no pong within the timeout';
                        ws.terminate();
                    }
                }, timeout);
            }
        }, interval);
    });
    ws.on('message', (data, isBinary) => {
        const text = isBinary ? '' : data.toString();
        if (text.startsWith('block ')) {
            Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, Number(text.slice(6)) * 1000);
        }
    });
    ws.on('pong', () => {
        ws.isAlive = true;
    });
    ws.on('error', () => {});
    ws.on('close', (code) => {
        clearInterval(ticker);
        clearTimeout(judge);
        if (opened) emit('disconnected', { reason: why || `close ${code}` });
        // A refused attempt is retried after a pause, not in a tight loop.
        setTimeout(connect, opened ? 0 : 100);
    });
}

connect();
