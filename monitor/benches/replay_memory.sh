#!/usr/bin/env bash
# Peak memory of `dqmon replay` at two sizes (about 1M and 10M rows).
#
# Generates the deterministic synthetic suite (`dqmon-eval fixtures`) twice, with
# 10x more rows per batch the second time, builds and approves a baseline
# from the first suite's clean batches, replays every file of each suite
# with that baseline, and prints the peak RSS (`/usr/bin/time -v`) of both
# replays. Memory is meant to be bounded by columns x trust tags x sketch
# size, not by rows: the two numbers should be close.
#
# Usage: monitor/benches/replay_memory.sh [ROWS_PER_BATCH_SMALL] [WORK_DIR]
#   DQMON=/path/to/dqmon and DQMON_EVAL=/path/to/dqmon-eval to use built
#   binaries (default: cargo build --release of both).
# Not a test: it takes minutes and wants a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
small=${1:-17500}
large=$((small * 10))
work=${2:-$(mktemp -d)}
mkdir -p "$work"
if [ -z "${DQMON:-}" ] || [ -z "${DQMON_EVAL:-}" ]; then
  cargo build --release -p dqmon -p dqmon-eval >&2
  DQMON=${DQMON:-"${CARGO_TARGET_DIR:-target}/release/dqmon"}
  DQMON_EVAL=${DQMON_EVAL:-"${CARGO_TARGET_DIR:-target}/release/dqmon-eval"}
fi
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 1; }

rules="$work/rules.yaml"
cp rules/fixtures.yaml "$rules"      # state lands in $work/state
export DQMON_PII_KEY=replay-memory-bench-key

for rows in "$small" "$large"; do
  [ -d "$work/suite-$rows" ] || "$DQMON_EVAL" fixtures --out "$work/suite-$rows" --rows "$rows" >&2
done
# the baseline: the small suite's 20 baseline batches
clean="$work/suite-$small/baseline"
id=$("$DQMON" baseline build --config "$rules" --by bench $clean)
"$DQMON" baseline approve --config "$rules" "$id" --by bench-approver >/dev/null

report=()
for rows in "$small" "$large"; do
  files=$(find "$work/suite-$rows" -name '*.parquet' | sort)
  log="$work/replay-$rows.log"
  /usr/bin/time -v "$DQMON" replay --config "$rules" --no-progress \
    --state-dir "$work/replay-state-$rows" --alerts-out "$work/alerts-$rows.jsonl" \
    $files 2>"$log" || { cat "$log" >&2; exit 1; }
  total=$(grep -o 'replayed [0-9]* files ([0-9]* rows)' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  report+=("$total: peak RSS $((rss / 1024)) MiB, wall $secs")
done
printf '%s\n' "${report[@]}"
