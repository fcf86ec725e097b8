#!/usr/bin/env bash
# Runs scenarios against Corebridge and then Nchan (the comparison peer), each on a freshly
# started server, and prints one side-by-side table (markdown) of what each cost:
#
#   loadtest/compare.sh loadtest/scenarios/steady-broadcast-10k.toml loadtest/scenarios/targeted-10k.toml
#
# Results go to OUT_DIR (default target/loadtest/compare). A row per scenario and server:
# server CPU per delivery (per event for targeted scenarios), achieved publish rate, latency
# p50/p99/p99.9, server RSS per connection, server CPU per new connection, the harness's own
# CPU per delivery, and whether the run was clean.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT_DIR:-$root/target/loadtest/compare}
mkdir -p "$out"
files=()
for scenario in "$@"; do
    name=$(basename "$scenario" .toml)
    "$root/loadtest/run-scenario.sh" "$scenario" "$out" >"$out/$name.run.log" 2>&1 || true
    TARGET=nchan "$root/loadtest/run-scenario.sh" "$scenario" "$out" >"$out/$name-nchan.run.log" 2>&1 || true
    files+=("$out/$name.json" "$out/$name-nchan.json")
done
python3 - "${files[@]}" <<'PY'
import json, sys
print("| scenario | server | server CPU per delivery | publishes/s | latency p50 / p99 / p99.9 | RSS per connection | CPU per new connection | harness CPU per delivery | clean |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    try:
        d = json.load(open(path))
    except OSError:
        print(f"| {path} | (no result) | | | | | | | |")
        continue
    s, sv, l, h = d["scenario"], d["server"], d["latency"], d["harness"]
    p = d.get("publishing") or {}
    est = d["connections"]["established"] or 1
    per = sv.get("cpu_us_per_delivery")
    per = f"{per:.2f} us" if per is not None else "-"
    conn = (sv.get("cpu_seconds_connect") or 0) * 1e6 / est
    hc = h.get("cpu_us_per_delivery")
    hc = f"{hc:.2f} us" if hc is not None else "-"
    print(f"| {s['name']} | {s.get('target', 'corebridge')} | {per} | {p.get('events_per_second', 0):.0f} "
          f"| {l['p50_ms']:.2f} / {l['p99_ms']:.2f} / {l['p99_9_ms']:.2f} ms | {sv.get('rss_bytes_per_connection') or 0:.0f} B "
          f"| {conn:.0f} us | {hc} | {'yes' if not d['problems'] else 'no: ' + '; '.join(d['problems'])} |")
PY
