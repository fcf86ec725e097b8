#!/usr/bin/env bash
# Coverage-guided fuzzing of corebridge's parsers with libFuzzer, on a stable toolchain.
#
#   fuzz/run.sh [RUNS=10000000] [TARGET...]     (default: every target in src/fuzzing.rs)
#
# libFuzzer needs rustc's sanitizer-coverage passes, which are unstable flags; a stable rustc
# accepts them under RUSTC_BOOTSTRAP=1 (what cargo-fuzz asks for through nightly). No
# AddressSanitizer: the parsers have no unsafe code, and ASan would need nightly's -Zbuild-std.
# Each target runs RUNS executions from its corpus (fuzz/corpus/TARGET, new finds kept in
# fuzz/target/corpus/TARGET, crashes in fuzz/target/crashes), one process per core.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${1:-10000000}
shift || true
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation off build scripts and proc macros (they run on the host).
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --target-dir target --target "$TRIPLE"
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=($(ls corpus))
fi
mkdir -p target/crashes
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t"
    start=$(date +%s)
    CB_FUZZ_TARGET=$t "./target/$TRIPLE/release/fuzz" "target/corpus/$t" "corpus/$t" \
        -runs="$RUNS" -max_len=4096 -timeout=5 -rss_limit_mb=1024 \
        -artifact_prefix="target/crashes/$t-" -print_final_stats=1 2>"target/$t.log" || {
        echo "$t: FAILED (see fuzz/target/$t.log and fuzz/target/crashes)"; tail -20 "target/$t.log"; exit 1; }
    execs=$(grep -m1 'stat::number_of_executed_units' "target/$t.log" | awk '{print $2}')
    cov=$(grep -o 'cov: [0-9]*' "target/$t.log" | tail -1 | awk '{print $2}')
    echo "$t: $execs executions in $(( $(date +%s) - start )) s, coverage $cov edges, no crash"
done
