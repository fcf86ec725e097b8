#!/usr/bin/env bash
# The API gateway against nginx proxy_pass on the same upstream, in one run.
#
#   loadtest/proxy-compare.sh [CONNECTIONS] [SECONDS] [BODY_BYTES]
#
# Starts an upstream (nginx answering `return 200` with a 1 KiB body on 127.0.0.1:18091), nginx
# as a reverse proxy to it (2 workers, upstream keepalive, access log off, on :18092) and a
# fresh release Corebridge (2 shards, PROXY_CONFIG_FILE routing /bench to the upstream, on
# :4000), then drives each with the same closed-loop keep-alive load
# (`corebridge-loadtest proxy`), twice each in the order A B B A, and prints one markdown
# table (each cell: first run / second run): requests/s, latency, and the server's CPU per
# request (process and children, from /proc; the figure that does not depend on how the load
# generator shares the cores), then the ratio of requests per server CPU-second.
# BODY_BYTES > 0 sends POSTs with a body.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${1:-64}
SECS=${2:-10}
BODY=${3:-0}
WORK=$(mktemp -d /tmp/cb-proxy-bench.XXXXXX)
cleanup() {
    [ -n "${CB_PID:-}" ] && kill "$CB_PID" 2>/dev/null || true
    for conf in upstream proxy; do
        [ -f "$WORK/$conf.pid" ] && kill "$(cat "$WORK/$conf.pid")" 2>/dev/null || true
    done
    sleep 0.3
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v nginx >/dev/null || { echo "nginx is needed: apt-get install -y nginx" >&2; exit 1; }
cargo build --release -q -p corebridge -p corebridge-loadtest

BODY_1K=$(head -c 1024 /dev/zero | tr '\0' 'x')
nginx_conf() { # name workers server-block
    cat > "$WORK/$1.conf" <<CONF
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    $3
}
CONF
    nginx -c "$WORK/$1.conf" -g "daemon on;"
}
nginx_conf upstream 1 "server { listen 127.0.0.1:18091; keepalive_requests 1000000;
    location / { return 200 '$BODY_1K'; } }"
nginx_conf proxy 2 "upstream up { server 127.0.0.1:18091; keepalive 64; keepalive_requests 1000000; }
    server { listen 127.0.0.1:18092; keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

cat > "$WORK/apis.json" <<JSON
[{"id":"bench","name":"bench","proxy":{"target_url":"127.0.0.1","port":18091},
  "version_data":{"default":{"endpoints":[
    {"id":"get","method":"GET","path_regex":"/bench"},
    {"id":"post","method":"POST","path_regex":"/bench"}]}}}]
JSON
PROXY_CONFIG_FILE="$WORK/apis.json" INBOUND_PORT=4000 API_HTTP_PORT=4010 LOG_LEVEL=warn \
    ./target/release/corebridge > "$WORK/corebridge.log" 2>&1 &
CB_PID=$!
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:4000/bench && break; sleep 0.1; done
sleep 0.5

run() { # name url pid
    ./target/release/corebridge-loadtest proxy --url "$2" --pid "$3" --connections "$CONNS" \
        --seconds "$SECS" --body "$BODY" > "$WORK/$1.json"
}
# A B B A: whichever runs first or last on this noisy machine, each server gets one of each.
run corebridge-1 http://127.0.0.1:4000/bench "$CB_PID"
run nginx-1 http://127.0.0.1:18092/bench "$(cat "$WORK/proxy.pid")"
run nginx-2 http://127.0.0.1:18092/bench "$(cat "$WORK/proxy.pid")"
run corebridge-2 http://127.0.0.1:4000/bench "$CB_PID"

python3 - "$WORK" "$CONNS" "$BODY" <<'PY'
import json, sys
work, conns, body = sys.argv[1], sys.argv[2], sys.argv[3]
# Each cell: the first run / the second.
rows = [(n, [json.load(open(f"{work}/{n}-{i}.json")) for i in (1, 2)]) for n in ("corebridge", "nginx")]
print(f"| {conns} keep-alive connections, {'POST ' + body + ' B' if body != '0' else 'GET'}, 1 KiB responses | " + " | ".join(n for n, _ in rows) + " |")
print("|---|" + "---|" * len(rows))
def row(label, f):
    print(f"| {label} | " + " | ".join(" / ".join(f(r) for r in runs) for _, runs in rows) + " |")
row("requests/s", lambda r: f"{r['requests_per_second']:,.0f}")
row("server CPU per request", lambda r: f"{r['server_cpu_us_per_request']:.1f} us")
row("requests per server CPU-second", lambda r: f"{r['requests_per_server_cpu_second']:,.0f}")
row("latency p50 / p99 / p99.9", lambda r: f"{r['latency_us']['p50']/1000:.2f} / {r['latency_us']['p99']/1000:.2f} / {r['latency_us']['p999']/1000:.2f} ms")
row("errors", lambda r: str(r["errors"]))
row("server RSS", lambda r: f"{r['server_rss_bytes']/1e6:.1f} MB")
row("load generator CPU per request", lambda r: f"{r['harness_cpu_us_per_request']:.1f} us")
per_cpu = {n: sum(r["requests_per_server_cpu_second"] for r in runs) / 2 for n, runs in rows}
print(f"\nCorebridge serves {per_cpu['corebridge'] / per_cpu['nginx']:.0%} of nginx's requests per server CPU-second (mean of two runs each, A B B A).")
PY
