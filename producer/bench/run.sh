#!/usr/bin/env bash
# Benchmark of a snapshot sync: a simulated tenant (1,000,000 users by default) synced by the
# producer into the local broker, against a plain HTTP client (examples/plain_reader.rs) that
# reads the same pages and writes nothing, in the same run. Reports entities/s of both, the
# ratio, and the producer's peak RSS (GNU time's maximum resident set size).
#
# Targets: producer >= 80% of the plain reader's entities/s; producer peak RSS < 150 MB.
#
# With BENCH_TRANSFORMER=1 the transformer then normalizes the synced raw topic
# (`transformer run --until-caught-up`, its own output topics), and its events/s and peak RSS are
# reported too: how the transformer's memory grows with the tenant (no target; informational).
#
# With BENCH_INDEPENDENT=1 an independent implementation of the same user normalization, written
# in Python from the schemas' docs and transformer/README.md (transformer/scripts/independent.py),
# then does the same exactly-once work on the same raw topic (5,000-event transactions into an
# output topic of its own); its events/s, CPU us per event and peak RSS are reported beside the
# transformer's. With BENCH_TRANSFORMER=1 too, its records are then compared field by field with
# the transformer's users topic (`independent.py --compare`); the script exits non-zero when they
# disagree. Needs python3 (confluent-kafka and fastavro: deploy/local/lib.sh's
# ensure_python_packages installs them into .cache/python when missing).
#
# Usage: producer/bench/run.sh            (BENCH_USERS=200000 producer/bench/run.sh for a quick run;
#        BENCH_USERS=200000 BENCH_TRANSFORMER=1 BENCH_INDEPENDENT=1 producer/bench/run.sh for all)
# Needs: cargo, jq, /usr/bin/time; Kafka and the registry from deploy/local/up (started if unset).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
USERS=${BENCH_USERS:-1000000}
PAGE=${BENCH_PAGE_SIZE:-200}
SIM_PORT=${BENCH_SIM_PORT:-9491}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || [ -z "${SCHEMA_REGISTRY_URL:-}" ]; then
  eval "$(deploy/local/up)"
fi

cargo build --release -q -p producer -p pingone-sim --bin producer --bin pingone-sim --example plain_reader
if [ "${BENCH_TRANSFORMER:-0}" = 1 ]; then
  cargo build --release -q -p transformer --bin transformer
fi

WORK=$(mktemp -d)
SECRET="bench-secret-$RANDOM$RANDOM"
"$TARGET/release/pingone-sim" --listen "127.0.0.1:$SIM_PORT" \
  --tenant "name=bench,users=$USERS,seed=7,client_id=bench-client,client_secret=$SECRET,region=com" \
  > "$WORK/sim.out" 2> "$WORK/sim.log" &
