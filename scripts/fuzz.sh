#!/usr/bin/env bash
# Long fuzzing run (`make fuzz`): every target of fuzz/targets.py under atheris for RUNS inputs.
#
#   scripts/fuzz.sh [TARGET...]        default: all targets; RUNS=1000000 JOBS=2 TIMEOUT=5 MAX_LEN=4096
#                                      (config: CONFIG_MAX_LEN=2048, the lexer is the slowest target)
#
# Corpora and artifacts live in $FUZZ_WORK (default build/fuzz, git-ignored via build/). A crash
# stops that target and leaves crash-<sha1> in $FUZZ_WORK/artifacts/<target>/; copy it into
# tests/data/fuzz-crashers/<target>/ (the replay test runs every file there) and fix the parser.
# Per-target summary lines (inputs, rejected, wall time) are appended to $FUZZ_WORK/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-1000000}
JOBS=${JOBS:-2}
TIMEOUT=${TIMEOUT:-5}
MAX_LEN=${MAX_LEN:-4096}
CONFIG_MAX_LEN=${CONFIG_MAX_LEN:-2048}
WORK=${FUZZ_WORK:-build/fuzz}
ALL="wire netlink events config control notify cli keyring"
TARGETS=${*:-$ALL}

if ! "$PY" -c 'import atheris' 2>/dev/null; then
    "$PY" -m pip install -q atheris  # not a project dependency: only this script needs it
fi
mkdir -p "$WORK"
"$PY" fuzz/harness.py --write-seeds "$WORK/seeds"
# the sync captures of two C daemons are the best wire seeds, when shared/ is there
"$PY" - "$WORK/seeds/wire" <<'PYEOF' || true
import os, sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.unit.pcap import read_udp
ref = Path(os.environ.get("CT_SHARED", Path.cwd().parent / "shared")) / "reference" / "wire-captures"
out = Path(sys.argv[1])
n = 0
for pcap in sorted(ref.glob("*.pcap")):
    for i, pkt in enumerate(read_udp(pcap)):
        if i < 200:
            (out / f"{pcap.stem}-{i}").write_bytes(pkt.payload); n += 1
print(f"wire seeds from captures: {n}")
PYEOF

run_one() {
    local t=$1 corpus=$WORK/corpus/$1 art=$WORK/artifacts/$1/
    mkdir -p "$corpus" "$art"
    cp -n "$WORK/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    local start=$SECONDS rc=0 max_len=$MAX_LEN
    [[ $t == config ]] && max_len=$CONFIG_MAX_LEN
    "$PY" fuzz/harness.py "$t" -runs="$RUNS" -timeout="$TIMEOUT" -max_len="$max_len" -rss_limit_mb=4096 \
        -print_final_stats=1 -artifact_prefix="$art" "$corpus" >"$WORK/$t.log" 2>&1 || rc=$?
    local line execs
    line=$(grep -h '^FUZZ-SUMMARY' "$WORK/$t.log" | tail -1 || true)
    execs=$(grep -h 'stat::number_of_executed_units' "$WORK/$t.log" | awk '{print $2}' || true)
    echo "${line:-FUZZ-SUMMARY target=$t} libfuzzer_units=${execs:-?} rc=$rc elapsed=$((SECONDS - start))s" \
        | tee -a "$WORK/summary.txt"
    return $rc
}

echo "# $(date -Is) targets=[$TARGETS] runs=$RUNS jobs=$JOBS" >>"$WORK/summary.txt"  # kept across runs
echo "fuzz: targets=[$TARGETS] runs=$RUNS jobs=$JOBS timeout=${TIMEOUT}s max_len=$MAX_LEN work=$WORK"
start=$SECONDS
fail=0
pids=()
for t in $TARGETS; do
    run_one "$t" &
    pids+=($!)
    while (( $(jobs -rp | wc -l) >= JOBS )); do sleep 1; done
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
echo "fuzz: total wall $((SECONDS - start))s"
if (( fail )); then
    echo "fuzz: CRASH or hang: see $WORK/artifacts/*/ and $WORK/*.log" >&2
    ls -l "$WORK"/artifacts/*/ >&2 || true
    exit 1
fi
echo "fuzz: 0 crashes, 0 hangs"
