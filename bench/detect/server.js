#!/usr/bin/env node
// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The one server of the detection benchmark (bench/detect/run.py). It listens on one port
// per client under test, so that the driver can tell the clients apart and cut each one's
// TCP flow by its port numbers. It never pings and never closes on its own: whatever the
// clients detect, they detect with their own heartbeat. It counts the pings each client
// sends (ws's 'ping' event; ws answers them by itself).
//
//   node server.js --host ADDR --ports P1,P2,... [--pong-delay MS]
//
// --pong-delay MS answers each ping MS milliseconds after it arrived (default 0: at once), as
// a peer that far away would: bench/detect/diagnose.py uses it so that a pong is still on its
// way when the client's loop blocks.
//
// JSON lines on stdout, one object per line with "event" and "t" (CLOCK_MONOTONIC seconds,
// the clock of Python's time.monotonic() and of steady_clock):
//   listening; connected (port, remote_port); ping (port); closed (port, remote_port);
//   busy_done (pings and sent per port).
// Commands on stdin, one per line:
//   busy S   send a short text message every 50 ms to the current client of every port for
//            S seconds, then report how many pings each port received meanwhile.
//   pong-delay MS  from now on, answer pings MS milliseconds after they arrive.
//   block S  on the next ping of every current client, send it the text message "block S"
//            before the pong (the clients block their loop for S seconds on it), and emit
//            block_sent (port, remote_port).
// A new connection on a port replaces the previous one, which is torn down: after a cut the
// old flow is dead and the client has already moved on.
'use strict';

const readline = require('readline');
const { WebSocketServer } = require('ws');

function now() {
    return Number(process.hrtime.bigint()) / 1e9;
}

function emit(event, fields) {
    process.stdout.write(JSON.stringify({ event, t: now(), ...fields }) + '\n');
}

function parse(argv) {
    const opts = { host: '127.0.0.1', ports: [], pongDelay: 0 };
    for (let i = 0; i < argv.length; ++i) {
        const value = () => {
            if (i + 1 >= argv.length) throw new Error(`${argv[i]} needs a value`);
            return argv[++i];
        };
        if (argv[i] === '--host') opts.host = value();
        else if (argv[i] === '--ports') opts.ports = value().split(',').map(Number);
        else if (argv[i] === '--pong-delay') opts.pongDelay = Number(value());
        else throw new Error(`unknown argument ${argv[i]}`);
    }
    if (opts.ports.length === 0 || opts.ports.some((p) => !(p > 0 && p < 65536))) {
        throw new Error('--ports P1,P2,... is required');
    }
    if (!(opts.pongDelay >= 0)) throw new Error('--pong-delay needs milliseconds >= 0');
    return opts;
}

const opts = parse(process.argv.slice(2));
const current = new Map();  // port -> the client's live ws
const pings = new Map();    // port -> pings received since start
const blockNext = new Set(); // live ws that get "block S" on their next ping
let blockSeconds = 0;
let listening = 0;

for (const port of opts.ports) {
    pings.set(port, 0);
    // Pongs are sent by the 'ping' handler below, so that they can be held back.
    const wss = new WebSocketServer({ host: opts.host, port, autoPong: false });
    wss.on('listening', () => {
        if (++listening === opts.ports.length) emit('listening', { ports: opts.ports });
    });
    wss.on('error', (err) => {
        process.stderr.write(`server.js: port ${port}: ${err.message}\n`);
        process.exit(1);
    });
    wss.on('connection', (ws, req) => {
        const remotePort = req.socket.remotePort;
        const previous = current.get(port);
        if (previous) previous.terminate();
        current.set(port, ws);
        emit('connected', { port, remote_port: remotePort });
        ws.on('ping', (data) => {
            pings.set(port, pings.get(port) + 1);
            emit('ping', { port, remote_port: remotePort });
            if (blockNext.delete(ws)) {
                ws.send(`block ${blockSeconds}`);
                emit('block_sent', { port, remote_port: remotePort });
            }
            if (opts.pongDelay > 0) {
                setTimeout(() => {
                    if (ws.readyState === ws.OPEN) ws.pong(data);
                }, opts.pongDelay);
            } else {
                ws.pong(data);
            }
        });
        ws.on('error', () => {});
        ws.on('close', () => {
            if (current.get(port) === ws) current.delete(port);
            blockNext.delete(ws);
            emit('closed', { port, remote_port: remotePort });
        });
    });
}

function busy(seconds) {
    const before = new Map(pings);
    const sent = new Map(opts.ports.map((p) => [p, 0]));
    let n = 0;
    const timer = setInterval(() => {
        ++n;
        for (const [port, ws] of current) {
            if (ws.readyState === ws.OPEN) {
                ws.send(`tick ${n}`);
                sent.set(port, sent.get(port) + 1);
            }
        }
    }, 50);
    setTimeout(() => {
        clearInterval(timer);
        const counts = {};
        const sentCounts = {};
        for (const port of opts.ports) {
            counts[port] = pings.get(port) - before.get(port);
            sentCounts[port] = sent.get(port);
        }
        emit('busy_done', { seconds, pings: counts, sent: sentCounts });
    }, seconds * 1000);
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'busy' && Number(arg) > 0) busy(Number(arg));
    else if (cmd === 'pong-delay' && Number(arg) >= 0) opts.pongDelay = Number(arg);
    else if (cmd === 'block' && Number(arg) > 0) {
        blockSeconds = Number(arg);
        for (const ws of current.values()) blockNext.add(ws);
    }
    else if (cmd) process.stderr.write(`server.js: unknown command '${line}'\n`);
});
// The driver going away (stdin closed) ends the server.
process.stdin.on('end', () => process.exit(0));
