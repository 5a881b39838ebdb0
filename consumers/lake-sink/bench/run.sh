#!/usr/bin/env bash
# Benchmark of the lake sink: rows/s into local Delta tables against a consume-only loop (the
# sink's own consumer and loop, reading the same topics to their end and neither decoding nor
# writing: `lake-sink consume-only`), in the same run, alternating, RUNS times (default 3).
# Both are whole processes timed from start to exit (start-up included), release builds, and
# both stop through the same end check (the sink's loop with `stop_at_end`: partition EOF events
# and each partition's position against its last stable offset), right after their last record.
# Reports per run: records, seconds, rows/s, the ratio, CPU µs per row and peak RSS of each;
# then the ratios' range and median, and how many runs reached the target.
#
# Target: the sink >= 0.5 x consume-only.
#
# Input: the normalized topics under LAKE_BENCH_PREFIX (e.g. `bench.usage.<run>.1.`); when
# unset, producer/bench/run.sh first syncs a simulated tenant of BENCH_USERS users (default
# 200,000) and its transformer step writes them (BENCH_TRANSFORMER=1); the newest such prefix is
# used.
#
# Usage: consumers/lake-sink/bench/run.sh [RUNS]
#        LAKE_SINK_BIN=/tmp/lake-sink.before consumers/lake-sink/bench/run.sh [RUNS]  (a binary
#        built before, measured as it is: how before/after are compared on the same input)
# Needs: cargo, jq, python3 with confluent-kafka (deploy/local/lib.sh installs it into .cache/python),
# /usr/bin/time; Kafka and the registry from deploy/local/up (started if unset).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT"
# shellcheck source=deploy/local/lib.sh
source deploy/local/lib.sh
RUNS=${1:-3}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || [ -z "${SCHEMA_REGISTRY_URL:-}" ]; then
  eval "$(deploy/local/up)"
fi
export KAFKA_BOOTSTRAP_SERVERS SCHEMA_REGISTRY_URL
ensure_python_packages

PREFIX=${LAKE_BENCH_PREFIX:-}
if [ -z "$PREFIX" ]; then
  echo "filling the topics: producer/bench/run.sh with ${BENCH_USERS:-200000} users and the transformer step..."
  BENCH_USERS=${BENCH_USERS:-200000} BENCH_TRANSFORMER=1 producer/bench/run.sh > /dev/null || true
  PREFIX=$(python3 - <<'PY'
import os
from confluent_kafka.admin import AdminClient
topics = AdminClient({"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}).list_topics(timeout=10).topics
runs = sorted(t[: -len("users.v1")] for t in topics if t.startswith("bench.usage.") and t.endswith(".users.v1"))
print(runs[-1] if runs else "")
PY
)
  [ -n "$PREFIX" ] || { echo "no bench.usage.* topics after producer/bench/run.sh"; exit 1; }
fi
echo "topics: ${PREFIX}users.v1, ${PREFIX}applications.v1, ${PREFIX}app_usage.v1"

if [ -n "${LAKE_SINK_BIN:-}" ]; then
  BIN=$LAKE_SINK_BIN
else
  cargo build --release -q -p lake-sink --bin lake-sink
  BIN=$TARGET/release/lake-sink
fi
echo "binary: $BIN"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export LAKE_SINK__KAFKA__OUTPUT_PREFIX="$PREFIX"
export LAKE_SINK__OPERATIONS__LISTEN_ADDR=""
STAMP=$(date +%s)-$RANDOM
SINK=()
BASE=()
for run in $(seq 1 "$RUNS"); do
  /usr/bin/time -f "%M %e %U %S" -o "$WORK/c.time" \
    "$BIN" --log-format json consume-only > "$WORK/c.json" 2> "$WORK/c.log" \
    || { echo "consume-only failed:"; tail -n 20 "$WORK/c.log"; exit 1; }
  read -r C_RSS C_WALL C_USER C_SYS < "$WORK/c.time"
  BASE+=("$(jq -c --arg rss "$C_RSS" --arg wall "$C_WALL" --arg cpu "$(python3 -c "print($C_USER + $C_SYS)")" \
    '{records, wall: ($wall|tonumber), cpu: ($cpu|tonumber), rss_kb: ($rss|tonumber)}' "$WORK/c.json")")
  rm -rf "$WORK/lake"
  LAKE_SINK__KAFKA__GROUP_ID="lake-bench-$STAMP-$run" /usr/bin/time -f "%M %e %U %S" -o "$WORK/s.time" \
    "$BIN" --log-format json --location "$WORK/lake" run --until-caught-up \
    2> "$WORK/s.log" || { echo "lake-sink failed:"; tail -n 20 "$WORK/s.log"; exit 1; }
  read -r S_RSS S_WALL S_USER S_SYS < "$WORK/s.time"
  ROWS=$(grep '"lake sink stopped"' "$WORK/s.log" | jq -r '.fields.rows' | python3 -c '
import sys, json, re
text = sys.stdin.read()
print(sum(int(n) for n in re.findall(r":\s*(\d+)", text)))')
  SINK+=("{\"rows\": $ROWS, \"wall\": $S_WALL, \"cpu\": $(python3 -c "print($S_USER + $S_SYS)"), \"rss_kb\": $S_RSS}")
  echo "run $run: consume-only ${BASE[-1]}; sink ${SINK[-1]}"
done

python3 - "${#BASE[@]}" "${BASE[@]}" "${SINK[@]}" <<'PY'
import json, sys
n = int(sys.argv[1])
base = [json.loads(a) for a in sys.argv[2 : 2 + n]]
sink = [json.loads(a) for a in sys.argv[2 + n :]]
ok = True
for i, (b, s) in enumerate(zip(base, sink), 1):
    b_rate, s_rate = b["records"] / b["wall"], s["rows"] / s["wall"]
    ratio = s_rate / b_rate
    ok &= ratio >= 0.5 and s["rows"] == b["records"]
    print(
        f"run {i}: consume-only {b['records']:,} records in {b['wall']:.2f} s = {b_rate:,.0f}/s, "
        f"{b['cpu'] / b['records'] * 1e6:.1f} µs CPU each, peak RSS {b['rss_kb'] / 1024:.0f} MB | "
        f"sink {s['rows']:,} rows in {s['wall']:.2f} s = {s_rate:,.0f}/s, "
        f"{s['cpu'] / max(s['rows'], 1) * 1e6:.1f} µs CPU each, peak RSS {s['rss_kb'] / 1024:.0f} MB | "
        f"ratio {ratio:.2f} (target >= 0.5)"
    )
ratios = sorted(
    (s["rows"] / s["wall"]) / (b["records"] / b["wall"]) for b, s in zip(base, sink)
)
median = (ratios[(n - 1) // 2] + ratios[n // 2]) / 2
print(
    f"ratios {ratios[0]:.2f}-{ratios[-1]:.2f}, median {median:.2f}; "
    f"{sum(r >= 0.5 for r in ratios)} of {n} runs at or over 0.5"
)
print("PASS" if ok else "FAIL (a ratio under 0.5, or rows != records)")
sys.exit(0 if ok else 1)
PY
