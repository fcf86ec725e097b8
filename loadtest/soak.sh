#!/usr/bin/env bash
# Runs a long scenario (soak, churn) against a fresh release server and samples the server's
# RSS every 10 s meanwhile; prints the samples and the RSS slope (least squares, KiB per
# minute) after the clients are connected, next to the harness's own summary.
#
#   loadtest/soak.sh loadtest/scenarios/soak-19k.toml [OUT_DIR]
set -euo pipefail
scenario=${1:?usage: $0 SCENARIO.toml [OUT_DIR]}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/target/loadtest}
name=$(basename "$scenario" .toml)
mkdir -p "$out"
samples="$out/$name.rss"
: > "$samples"
"$root/loadtest/run-scenario.sh" "$scenario" "$out" &
runner=$!
# Sample the server (the corebridge process run-scenario.sh started) until the run ends.
start=$(date +%s)
while kill -0 "$runner" 2>/dev/null; do
    pid=$(pgrep -n -f "release/corebridge$" || true)
    if [[ -n $pid ]]; then
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
        [[ -n $rss ]] && echo "$(( $(date +%s) - start )) $rss" >> "$samples"
    fi
    sleep 10
done
wait "$runner" || status=$?
python3 - "$samples" <<'PY'
import sys
pts = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
# From the third sample on: the connection phase is over by then.
pts = pts[2:]
if len(pts) >= 3:
    n = len(pts); mx = sum(t for t, _ in pts) / n; my = sum(r for _, r in pts) / n
    slope = sum((t - mx) * (r - my) for t, r in pts) / sum((t - mx) ** 2 for t, _ in pts)
    print(f"RSS samples after connect: {n}, first {pts[0][1]:.0f} KiB, last {pts[-1][1]:.0f} KiB, "
          f"min {min(r for _, r in pts):.0f}, max {max(r for _, r in pts):.0f}, slope {slope * 60:.1f} KiB/min")
PY
exit "${status:-0}"
