#!/bin/sh
# chat-demo: a chat server, a bot and you, on 127.0.0.1 (port $CHAT_PORT, default 9000).
#
# The bot says something every two seconds. Six seconds in, the demo freezes it (SIGSTOP):
# its TCP connection stays open but nothing answers the server's pings any more, like a
# phone whose app was suspended. The server evicts it within ping_interval + pong_timeout
# (5 + 3 s) and tells the room. Later the bot wakes up, finds its connection gone,
# reconnects on its own and sends what it was given while frozen.
#
# Type a line and press Enter to chat; Ctrl-D or Ctrl-C leaves.
set -u
bin=$(dirname "$0")
port=${CHAT_PORT:-9000}
url=ws://127.0.0.1:$port/

"$bin/chat-server" "$port" &
server=$!
# Clients that start before the server listens simply retry: the supervisor's backoff.
(n=1; while sleep 2; do echo "beep $n"; n=$((n + 1)); done) | "$bin/chat-client" "$url" >/dev/null 2>&1 &
bot=$!
(
    sleep 6
    echo "demo: freezing the bot (SIGSTOP); the server will evict it within 8 s" >&2
    kill -STOP $bot
    sleep 12
    echo "demo: waking the bot (SIGCONT)" >&2
    kill -CONT $bot
) &
director=$!
trap 'kill -CONT $bot 2>/dev/null; kill $director $bot $server 2>/dev/null' EXIT
trap 'exit 130' INT TERM HUP PIPE

echo "demo: type a line and press Enter to chat; Ctrl-D or Ctrl-C leaves" >&2
"$bin/chat-client" "$url"
