#!/usr/bin/env node
// vigil: WebSocket connections that always find out they are dead.
// SPDX-License-Identifier: BSL-1.0
//
// The scale benchmark's Node peer: a `ws` server with the heartbeat of ws's README ("How to
// detect and close broken connections?"): one setInterval that walks every client,
// terminates those that did not answer the previous ping and pings the rest. Broadcasts use
// the README's pattern too (wss.clients.forEach + send). It speaks the same stdin/stdout
// protocol as `vigil-bench-scale server` (see scale_bench.cpp):
//
//   node ws_server.js [--port P] [--ping-ms 1000]
//   stdin: stats | broadcast K SIZE | quit
//
// ws comes from tests/peers (npm ci --prefix tests/peers).
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { WebSocketServer, WebSocket } = require(
    path.join(__dirname, '..', '..', 'tests', 'peers', 'node_modules', 'ws'));

const started = process.hrtime.bigint();

function emit(event, fields) {
    const now = process.hrtime.bigint();
    const line = { event, t: Number(now - started) / 1e9, mono_ns: Number(now), ...fields };
    process.stdout.write(JSON.stringify(line) + '\n');
}

function rssKb() {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) : -1;
}

const opts = { port: 0, pingMs: 1000 };
for (let i = 2; i < process.argv.length; i += 2) {
    const [arg, value] = [process.argv[i], process.argv[i + 1]];
    if (value === undefined) throw new Error(`${arg} needs a value`);
    if (arg === '--port') opts.port = Number(value);
    else if (arg === '--ping-ms') opts.pingMs = Number(value);
    else throw new Error(`unknown argument ${arg}`);
}

// The README's heartbeat, with the interval the benchmark asks for.
function heartbeat() {
    this.isAlive = true;
}

const wss = new WebSocketServer({ host: '127.0.0.1', port: opts.port, backlog: 4096 });

// Why connections ended (the stats report them, as the C++ processes do).
const ended = {};

wss.on('connection', function connection(ws) {
    ws.isAlive = true;
    ws.on('error', () => {});
    ws.on('pong', heartbeat);
    ws.on('close', (code) => { ended[`close ${code}`] = (ended[`close ${code}`] || 0) + 1; });
});

// How long the one ping callback runs: the event loop serves nothing else meanwhile.
const pingLoop = { last_ms: 0, max_ms: 0 };

const interval = setInterval(function ping() {
    const t0 = process.hrtime.bigint();
    wss.clients.forEach(function each(ws) {
        if (ws.isAlive === false) {
            ended.no_pong = (ended.no_pong || 0) + 1;
            return ws.terminate();
        }

        ws.isAlive = false;
        ws.ping();
    });
    pingLoop.last_ms = Number(process.hrtime.bigint() - t0) / 1e6;
    pingLoop.max_ms = Math.max(pingLoop.max_ms, pingLoop.last_ms);
}, opts.pingMs);

wss.on('close', function close() {
    clearInterval(interval);
});

wss.on('listening', () => emit('listening', { port: wss.address().port }));

const commands = readline.createInterface({ input: process.stdin });
commands.on('line', (line) => {
    const argv = line.trim().split(/\s+/);
    if (argv[0] === 'stats') {
        const ru = process.resourceUsage();
        emit('stats', {
            user_s: ru.userCPUTime / 1e6,
            sys_s: ru.systemCPUTime / 1e6,
            rss_kb: rssKb(),
            fds: fs.readdirSync('/proc/self/fd').length - 1,
            open: wss.clients.size,
            ended,
            ping_loop_last_ms: pingLoop.last_ms,
            ping_loop_max_ms: pingLoop.max_ms,
        });
    } else if (argv[0] === 'broadcast' && argv.length === 3) {
        const k = Number(argv[1]);
        let data = `b${k}:`;
        data += 'x'.repeat(Math.max(0, Number(argv[2]) - data.length));
        const t0 = process.hrtime.bigint();
        let queued = 0;
        wss.clients.forEach(function each(client) {
            if (client.readyState === WebSocket.OPEN) {
                client.send(data);
                ++queued;
            }
        });
        emit('broadcast', { k, t0_ns: Number(t0), t1_ns: Number(process.hrtime.bigint()), queued });
    } else if (argv[0] === 'quit') {
        process.exit(0);
    }
});
commands.on('close', () => process.exit(0));
