#!/usr/bin/env bash
# #10's latency target, measured: p99 of (a) and of kafka-latency against the no-gateway
# floor for the same sockets and events, run back to back (floor, then Corebridge) PAIRS times;
# also http-latency (kafka-latency's events published over HTTP: no test broker involved).
#
#   loadtest/latency-vs-floor.sh [PAIRS]        # (a) and http-latency
#   KAFKA_BROKERS=127.0.0.1:19092 KAFKA_SOURCE_TOPICS=loadtest CB_KAFKA_FETCH_WAIT_MS=1 \
#     loadtest/latency-vs-floor.sh [PAIRS]      # and kafka-latency (topic `loadtest` made)
#
# With Kafka it also runs http-latency beside a second, idle node that only reads the topic
# (ports 4700/4710, the same fetch wait): the broker's polling load without the broker in the
# events' path ("http+poller"). kafka-latency against http+poller is the broker hop itself;
# http+poller against http-latency is what serving the polls costs the machine.
#
# Prints one line per pair: the floor's p99, Corebridge's and their ratio. The floor's latency
# runs from its send call, so it leaves out any wait before a burst; Corebridge's runs from
# the publisher's clock, waits included.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-2}
out=$(mktemp -d /tmp/cb-vs-floor.XXXXXX)
cargo build --release -q -p corebridge -p corebridge-loadtest

p99() { # the p99 in ms from a harness or floor report
    sed -n 's/.*latency .*p99 \([0-9.]*\) ms.*/\1/p' "$1" | tail -1
}

pair() { # NAME SCENARIO FLOOR-RATE I [ENV...]: the server's environment after I
    local name=$1 scenario=$2 rate=$3 i=$4
    shift 4
    ./target/release/corebridge-loadtest floor --connections 10000 --events 200 \
        --rate "$rate" > "$out/$name-floor-$i.txt" 2>&1
    env "$@" loadtest/run-scenario.sh "$scenario" "$out" > "$out/$name-cb-$i.txt" 2>&1 || {
        echo "$name: the scenario failed, see $out/$name-cb-$i.txt" >&2
        return 1
    }
    local f c
    f=$(p99 "$out/$name-floor-$i.txt")
    c=$(p99 "$out/$name-cb-$i.txt")
    printf '%-14s pair %d: floor p99 %7s ms, corebridge p99 %7s ms, ratio %s\n' \
        "$name" "$i" "$f" "$c" "$(awk -v c="$c" -v f="$f" 'BEGIN { printf "%.2f", c / f }')"
}

for i in $(seq 1 "$pairs"); do
    # (a) publishes over HTTP with no broker: a broker would order events per partition only.
    pair a loadtest/scenarios/steady-broadcast-10k.toml 1000 "$i" \
        -u KAFKA_BROKERS -u KAFKA_SOURCE_TOPICS
    # kafka-latency's workload without the broker: the gateway's part alone.
    pair http-latency loadtest/scenarios/http-latency.toml 10 "$i" \
        -u KAFKA_BROKERS -u KAFKA_SOURCE_TOPICS
    if [[ -n ${KAFKA_BROKERS:-} ]]; then
        INBOUND_PORT=4700 API_HTTP_PORT=4710 LOG_LEVEL=warn ./target/release/corebridge \
            > "$out/poller-$i.log" 2>&1 &
        poller=$!
        trap 'kill "$poller" 2>/dev/null || true' EXIT
        pair http+poller loadtest/scenarios/http-latency.toml 10 "$i" \
            -u KAFKA_BROKERS -u KAFKA_SOURCE_TOPICS
        kill "$poller"
        wait "$poller" 2>/dev/null || true
        trap - EXIT
        pair kafka-latency loadtest/scenarios/kafka-latency.toml 10 "$i"
    fi
done
echo "reports in $out"
