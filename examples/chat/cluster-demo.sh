#!/bin/sh
# cluster-demo: a chat room on three vigil server nodes behind nginx, fanned out through
# Redis, with three members that count what they hear; one node is killed halfway.
#
#   nginx        127.0.0.1:$CHAT_PORT (default 9000), round-robin over the three nodes
#   chat-server  127.0.0.1:$CHAT_PORT+1 .. +3, each linked to Redis (channel "chat")
#   redis-server 127.0.0.1:$CHAT_REDIS_PORT (default 6390)
#
# alice, bob and carol each send 100 numbered lines through nginx, one every 50 ms. Two
# seconds in, the demo kills one node with SIGKILL: its members' connections drop, they
# reconnect through nginx (which skips the dead node) and go on. At the end each member
# reports what it sent (every line delivered: confirmed by a node, resent if lost on the way)
# and, by the numbers, what it heard from the others; a member that was reconnecting misses
# what the room said meanwhile, and its report names those lines.
#
# Needs redis-server and nginx (Debian: apt-get install redis-server nginx).
set -u
bin=$(cd "$(dirname "$0")" && pwd)
port=${CHAT_PORT:-9000}
redis_port=${CHAT_REDIS_PORT:-6390}
for tool in redis-server nginx; do
    if ! command -v $tool >/dev/null 2>&1 && [ ! -x /usr/sbin/$tool ]; then
        echo "cluster-demo: $tool is needed (Debian: apt-get install redis-server nginx)" >&2
        exit 1
    fi
done
nginx=$(command -v nginx || echo /usr/sbin/nginx)
dir=$(mktemp -d "${TMPDIR:-/tmp}/vigil-chat-cluster.XXXXXX")
chmod 755 "$dir"
mkdir -p "$dir/tmp"
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$dir/redis.log" 2>&1 &
pids="$pids $!"

node_ports="$((port + 1)) $((port + 2)) $((port + 3))"
for p in $node_ports; do
    "$bin/chat-server" "$p" "redis://127.0.0.1:$redis_port" >"$dir/node-$p.log" 2>&1 &
    pids="$pids $!"
    eval "node_$p=$!"
done

upstreams=""
for p in $node_ports; do upstreams="$upstreams        server 127.0.0.1:$p max_fails=1 fail_timeout=30s;
"; done
cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
    upstream chat_nodes {
$upstreams    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://chat_nodes;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 60s;
        }
    }
}
CONF
"$nginx" -p "$dir/" -e "$dir/nginx-error.log" -c "$dir/nginx.conf" &
pids="$pids $!"

# Members that start before everything listens simply retry: the supervisor's backoff.
sleep 1
echo "cluster-demo: three nodes on ports $node_ports behind nginx on ws://127.0.0.1:$port/, Redis on $redis_port" >&2
members=""
for name in alice bob carol; do
    "$bin/chat-counter" "ws://127.0.0.1:$port/" "$name" 100 50 >"$dir/$name.report" &
    members="$members $!"
done
sleep 2
victim=$(echo $node_ports | cut -d' ' -f2)
eval "victim_pid=\$node_$victim"
echo "cluster-demo: killing the node on port $victim (SIGKILL); its members reconnect through nginx" >&2
kill -KILL "$victim_pid"
for m in $members; do wait "$m"; done
echo >&2
cat "$dir"/alice.report "$dir"/bob.report "$dir"/carol.report
