#!/usr/bin/env bash
# The clickstream router's cost: messages routed per router CPU-second with 3 integrations per
# app, and the cost of a registry cache miss, in one run.
#
#   loadtest/router-bench.sh [MESSAGES] [APPS]
#
# Fills an ingestion topic (4 partitions) with MESSAGES clickstream messages first, then starts
# a release router (`router start`, the registry stand-in tests/registry_server.py giving every
# app 3 integrations) and measures its CPU (utime + stime of the process, librdkafka's threads
# included) until it routed every message to all 3 topics. Two runs: one app (one cache miss)
# and APPS apps (APPS misses); the difference is what the misses cost.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
APPS=${2:-2000}
SERVICES=$(cd .. && pwd)/shared/services
WORK=$(mktemp -d /tmp/cb-router-bench.XXXXXX)
cleanup() {
    [ -n "${R_PID:-}" ] && kill "$R_PID" 2>/dev/null || true
    [ -n "${REG_PID:-}" ] && kill "$REG_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release -q -p corebridge
"$SERVICES"/kafka-up 19092 >/dev/null
"$SERVICES"/s3-up 4581 >/dev/null
BROKER=127.0.0.1:19092
CLK=$(getconf CLK_TCK)
python3 tests/registry_server.py 18180 bench-key & REG_PID=$!
sleep 0.5
python3 -c 'import boto3; boto3.client("s3", endpoint_url="http://127.0.0.1:4581", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x").create_bucket(Bucket="router-bench")' 2>/dev/null || true

run() { # apps
    local apps=$1 tag=rb-$RANDOM$RANDOM
    for t in "$tag-in:4" "$tag-retry:1" "$tag-i1:4" "$tag-i2:4" "$tag-i3:4"; do
        python3 tests/kafka_client.py $BROKER create "${t%%:*}" "${t##*:}" >/dev/null
    done
    python3 - "$apps" "$tag" <<'PY'
import json, sys, urllib.request
apps, tag = int(sys.argv[1]), sys.argv[2]
for a in range(apps):
    body = json.dumps({"app": f"app{a}", "clickstream": [
        {"name": f"i{i}", "topic": f"{tag}-i{i}", "enabled": True} for i in (1, 2, 3)]}).encode()
    urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:18180/set", body,
                           {"content-type": "application/json"})).read()
PY
    python3 - "$BROKER" "$tag-in" "$N" "$apps" <<'PY'
import json, sys
from confluent_kafka import Producer
broker, topic, n, apps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = Producer({"bootstrap.servers": broker, "broker.address.family": "v4", "linger.ms": 20})
for i in range(n):
    v = json.dumps({"appId": f"app{i % apps}", "messageId": f"m{i}", "type": "track",
                    "event": "Clicked", "properties": {"pad": "x" * 150}})
    while True:
        try:
            p.produce(topic, v.encode(), key=f"u{i % 997}".encode()); break
        except BufferError:
            p.poll(0.05)
p.flush(60)
PY
    env ER_BOOTSTRAP_SERVERS=$BROKER ER_KAFKA_GROUP_ID="$tag-g" ER_KAFKA_INGESTION_TOPIC="$tag-in" \
        ER_CLICKSTREAM_RETRY_TOPIC="$tag-retry" ER_HOUSTON_API_URL=http://127.0.0.1:18180/graphql \
        ER_HOUSTON_API_KEY=bench-key ER_CLICKSTREAM_RETRY_S3_BUCKET=router-bench ER_SERVER_PORT=18181 \
        AWS_ENDPOINT_URL_S3=http://127.0.0.1:4581 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
        ./target/release/corebridge router start --disable-sse > "$WORK/router-$apps.log" 2>&1 &
    R_PID=$!
    local w0 t1 w1 routed=0
    w0=$(date +%s.%N)
    for _ in $(seq 1200); do
        routed=$( (curl -s localhost:18181/metrics || true) | awk '/^corebridge_router_routed_total/ {s += $NF} END {print s + 0}')
        [ "${routed%.*}" -ge $((3 * N)) ] && break
        sleep 0.1
    done
    t1=$(awk '{print $14 + $15}' "/proc/$R_PID/stat")
    w1=$(date +%s.%N)
    local m
    m=$(curl -s localhost:18181/metrics)
    kill "$R_PID"; wait "$R_PID" 2>/dev/null || true; R_PID=
    python3 - "$N" "$apps" "$routed" "$t1" "$CLK" "$w0" "$w1" "$m" <<'PY'
import sys
n, apps, routed, t1, clk = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
wall = float(sys.argv[7]) - float(sys.argv[6])
m = {}
for line in sys.argv[8].splitlines():
    if line and not line.startswith("#"):
        k, _, v = line.rpartition(" ")
        m[k] = float(v)
cpu = t1 / clk
misses = m.get('corebridge_router_cache_total{result="miss"}', 0)
lat = m.get("corebridge_router_registry_seconds_sum", 0) / max(1, m.get("corebridge_router_registry_seconds_count", 1))
print(f"| {apps} | {n:,} -> {routed:,.0f} | {cpu:.2f} s | {n / cpu:,.0f} | {cpu / n * 1e6:.1f} us | {misses:.0f} | {lat * 1000:.2f} ms | {wall:.1f} s |")
PY
}
echo "| apps (3 integrations each) | messages -> routed | router CPU (whole process, start-up included) | messages per CPU-second | CPU per message | registry lookups | lookup latency (mean) | wall |"
echo "|---|---|---|---|---|---|---|---|"
run 1
run "$APPS"