SIM_PID=$!
cleanup() { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for _ in $(seq 1 300); do [ -s "$WORK/sim.out" ] && break; sleep 0.1; done
[ -s "$WORK/sim.out" ] || { echo "simulator did not start:"; cat "$WORK/sim.log"; exit 1; }
LINE=$(head -n1 "$WORK/sim.out")
ENV_ID=$(jq -r .environment_id <<<"$LINE")
TOKEN_URL=$(jq -r .token_url <<<"$LINE")
AUTH=$(jq -r .auth_base_url <<<"$LINE")
API=$(jq -r .api_base_url <<<"$LINE")

plain() {
  PLAIN_READER_SECRET="$SECRET" "$TARGET/release/examples/plain_reader" \
    "$TOKEN_URL" "$API" "$ENV_ID" bench-client "$PAGE"
}

RUN_ID=$(date +%s)-$RANDOM
cat > "$WORK/bench.toml" <<TOML
[kafka]
bootstrap_servers = "$KAFKA_BOOTSTRAP_SERVERS"
raw_topic = "bench.raw.$RUN_ID"
checkpoint_topic = "bench.checkpoints.$RUN_ID"
transactional_id_prefix = "bench-$RUN_ID"
topic_partitions = 1

[schema_registry]
url = "$SCHEMA_REGISTRY_URL"

[operations]
listen_addr = ""
log_format = "json"

[[tenants]]
tenant_id = "bench"
environment_id = "$ENV_ID"
region = "com"
client_id = "bench-client"
client_secret_env = "BENCH_SECRET"
auth_base_url = "$AUTH"
api_base_url = "$API"
directory_page_size = $PAGE
requests_per_second = 5000
TOML

echo "tenant: $USERS users, page size $PAGE"
echo "plain reader (1st)..."
PLAIN1=$(plain); echo "  $PLAIN1"
echo "producer sync --once..."
BENCH_SECRET="$SECRET" /usr/bin/time -f "%M %e %U %S" -o "$WORK/time.txt" \
  ${BENCH_WRAP:-} "${BENCH_PRODUCER_BIN:-$TARGET/release/producer}" sync --config "$WORK/bench.toml" --tenant bench --once 2> "$WORK/producer.log" && cp "$WORK/producer.log" /tmp/producer-bench-last.log \
  || { echo "producer failed:"; tail -n 20 "$WORK/producer.log"; exit 1; }
echo "plain reader (2nd)..."
PLAIN2=$(plain); echo "  $PLAIN2"

read -r RSS_KB WALL_S CPU_USER_S CPU_SYS_S < "$WORK/time.txt"
echo "producer cpu: user ${CPU_USER_S}s, sys ${CPU_SYS_S}s"
DONE=$(grep '"snapshot sync completed"' "$WORK/producer.log" | tail -n1)
P_SECONDS=$(jq -r '.fields.seconds' <<<"$DONE")
P_ENTITIES=$(jq -r '.fields.users + .fields.groups + .fields.applications + .fields.memberships' <<<"$DONE")
PLAIN_ENTITIES=$(jq -r .entities <<<"$PLAIN1")
[ "$P_ENTITIES" = "$PLAIN_ENTITIES" ] || echo "WARNING: producer wrote $P_ENTITIES entities, plain reader read $PLAIN_ENTITIES"
if [ "${BENCH_TRANSFORMER:-0}" = 1 ]; then
  # BENCH_TRANSFORMER_BASELINE=<binary> also runs another transformer build (e.g. the previous
  # commit's) on the same raw topic first, each with its own outputs and group, so that the two
  # are compared in one run.
  i=0
  for T_BIN in ${BENCH_TRANSFORMER_BASELINE:-} "$TARGET/release/transformer"; do
  i=$((i + 1))
  cat > "$WORK/transformer.toml" <<TOML
[kafka]
bootstrap_servers = "$KAFKA_BOOTSTRAP_SERVERS"
raw_topic = "bench.raw.$RUN_ID"
output_prefix = "bench.usage.$RUN_ID.$i."
group_id = "bench-transformer-$RUN_ID-$i"
transactional_id = "bench-transformer-$RUN_ID-$i"
[schema_registry]
url = "$SCHEMA_REGISTRY_URL"
TOML
  echo "transformer run --until-caught-up ($T_BIN)..."
  # BENCH_TRANSFORMER_WRAP runs it under a profiler, e.g. "perf record -F 999 -o t.perf --"
  # (transformer/README.md, Profiling); the figures then include the profiler's overhead.
  /usr/bin/time -f "%M %e %U %S" -o "$WORK/transformer-time.txt" \
    ${BENCH_TRANSFORMER_WRAP:-} "$T_BIN" --config "$WORK/transformer.toml" run --until-caught-up \
    2> "$WORK/transformer.log" \
    || { echo "transformer failed:"; tail -n 20 "$WORK/transformer.log"; exit 1; }
  read -r T_RSS_KB T_WALL_S T_USER_S T_SYS_S < "$WORK/transformer-time.txt"
  # Every entity plus the sync_started and sync_completed markers.
  T_EVENTS=$((P_ENTITIES + 2))
  python3 - "$T_EVENTS" "$T_WALL_S" "$T_RSS_KB" "$T_USER_S" "$T_SYS_S" <<'PY'
import sys
events, wall_s, rss_kb = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
user_s, sys_s = float(sys.argv[4]), float(sys.argv[5])
print(f"transformer: {events} raw events in {wall_s:.1f} s (process, start-up included) = "
      f"{events / wall_s:,.0f} events/s; cpu user {user_s} s, sys {sys_s} s = "
      f"{(user_s + sys_s) * 1e6 / events:.1f} us per event")
print(f"transformer peak RSS: {rss_kb / 1024:.1f} MB")
PY
  # A second run on the same outputs and group: nothing left to process, so it is the restore
  # of the tenant's state from the output topics, timed, with its RSS once restored.
  echo "transformer restart (restore only)..."
  /usr/bin/time -f "%M %e %U %S" -o "$WORK/restore-time.txt" \
    "$T_BIN" --config "$WORK/transformer.toml" run --until-caught-up \
    2> "$WORK/restore.log" \
    || { echo "transformer restart failed:"; tail -n 20 "$WORK/restore.log"; exit 1; }
  read -r R_RSS_KB R_WALL_S R_USER_S R_SYS_S < "$WORK/restore-time.txt"
  R_LINE=$(grep 'partitions restored' "$WORK/restore.log" | head -n1 | sed 's/\x1b\[[0-9;]*m//g')
  R_MS=$(grep -o 'restore_ms=[0-9]*' <<<"$R_LINE" | cut -d= -f2)
  R_RECORDS=$(grep -o 'records=[0-9]*' <<<"$R_LINE" | cut -d= -f2)
  R_STATE=$(grep -o 'rss_mb=[0-9.]*' <<<"$R_LINE" | cut -d= -f2)
  echo "transformer restore: ${R_RECORDS:-?} records in ${R_MS:-?} ms; process ${R_WALL_S} s, cpu user ${R_USER_S} s; peak RSS $((R_RSS_KB / 1024)) MB; RSS once restored ${R_STATE:-?} MB"
  done
fi

INDEPENDENT_FAILED=0
if [ "${BENCH_INDEPENDENT:-0}" = 1 ]; then
  # The independent Python implementation on the same raw topic, into its own output topic, group
  # and transactional id, encoding with the schema the transformer registered (the last build of
  # the loop above), or with schemas/avro/user_usage.avsc without the transformer step.
  # shellcheck source=deploy/local/lib.sh
  source deploy/local/lib.sh
  ensure_python_packages
  I_ARGS=(--bootstrap-servers "$KAFKA_BOOTSTRAP_SERVERS" --schema-registry-url "$SCHEMA_REGISTRY_URL")
  I_SUBJECT=()
  if [ "${BENCH_TRANSFORMER:-0}" = 1 ]; then
    T_USERS_TOPIC="bench.usage.$RUN_ID.$i.users.v1"
    I_SUBJECT=(--schema-subject "$T_USERS_TOPIC-value")
  fi
  echo "independent normalization (transformer/scripts/independent.py)..."
  python3 transformer/scripts/independent.py "bench.raw.$RUN_ID" "bench.independent.$RUN_ID.users.v1" \
    "${I_ARGS[@]}" "${I_SUBJECT[@]}" > "$WORK/independent.json" 2> "$WORK/independent.log" \
    || { echo "independent.py failed:"; tail -n 20 "$WORK/independent.log"; exit 1; }
  python3 - "$WORK/independent.json" "${T_EVENTS:-0}" "${T_WALL_S:-0}" "${T_RSS_KB:-0}" \
    "${T_USER_S:-0}" "${T_SYS_S:-0}" "$((P_ENTITIES + 2))" <<'PY'
import json, sys
i = json.load(open(sys.argv[1]))
t_events, t_wall, t_rss_kb = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
t_cpu, expected = float(sys.argv[5]) + float(sys.argv[6]), int(sys.argv[7])
print(f"independent: {i['events']} raw events in {i['seconds']:.1f} s (process, start-up included) = "
      f"{i['events_per_s']:,.0f} events/s; cpu user + sys {i['cpu_seconds']:.2f} s = "
      f"{i['cpu_us_per_event']:.1f} us per event; {i['users_written']} users written, "
      f"{i['dead_letters']} dead letters, {i['transactions']} transactions")
print(f"independent peak RSS: {i['peak_rss_mb']:.1f} MB")
if i["events"] != expected:
    print(f"WARNING: independent.py read {i['events']} raw events, the producer wrote {expected}")
if t_events and t_wall:
    t_rate, t_us, t_rss = t_events / t_wall, t_cpu * 1e6 / t_events, t_rss_kb / 1024
    print(f"side by side (transformer | independent): {t_rate:,.0f} | {i['events_per_s']:,.0f} events/s "
          f"({t_rate / i['events_per_s']:.1f}x); {t_us:.1f} | {i['cpu_us_per_event']:.1f} us CPU per event "
          f"({i['cpu_us_per_event'] / t_us:.1f}x); peak RSS {t_rss:.1f} | {i['peak_rss_mb']:.1f} MB")
PY
  if [ "${BENCH_TRANSFORMER:-0}" = 1 ]; then
    echo "compare: $T_USERS_TOPIC against independent.py's normalization of the raw topic..."
    python3 transformer/scripts/independent.py "bench.raw.$RUN_ID" --compare "$T_USERS_TOPIC" \
      "${I_ARGS[@]}" > "$WORK/compare.json" 2> "$WORK/compare.log" || INDEPENDENT_FAILED=1
    if [ -s "$WORK/compare.json" ]; then
      python3 - "$WORK/compare.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"compare ({len(c['fields'])} fields per user): {c['equal']} users equal, {c['differing']} differing, "
      f"{c['missing_in_transformer']} missing in the transformer's output, "
      f"{c['missing_in_independent']} missing in the independent one "
      f"({c['transformer_users']} transformer users, {c['independent_users']} independent): "
      f"{'AGREE' if c['agree'] else 'DISAGREE'}")
