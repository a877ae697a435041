#!/usr/bin/env bash
# Redis-side cost of a publish through one Redis versus a three-master Redis Cluster, under the
# same load from loadtest through three roomcast nodes (docs/BENCHMARKS.md, "Redis Cluster").
#
#   loadtest/scripts/redis-cluster-bench.sh single|cluster [OUT_DIR]
#
# Environment: USERS (2400, in rooms of 4), RATE (publishes/s per user, 2), DURATION (20 s),
# RAMP (new users/s, 1200),
# and REDIS_CPU_PERCENT: when set, each redis-server runs in its own cgroup (v1 cpu controller)
# capped at that share of one core, so a Redis saturates while roomcast and the tester still
# have CPU to spare; then acked publishes/s is the backplane's capacity at that cap.
#
# Starts its own redis-server process(es) on ports 7390 (single) or 7391-7393 (cluster) and
# three roomcast nodes on 9391-9393, runs one bounded loadtest (loopback only), samples the CPU
# of every redis-server from /proc over the publishing window, prints a summary and stops
# everything it started. On a shared 2-core machine the three shards cannot each get a core,
# so uncapped it measures CPU per publish in each redis-server process, not wall-clock
# capacity; REDIS_CPU_PERCENT (below) makes Redis the bottleneck to measure capacity.
set -euo pipefail
cd "$(dirname "$0")/../.."

mode=${1:?usage: $0 single|cluster [OUT_DIR]}
out=${2:-target/redis-cluster-bench}
roomcast=$(realpath "${ROOMCAST:-target/release/roomcast}")
loadtest=$(realpath "${LOADTEST:-target/release/loadtest}")
users=${USERS:-2400}
rate=${RATE:-2}
duration=${DURATION:-20}
ramp_rate=${RAMP:-1200}
tck=$(getconf CLK_TCK)
mkdir -p "$out"
for tool in redis-server redis-cli jq; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

pids=()
cleanup() {
    NODES_DIR="$out/nodes" loadtest/scripts/start-nodes.sh stop || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Wait for them, so the next run can bind the same ports.
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for group in "${groups[@]}"; do rmdir "$group" 2>/dev/null || true; done
    sleep 1
}
groups=()

cap() { # PID: confines it to REDIS_CPU_PERCENT of one core, if set
    [[ -n ${REDIS_CPU_PERCENT:-} ]] || return 0
    local group=/sys/fs/cgroup/cpu/redis-cluster-bench-$1
    mkdir "$group"
    groups+=("$group")
    echo 100000 >"$group/cpu.cfs_period_us"
    echo $((REDIS_CPU_PERCENT * 1000)) >"$group/cpu.cfs_quota_us"
    echo "$1" >"$group/cgroup.procs"
}
trap cleanup EXIT

cpu() { awk -v t="$tck" '{ printf "%.3f", ($14 + $15) / t }' "/proc/$1/stat"; }

redis() { # PORT [extra args...]: one redis-server without persistence; appends its pid
    local port=$1
    shift
    mkdir -p "$out/redis-$port"
    rm -f "$out/redis-$port/nodes.conf"
    redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$out/redis-$port" "$@" >"$out/redis-$port.log" 2>&1 &
    pids+=($!)
    cap $!
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis-server on $port did not start" >&2
    exit 1
}

if [[ $mode == single ]]; then
    redis 7390
    export ROOMCAST_REDIS__URL=redis://127.0.0.1:7390
else
    for port in 7391 7392 7393; do
        redis "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-require-full-coverage no
    done
    redis-cli --cluster create 127.0.0.1:7391 127.0.0.1:7392 127.0.0.1:7393 \
        --cluster-replicas 0 --cluster-yes >"$out/cluster-create.log"
    until redis-cli -p 7391 cluster info | grep -q cluster_state:ok; do sleep 0.1; done
    export ROOMCAST_REDIS__CLUSTER_NODES='["redis://127.0.0.1:7391","redis://127.0.0.1:7392","redis://127.0.0.1:7393"]'
fi
export ROOMCAST_BROKER=redis ROOMCAST_DEMO=false RUST_LOG=warn
export ROOMCAST_REDIS__PREFIX=bench
NODES_DIR="$out/nodes" ROOMCAST=$roomcast loadtest/scripts/start-nodes.sh 3 9391 >/dev/null
for port in 9391 9392 9393; do
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.1; done
done
node_pids=$(cat "$out"/nodes/node-*.pid)

# Publishing runs from the end of the ramp to ramp + duration; sample inside it, 2 s in from
# each end, so connection set-up and drain are left out.
ramp=$(( (users + ramp_rate - 1) / ramp_rate ))
from=$((ramp + 2))
to=$((ramp + duration - 2))
"$loadtest" --url ws://127.0.0.1:9391/ws --url ws://127.0.0.1:9392/ws --url ws://127.0.0.1:9393/ws \
    --users "$users" --ramp "$ramp_rate" --rooms $((users / 4)) --room-size 4 \
    --publish-rate "$rate" --message-bytes 100 --duration "$duration" --drain 5 \
    --expect-no-loss -q --json "$out/$mode.json" >"$out/$mode.txt" &
lt=$!
sleep "$from"
before=(); for p in "${pids[@]}" $node_pids; do before+=("$(cpu "$p")"); done
sleep $((to - from))
after=(); for p in "${pids[@]}" $node_pids; do after+=("$(cpu "$p")"); done
status=0
wait "$lt" || status=$?

acks=$(jq --argjson a "$from" --argjson b "$to" \
    '[.series[] | select(.second >= $a and .second < $b) | .acks] | add' "$out/$mode.json")
window=$((to - from))
echo "mode $mode${REDIS_CPU_PERCENT:+ (each redis-server capped at $REDIS_CPU_PERCENT % of a core)}: loadtest exit $status; $acks publishes acked in the ${window} s window ($((acks / window))/s offered $((users * rate))/s)"
i=0
total=0
for p in "${pids[@]}"; do
    used=$(echo "${after[$i]} - ${before[$i]}" | bc -l)
    total=$(echo "$total + $used" | bc -l)
    printf '  redis-server pid %s: %.2f CPU-s = %.1f %% of a core, %.2f µs per publish\n' \
        "$p" "$used" "$(echo "100 * $used / $window" | bc -l)" "$(echo "1000000 * $used / $acks" | bc -l)"
    i=$((i + 1))
done
printf '  all redis-server processes: %.2f µs per publish\n' "$(echo "1000000 * $total / $acks" | bc -l)"
nodes=0
for p in $node_pids; do nodes=$(echo "$nodes + ${after[$i]} - ${before[$i]}" | bc -l); i=$((i + 1)); done
printf '  roomcast nodes: %.2f CPU-s, %.2f µs per publish\n' "$nodes" "$(echo "1000000 * $nodes / $acks" | bc -l)"
grep -E "published|deliveries|^  latency|ack latency|loss|order|PASS|FAIL" "$out/$mode.txt" | sed 's/^/  /'
exit "$status"
