#!/usr/bin/env bash
# Records decoded and routed per server CPU-second: Kinesis next to Kafka, in one run.
#
#   loadtest/ingest-compare.sh [RECORDS] [RATE]
#
# For each source: a fresh release Corebridge (2 shards) reading only that source (a 4-shard
# Kinesis stream on kinesis-local, a 4-partition Kafka topic on the test broker), one SSE
# subscriber for the events, then RECORDS CloudEvents (about 200 B) put in bulk by the Python
# client at RATE records/s in four batches a second (boto3 PutRecords / confluent-kafka; the
# default 400/s is what kinesis-local sustains here); the server's CPU (utime + stime from
# /proc) is taken from just before the fill until every record was counted, so polling during
# the fill is included: the steady case, at the same pace for both sources.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
RATE=${2:-400}
SERVICES=$(cd .. && pwd)/shared/services
WORK=$(mktemp -d /tmp/cb-ingest.XXXXXX)
cleanup() {
    [ -n "${CB_PID:-}" ] && kill "$CB_PID" 2>/dev/null || true
    [ -n "${SSE_PID:-}" ] && kill "$SSE_PID" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
cargo build --release -q -p corebridge
DYNAMODB_PORT=4567 "$SERVICES"/kinesis-up 4568 >/dev/null
"$SERVICES"/kafka-up 19092 >/dev/null
NAME=ingest-$RANDOM$RANDOM
CLK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { (curl -s http://127.0.0.1:4010/metrics || true) | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}'; }

fill() { # kinesis|kafka
    python3 - "$1" "$NAME" "$N" "$RATE" <<'PY'
import json, sys, time
kind, name, n, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
batch = max(1, rate // 4)  # four batches a second, at the same pace for both sources
start_t = time.monotonic()
def pace(sent):
    due = start_t + sent / rate
    if due > time.monotonic():
        time.sleep(due - time.monotonic())
def ev(i):
    return json.dumps({"specversion": "1.0", "type": "greeting", "source": "/ingest-bench",
                       "id": f"r{i}", "data": {"n": i, "pad": "x" * 90}}).encode()
if kind == "kinesis":
    import boto3
    k = boto3.client("kinesis", endpoint_url="http://127.0.0.1:4568", region_name="us-east-1",
                     aws_access_key_id="x", aws_secret_access_key="x")
    for start in range(0, n, batch):
        recs = [{"Data": ev(i), "PartitionKey": f"k{i % 64}"} for i in range(start, min(n, start + batch))]
        r = k.put_records(StreamName=name, Records=recs)
        assert r["FailedRecordCount"] == 0, r
        pace(start + len(recs))
else:
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": "127.0.0.1:19092", "broker.address.family": "v4",
                  "linger.ms": 5})
    for start in range(0, n, batch):
        for i in range(start, min(n, start + batch)):
            p.produce(name, ev(i), key=f"k{i % 64}")
        p.flush(30)
        pace(min(n, start + batch))
PY
}

run() { # kinesis|kafka counter-metric
    local kind=$1 counter=$2
    if [ "$kind" = kinesis ]; then
        python3 tests/kinesis_client.py http://127.0.0.1:4568 create "$NAME" 4
        env AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x KINESIS_ENABLED=true KINESIS_STREAM="$NAME" \
            KINESIS_AWS_REGION=us-east-1 KINESIS_ENDPOINT=http://127.0.0.1:4568 CB_KINESIS_POLL_MS=200 \
            INBOUND_PORT=4000 API_HTTP_PORT=4010 LOG_LEVEL=warn \
            ./target/release/corebridge > "$WORK/$kind.log" 2>&1 &
    else
        python3 tests/kafka_client.py 127.0.0.1:19092 create "$NAME" 4 >/dev/null
        env KAFKA_BROKERS=127.0.0.1:19092 KAFKA_SOURCE_TOPICS="$NAME" CB_KAFKA_FETCH_WAIT_MS=100 \
            INBOUND_PORT=4000 API_HTTP_PORT=4010 LOG_LEVEL=warn \
            ./target/release/corebridge > "$WORK/$kind.log" 2>&1 &
    fi
    CB_PID=$!
    for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:4010/health && break; sleep 0.1; done
    curl -sN 'http://127.0.0.1:4000/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D' > "$WORK/$kind.sse" &
    SSE_PID=$!
    sleep 5 # every shard or partition read once, TLS roots and credentials loaded
    # Idle cost (polling an empty stream) over 5 s, to tell it from the cost of the records.
    local i0 i1
    i0=$(cpu_ticks "$CB_PID"); sleep 5; i1=$(cpu_ticks "$CB_PID")
    local t0 w0 got
    t0=$(cpu_ticks "$CB_PID")
    w0=$(date +%s.%N)
    fill "$kind"
    for _ in $(seq 600); do
        got=$(metric "$counter")
        [ "${got%.*}" -ge "$N" ] && break
        sleep 0.1
    done
    local t1 w1 delivered
    t1=$(cpu_ticks "$CB_PID")
    w1=$(date +%s.%N)
    delivered=$(metric corebridge_events_delivered_total)
    kill "$SSE_PID" "$CB_PID"; wait "$CB_PID" 2>/dev/null || true
    CB_PID=; SSE_PID=
    [ "$kind" = kinesis ] && python3 tests/kinesis_client.py http://127.0.0.1:4568 delete "$NAME"
    python3 - "$got" "$delivered" "$t0" "$t1" "$i0" "$i1" "$CLK" "$w0" "$w1" "$kind" <<'PY'
import sys
got, d = float(sys.argv[1]), float(sys.argv[2])
t0, t1, i0, i1, clk = (int(x) for x in sys.argv[3:8])
w0, w1, kind = float(sys.argv[8]), float(sys.argv[9]), sys.argv[10]
cpu, wall, idle_rate = (t1 - t0) / clk, w1 - w0, (i1 - i0) / clk / 5
above = max(cpu - idle_rate * wall, 1e-9)
print(f"| {kind} | {got:,.0f} / {d:,.0f} | {cpu:.2f} s ({idle_rate * 1000:.0f} ms/s idle) | "
      f"{got / cpu:,.0f} | {cpu / got * 1e6:.1f} us | {above / got * 1e6:.1f} us | {wall:.1f} s |")
PY
}

printf '[sessions]\nqueue_events = 100000\nqueue_bytes = 268435456\n' > "$WORK/tuning.toml"
export CB_TUNING_FILE=$WORK/tuning.toml # one subscriber takes every record, bursts included
echo "| source ($N records at $RATE/s, 4 shards/partitions, 1 SSE subscriber) | records read / delivered | server CPU (idle rate) | records per CPU-second | CPU per record | above idle | wall |"
echo "|---|---|---|---|---|---|---|"
run kinesis corebridge_kinesis_records_total
run kafka corebridge_kafka_records_consumed_total
