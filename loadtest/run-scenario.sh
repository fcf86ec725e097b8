#!/usr/bin/env bash
# Runs one load-test scenario against a freshly started release Corebridge (a fresh server, so
# that its RSS growth is measured from a clean heap), then stops that server.
#
#   loadtest/run-scenario.sh loadtest/scenarios/steady-fanout.toml [OUT_DIR]
#   TARGET=nchan loadtest/run-scenario.sh loadtest/scenarios/steady-broadcast-10k.toml
#
# Writes OUT_DIR/NAME[-nchan].json, .svg and .server.log (OUT_DIR defaults to
# target/loadtest). Extra environment for the server passes through (KAFKA_BROKERS,
# KAFKA_SOURCE_TOPICS, ...); INBOUND_PORT/API_HTTP_PORT must match the scenario's ports.
# A targeted scenario (`targeted = true`) gets EXTRACTORS declaring `data.user` of its event
# type, unless EXTRACTORS is set. TARGET=nchan runs the same clients against a fresh Nchan
# (../shared/peers/nchan-up, port 8090) instead, as the comparison peer. CB_BIN=/path runs
# another Corebridge binary (an A/B comparison with an older build); CB_TUNING=FILE passes
# `--tuning FILE` to the server.
# Exit status: the harness's (0 clean, 3 finished but not clean, 1 error).
set -euo pipefail

scenario=${1:?usage: $0 SCENARIO.toml [OUT_DIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/target/loadtest}
mkdir -p "$out"
name=$(basename "$scenario" .toml)
target=${TARGET:-corebridge}

cd "$root"
cargo build --release -p corebridge -p corebridge-loadtest

if [[ $target == nchan ]]; then
    peers=$(cd "$root/.." && pwd)/shared/peers
    "$peers/nchan-down" >/dev/null 2>&1 || true
    server=$("$peers/nchan-up" | tail -1)
    trap '"$peers/nchan-down" >/dev/null 2>&1 || true' EXIT
    set +e
    ./target/release/corebridge-loadtest run "$scenario" --target nchan --server-pid "$server" \
        --out "$out/$name-nchan.json" --report "$out/$name-nchan.svg"
    status=$?
    set -e
    exit $status
fi

port=$(sed -n 's/^inbound_port *= *\([0-9]*\).*/\1/p' "$scenario")
api=$(sed -n 's/^api_port *= *\([0-9]*\).*/\1/p' "$scenario")
port=${port:-4000}
api=${api:-4010}
for p in "$port" "$api"; do
    if ss -ltnH "sport = :$p" | grep -q .; then
        echo "port $p is already in use: stop that server or change the scenario's ports" >&2
        exit 1
    fi
done
if grep -Eq '^targeted *= *true' "$scenario" && [[ -z ${EXTRACTORS:-} ]]; then
    type=$(sed -n 's/^event_type *= *"\(.*\)".*/\1/p' "$scenario")
    export EXTRACTORS="{\"${type:-load}\":{\"user\":{\"stable_field_index\":0,\"event\":{\"json_pointer\":\"/data/user\"}}}}"
fi

# The default admission limit (5,000 new connections per minute) would refuse most of a
# storm; the harness measures the server, not its rate limit.
MAX_CONNECTIONS_PER_MINUTE=${MAX_CONNECTIONS_PER_MINUTE:-10000000} \
INBOUND_PORT=$port API_HTTP_PORT=$api LOG_LEVEL=${LOG_LEVEL:-warn} \
    "${CB_BIN:-./target/release/corebridge}" ${CB_TUNING:+--tuning "$CB_TUNING"} >"$out/$name.server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$api/health" >/dev/null 2>&1 && break
    if ! kill -0 "$server" 2>/dev/null; then
        echo "corebridge exited; see $out/$name.server.log" >&2
        exit 1
    fi
    sleep 0.1
done

set +e
./target/release/corebridge-loadtest run "$scenario" --server-pid "$server" \
    --out "$out/$name.json" --report "$out/$name.svg"
status=$?
set -e
exit $status
