#!/bin/sh
# feed-demo: a local market-data feed and a client, on 127.0.0.1 (port $FEED_PORT, default
# 9001). The feed stalls 5 s after each subscription: still connected, still answering
# pings, but no more ticks. The client's idle_timeout (2 s) notices, it reconnects and
# re-subscribes, and the ticks flow again. Ctrl-C ends it. Arguments go to the client:
# --json prints JSON lines, --symbols A,B picks the symbols.
set -u
bin=$(dirname "$0")
port=${FEED_PORT:-9001}

# The server's log goes to stderr, so that the client's --json output stays clean.
"$bin/feed-server" --port "$port" --stall-after 5 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
trap 'exit 130' INT TERM HUP PIPE

"$bin/feed-client" "ws://127.0.0.1:$port/" "$@"
