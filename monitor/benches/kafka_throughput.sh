#!/usr/bin/env bash
# Throughput of `dqmon run` on a Kafka topic, as a ratio to a bare rdkafka
# consumer reading the same topic in the same run.
#
# Starts a tansu broker (memory storage) on a free loopback port, fills a
# topic with RECORDS clean JSON records (one per message) over PARTITIONS
# partitions, then times, as whole processes:
#   1. `kafka_bench count`: a bare rdkafka consumer (fresh group) that only
#      counts messages and bytes until it has seen them all;
#   2. `dqmon run --once`: its own consumer group decoding every record into
#      Arrow, profiling per trust tag, comparing with the approved baseline
#      and committing history and offsets, until every partition is at its end.
# and prints records/s of both and the ratio. Run each side twice and keep
# the better time (the machine is small and noisy).
#
# Usage: monitor/benches/kafka_throughput.sh [RECORDS] [PARTITIONS]
#   TANSU_BIN=/path/to/tansu (default: PATH, then .tools/bin/tansu). Prefer a
#   release build (`cargo install tansu --locked --features dynostore`): the
#   debug build tests/run installs would make the broker the bottleneck.
#   BENCH_PROFILE=dev: build dqmon and the helper with the dev profile.
# Not a test: it takes minutes and wants a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-1000000}
partitions=${2:-4}
tansu=${TANSU_BIN:-$(command -v tansu || echo .tools/bin/tansu)}
[ -x "$tansu" ] || { echo "needs the tansu broker (TANSU_BIN, PATH or .tools/bin/tansu; tests/run installs it)" >&2; exit 1; }

# BENCH_PROFILE=dev uses the dev profile (opt-level 1) instead of release.
if [ "${BENCH_PROFILE:-release}" = dev ]; then
  cargo build --locked -p dqmon --bin dqmon --example kafka_bench >&2
  target=${CARGO_TARGET_DIR:-target}/debug
else
  cargo build --release --locked -p dqmon --bin dqmon --example kafka_bench >&2
  target=${CARGO_TARGET_DIR:-target}/release
fi
dqmon=$target/dqmon
tool=$target/examples/kafka_bench

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tansu" broker --storage-engine memory://tansu/ \
  --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  >"$work/tansu.log" 2>&1 &
broker_pid=$!
trap 'kill $broker_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
brokers="127.0.0.1:$port"
topic=bench
"$tansu" topic create "$topic" --partitions "$partitions" --broker "tcp://$brokers" >&2
"$tool" produce --brokers "$brokers" --topic "$topic" --records "$records" --partitions "$partitions"

now() { date +%s.%N; }
best_bare=""
best_dqmon=""
for round in 1 2; do
  t0=$(now)
  "$tool" count --brokers "$brokers" --topic "$topic" --records "$records" >"$work/count.out"
  t1=$(now)
  bare=$(echo "$t1 - $t0" | bc -l)

  rm -rf "$work/dq"
  "$tool" setup --brokers "$brokers" --topic "$topic" --dir "$work/dq" 2>/dev/null
  # a fresh consumer group each round: round 1 committed its offsets
  sed -i "s/group_id: dqmon-bench/group_id: dqmon-bench-$round/" "$work/dq/rules.yaml"
  t0=$(now)
  RUST_LOG=warn "$dqmon" run --once --config "$work/dq/rules.yaml" >/dev/null 2>"$work/dqmon.log" \
    || { cat "$work/dqmon.log" >&2; exit 1; }
  t1=$(now)
  dq=$(echo "$t1 - $t0" | bc -l)
  rows=$(python3 -c 'import glob,json,sys; print(sum(json.load(open(f))["rows"] for f in glob.glob(sys.argv[1] + "/**/history/batches/*.json", recursive=True)))' "$work/dq/state")
  [ "$rows" -eq "$records" ] || { echo "dqmon's history holds $rows rows, expected $records" >&2; exit 1; }
  echo "round $round: bare consumer $(printf %.2f "$bare") s ($(cat "$work/count.out")), dqmon $(printf %.2f "$dq") s ($rows rows in history)" >&2
  if [ -z "$best_bare" ] || (( $(echo "$bare < $best_bare" | bc -l) )); then best_bare=$bare; fi
  if [ -z "$best_dqmon" ] || (( $(echo "$dq < $best_dqmon" | bc -l) )); then best_dqmon=$dq; fi
done
printf 'records: %d on %d partitions\n' "$records" "$partitions"
printf 'bare rdkafka consumer: %.0f records/s\n' "$(echo "$records / $best_bare" | bc -l)"
printf 'dqmon run --once:      %.0f records/s\n' "$(echo "$records / $best_dqmon" | bc -l)"
printf 'ratio dqmon / bare:    %.3f\n' "$(echo "$best_bare / $best_dqmon" | bc -l)"
