#!/usr/bin/env bash
# Starts N roomcast nodes on 127.0.0.1:BASE_PORT, BASE_PORT+1, ... and prints one URL per line
# for loadtest's --url (or a scenario's `urls`). `start-nodes.sh stop` ends the nodes it started.
# Each node is its own process, so each gets its own 20,000-open-files allowance.
#
#   ROOMCAST=target/release/roomcast loadtest/scripts/start-nodes.sh 7 9101
#   loadtest/scripts/start-nodes.sh stop
#
# Without a shared broker every node keeps its own rooms (loadtest accounts for them apart, by
# epoch); for a cluster, pass ROOMCAST_BROKER=redis and ROOMCAST_REDIS__URL=... in the
# environment, which reaches every node like any other ROOMCAST_* setting.
#
# Every simulated user comes from 127.0.0.x, so the per-IP admission limits (1,000 connections
# and 50 new ones a second per address by default) would refuse a load test at its first
# thousand users. Unless already set, they are raised here; nothing else is changed.
set -euo pipefail

export ROOMCAST_LIMITS__MAX_CONNECTIONS_PER_IP=${ROOMCAST_LIMITS__MAX_CONNECTIONS_PER_IP:-1000000}
export ROOMCAST_LIMITS__CONNECT_RATE_PER_IP=${ROOMCAST_LIMITS__CONNECT_RATE_PER_IP:-100000}
export ROOMCAST_LIMITS__CONNECT_BURST_PER_IP=${ROOMCAST_LIMITS__CONNECT_BURST_PER_IP:-100000}
export ROOMCAST_LIMITS__MAX_PENDING_CONNECTIONS_PER_IP=${ROOMCAST_LIMITS__MAX_PENDING_CONNECTIONS_PER_IP:-100000}
export ROOMCAST_LIMITS__DIRECT_RATE_PER_SEC=${ROOMCAST_LIMITS__DIRECT_RATE_PER_SEC:-100000}
export ROOMCAST_LIMITS__DIRECT_BURST=${ROOMCAST_LIMITS__DIRECT_BURST:-100000}

roomcast=${ROOMCAST:-target/release/roomcast}
dir=${NODES_DIR:-${TMPDIR:-/tmp}/roomcast-nodes}

if [[ ${1:-} == stop ]]; then
    for pidfile in "$dir"/node-*.pid; do
        [[ -e $pidfile ]] || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
    exit 0
fi

if [[ $# -ne 2 ]]; then
    echo "usage: $0 COUNT BASE_PORT | $0 stop" >&2
    exit 64
fi
count=$1
base=$2
if [[ ! -x $roomcast ]]; then
    echo "$roomcast is not an executable; build it (cargo build --release -p roomcast) or set ROOMCAST" >&2
    exit 66
fi
mkdir -p "$dir"
for ((i = 0; i < count; i++)); do
    port=$((base + i))
    log="$dir/node-$port.log"
    "$roomcast" --listen "127.0.0.1:$port" --node-id "node-$port" >"$log" 2>&1 &
    echo $! >"$dir/node-$port.pid"
    # The node prints "roomcast listening on ADDR" once it is bound; give it 10 s.
    for _ in $(seq 100); do
        grep -q "roomcast listening on" "$log" && break
        if ! kill -0 "$(cat "$dir/node-$port.pid")" 2>/dev/null; then
            echo "node on port $port exited; see $log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep -q "roomcast listening on" "$log" || { echo "node on port $port did not start; see $log" >&2; exit 1; }
    echo "ws://127.0.0.1:$port/ws"
done
