#!/usr/bin/env bash
# User-space instructions per unit of work, counted by callgrind: a figure this noisy machine
# cannot move (it counts instructions, not time), for judging a change to a hot path.
#
#   loadtest/callgrind.sh proxy      # per proxied GET (2,000 keep-alive GETs, 4 connections)
#   loadtest/callgrind.sh connect    # per new SSE connection (1,000 at 500/s, held, closed)
#   loadtest/callgrind.sh targeted   # per published event (500 users, 2,000 events at 200/s)
#
# Starts a fresh release Corebridge under `valgrind --tool=callgrind --instr-atstart=no`,
# warms it up, counts only while the work runs, then prints the count per unit and leaves
# the profile (read it with `callgrind_annotate --inclusive=yes FILE`). Needs valgrind (and
# nginx for `proxy`: the upstream answering 1 KiB, as in proxy-compare.sh). Ports 4000, 4010
# and 18091 must be free. nginx itself proxying the same GETs measures 19,962 (README).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?usage: $0 proxy|connect|targeted}
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
cargo build --release -q -p corebridge -p corebridge-loadtest

WORK=$(mktemp -d /tmp/cb-callgrind.XXXXXX)
cleanup() {
    [ -n "${VG_PID:-}" ] && kill "$VG_PID" 2>/dev/null || true
    [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
    sleep 0.3
}
trap cleanup EXIT

start() { # extra environment for the server
    env "$@" INBOUND_PORT=4000 API_HTTP_PORT=4010 LOG_LEVEL=warn \
        MAX_CONNECTIONS_PER_MINUTE=10000000 \
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
        ./target/release/corebridge > "$WORK/server.log" 2>&1 &
    VG_PID=$!
    for _ in $(seq 150); do
        curl -sf -o /dev/null http://127.0.0.1:4010/health && return 0
        sleep 0.2
    done
    echo "the server did not start; see $WORK/server.log" >&2
    exit 1
}

# Prints the instructions counted per $units (`events`: the number of published events the
# profile saw parsed).
report() { # units label
    local units=$1 label=$2 dump total
    callgrind_control -d "$VG_PID" > /dev/null 2>&1
    dump=$(ls "$WORK"/callgrind.out.* | head -1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    if [ "$units" = events ]; then
        units=$(callgrind_annotate --tree=caller "$dump" 2>/dev/null |
            grep -B1 -F '*  ???:corebridge::proto::cloudevents::from_http ' |
            grep -oE 'publish::publish::\{\{closure\}\} \([0-9,]+x\)' | grep -oE '[0-9,]+' | tr -d ,)
    fi
    echo "$label: $((total / units)) user-space instructions per unit, $units units (profile: $dump)"
}

# Runs "$@" with counting on, then reports.
count() { # units label command...
    local units=$1 label=$2
    shift 2
    callgrind_control -i on "$VG_PID" > /dev/null 2>&1
    "$@"
    report "$units" "$label"
}

quiet() { # command... with its output in $WORK/run.log
    "$@" > "$WORK/run.log" 2>&1
}

scenario() { # base.toml replacements... -> a scaled-down copy
    local out="$WORK/$(basename "$1")"
    cp "$1" "$out"
    shift
    for r in "$@"; do sed -i "s/$r/" "$out"; done
    echo "$out"
}

case $what in
proxy)
    command -v nginx >/dev/null || { echo "nginx is needed: apt-get install -y nginx" >&2; exit 1; }
    BODY_1K=$(head -c 1024 /dev/zero | tr '\0' 'x')
    cat > "$WORK/upstream.conf" <<CONF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream.error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $WORK/b; proxy_temp_path $WORK/p;
    server { listen 127.0.0.1:18091; keepalive_requests 1000000;
        location / { return 200 '$BODY_1K'; } } }
CONF
    nginx -c "$WORK/upstream.conf" -g "daemon on;"
    cat > "$WORK/apis.json" <<JSON
[{"id":"bench","name":"bench","proxy":{"target_url":"127.0.0.1","port":18091},
  "version_data":{"default":{"endpoints":[{"id":"get","method":"GET","path_regex":"/bench"}]}}}]
JSON
    start PROXY_CONFIG_FILE="$WORK/apis.json"
    cat > "$WORK/drive.py" <<'PY'
# N sequential keep-alive GETs on each of 4 connections.
import socket, sys, threading
n = int(sys.argv[1])
req = b"GET /bench HTTP/1.1\r\nhost: 127.0.0.1:4000\r\nuser-agent: drive\r\naccept: */*\r\n\r\n"
def run():
    s = socket.create_connection(("127.0.0.1", 4000))
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while True:
            i = buf.find(b"\r\n\r\n")
            if i >= 0:
                length = int(buf[:i].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(buf) >= i + 4 + length:
                    buf = buf[i + 4 + length:]
                    break
            buf += s.recv(65536)
    s.close()
threads = [threading.Thread(target=run) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
PY
    python3 "$WORK/drive.py" 50
    count 2000 "proxied GET" python3 "$WORK/drive.py" 500
    ;;
connect)
    start
    sc=$(scenario loadtest/scenarios/idle-hold-19k.toml "^connections = .*/connections = 1000" \
        "^connect_rate = .*/connect_rate = 500" "^hold_seconds = .*/hold_seconds = 1")
    count 1000 "new SSE connection" quiet \
        ./target/release/corebridge-loadtest run "$sc" --out "$WORK/run.json"
    ;;
targeted)
    start EXTRACTORS='{"load":{"user":{"stable_field_index":0,"event":{"json_pointer":"/data/user"}}}}'
    sc=$(scenario loadtest/scenarios/targeted-10k.toml "^connections = .*/connections = 500" \
        "^connect_rate = .*/connect_rate = 500" "^events = .*/events = 2000" "^rate = .*/rate = 200")
    # Counting starts once the 500 users are connected (1 s at 500/s, under valgrind more)
    # and covers the events published from then on.
    ./target/release/corebridge-loadtest run "$sc" --out "$WORK/run.json" > "$WORK/run.log" &
    run=$!
    sleep 4
    callgrind_control -i on "$VG_PID" > /dev/null 2>&1
    wait "$run"
    report events "published event"
    ;;
*)
    echo "usage: $0 proxy|connect|targeted" >&2
    exit 2
    ;;
esac