if c["field_differences"]:
    print("  differing fields: " + ", ".join(f"{k} {v}" for k, v in sorted(c["field_differences"].items())))
for e in c["examples"]:
    print("  e.g. " + json.dumps(e))
PY
    else
      echo "compare failed:"; tail -n 20 "$WORK/compare.log"
    fi
  fi
fi

python3 - "$P_ENTITIES" "$P_SECONDS" "$WALL_S" "$RSS_KB" "$PLAIN1" "$PLAIN2" <<'PY'
import json, sys
entities, sync_s, wall_s, rss_kb = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
plain = [json.loads(a) for a in sys.argv[5:7]]
p_rate = entities / sync_s
base = max(p["entities_per_s"] for p in plain)
ratio = p_rate / base
rss_mb = rss_kb / 1024
print(f"producer: {entities} entities in {sync_s:.1f} s (sync) / {wall_s:.1f} s (process) = {p_rate:,.0f} entities/s")
rates = ", ".join("{:,.0f}".format(p["entities_per_s"]) for p in plain)
print(f"plain reader: {rates} entities/s (baseline = the faster)")
print(f"ratio: {ratio:.1%} of the plain reader (target >= 80%): {'PASS' if ratio >= 0.8 else 'FAIL'}")
print(f"producer peak RSS: {rss_mb:.1f} MB (target < 150 MB): {'PASS' if rss_mb < 150 else 'FAIL'}")
sys.exit(0 if ratio >= 0.8 and rss_mb < 150 else 1)
PY
[ "$INDEPENDENT_FAILED" = 0 ] || { echo "the independent implementation and the transformer disagree (see compare above)"; exit 1; }
