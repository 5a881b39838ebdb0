#!/usr/bin/env bash
# Benchmark of many tenants in one `producer run` process: for each tenant count N, a simulator
# serving N tenants (BENCH_USERS users each, 1,000 by default) and one `producer run` with N
# `[[tenants]]`, into the local broker. Measures
#   - sync_all_s: from the producer's start until every tenant has completed a snapshot sync AND
#     had a successful activity poll (its /metrics: producer_last_success_timestamp_seconds with
#     stream="snapshot" and stream="activity" for each tenant);
#   - threads_peak / fds_peak: the most threads (/proc/PID/status) and open file descriptors
#     (/proc/PID/fd) seen while syncing, sampled every 0.5 s;
#   - caught_up_s: then, until every tenant's first activity poll has caught up (the initial
#     activity_initial_lookback_s backfill, 7 days, read window by window): each tenant's
#     "activity poll caught up" log line. sync_all_s only needs one committed activity window per
#     tenant, so without this wait the "idle" figures below would be taken mid-backfill.
#     BENCH_CATCH_UP=0 skips it (caught_up_s=skipped); not reaching it within the timeout is a
#     warning (caught_up_s=none), not a failure;
#   - threads_idle / fds_idle: the most seen over BENCH_IDLE_S (5) seconds after that;
#     threads_peak / fds_peak cover everything before, the catch-up included;
#   - rss_mb (VmRSS at the end of that idle window) and hwm_mb (VmHWM, the peak RSS so far);
#   - cpu_s / cpu_caught_up_s: the producer's user + system CPU time until all were synced /
#     caught up.
#
# Targets (200 tenants): threads <= 64 (threads_peak), RSS <= 150 MB (hwm_mb).
#
# Usage: producer/bench/tenants.sh [TENANT_COUNTS...]        (default: 40 200)
#   BENCH_USERS=1000       users per tenant
#   BENCH_TIMEOUT_S=600    longest wait for all tenants to sync, per N
#   BENCH_IDLE_S=5         idle sampling window after all synced (and caught up)
#   BENCH_CATCH_UP=1       wait for every tenant's activity catch-up before the idle window
#   PRODUCER_BIN, SIM_BIN  binaries to run (default: built with cargo --release into the target dir)
# Each run writes to its own raw topic, checkpoint topic and transactional ids (random suffix);
# the last producer log per N is kept in /tmp/producer-tenants-N-last.log.
# Exit status: 0 when every run synced and the 200-tenant targets are met (or no N was 200);
# 1 when a run failed (did not sync all within the timeout, or the producer exited early);
# 3 when every run synced but a 200-tenant target was missed.
# Needs: jq, curl, python3; Kafka and the registry from deploy/local/up (started if unset).
set -euo pipefail
shopt -s nullglob

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
USERS=${BENCH_USERS:-1000}
TIMEOUT_S=${BENCH_TIMEOUT_S:-600}
IDLE_S=${BENCH_IDLE_S:-5}
CATCH_UP=${BENCH_CATCH_UP:-1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
TARGET_THREADS=64
TARGET_RSS_MB=150
if [ "$#" -gt 0 ]; then COUNTS=("$@"); else COUNTS=(40 200); fi
for n in "${COUNTS[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "tenant count must be a positive integer: $n" >&2; exit 2; }
done
cd "$ROOT"

if [ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" ] || [ -z "${SCHEMA_REGISTRY_URL:-}" ]; then
  eval "$(deploy/local/up)"
fi

if [ -z "${PRODUCER_BIN:-}" ] || [ -z "${SIM_BIN:-}" ]; then
  cargo build --release -q -p producer -p pingone-sim --bin producer --bin pingone-sim
fi
PRODUCER_BIN=${PRODUCER_BIN:-$TARGET/release/producer}
SIM_BIN=${SIM_BIN:-$TARGET/release/pingone-sim}
[ -x "$PRODUCER_BIN" ] || { echo "PRODUCER_BIN $PRODUCER_BIN is not executable" >&2; exit 2; }
[ -x "$SIM_BIN" ] || { echo "SIM_BIN $SIM_BIN is not executable" >&2; exit 2; }

WORK=$(mktemp -d)
SIM_PID=""
P_PID=""
# Whether a child is running (kill -0 alone also succeeds on a zombie not yet waited for).
alive() {
  local state
  state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}
stop_pid() { # pid signal: signals the process, waits for it, SIGKILL after 30 s
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "-$2" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 300); do alive "$pid" || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  stop_pid "$P_PID" TERM
  stop_pid "$SIM_PID" TERM
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Samples the producer: sets S_THREADS, S_FDS, S_RSS_KB, S_HWM_KB (empty when it is gone).
sample() {
  S_THREADS="" S_FDS="" S_RSS_KB="" S_HWM_KB=""
  local k v _rest fds
  [ -r "/proc/$P_PID/status" ] || return 0
  while read -r k v _rest; do
    case "$k" in
      Threads:) S_THREADS=$v ;;
      VmRSS:) S_RSS_KB=$v ;;
      VmHWM:) S_HWM_KB=$v ;;
    esac
  done < "/proc/$P_PID/status" 2>/dev/null || true
  fds=(/proc/"$P_PID"/fd/*)
  S_FDS=${#fds[@]}
}

# user + system CPU seconds of the producer so far.
cpu_seconds() {
  local stat
  stat=$(cat "/proc/$P_PID/stat" 2>/dev/null) || { echo "?"; return 0; }
  # Fields after the command name: state is field 3, utime 14, stime 15.
  awk -v tck="$(getconf CLK_TCK)" '{ printf "%.1f", ($12 + $13) / tck }' <<<"${stat##*) }"
}

# Reads /metrics: sets M_SNAP and M_ACT (tenants with a successful snapshot sync / activity
# poll) and M_ERRORS (sum of producer_errors_total).
read_metrics() {
  local text
  M_SNAP=0 M_ACT=0 M_ERRORS=0
  text=$(curl -s --max-time 2 "http://$LISTEN/metrics" 2>/dev/null) || return 0
  read -r M_SNAP M_ACT M_ERRORS < <(awk '
    function label(name,   re, s) {
      re = name "=\"[^\"]*\""
      if (match($0, re)) { s = substr($0, RSTART, RLENGTH); return substr(s, length(name) + 3, length(s) - length(name) - 3) }
      return ""
    }
    /^producer_last_success_timestamp_seconds\{/ && $NF > 0 {
      st = label("stream"); t = label("tenant")
      if (st == "snapshot") snap[t] = 1
      if (st == "activity") act[t] = 1
    }
    /^producer_last_successful_sync_timestamp_seconds\{/ && $NF > 0 { snap[label("tenant")] = 1 }
    /^producer_errors_total\{/ { errors += $NF }
    END { ns = 0; na = 0; for (t in snap) ns++; for (t in act) na++; printf "%d %d %d\n", ns, na, errors }
  ' <<<"$text")
}

# Tenants that have logged "activity poll caught up" (the producer logs JSON here).
caught_up_count() {
  { grep -F '"activity poll caught up"' "$PLOG" | grep -o '"tenant":"[^"]*"' || true; } \
    | sort -u | wc -l
}

fail() {
  echo "FAILED: $1"
  echo "--- producer log tail (whole log: /tmp/producer-tenants-$N-last.log) ---"
  tail -n 30 "$PLOG" 2>/dev/null || true
  cp "$PLOG" "/tmp/producer-tenants-$N-last.log" 2>/dev/null || true
  echo "FAILED: $1"
  exit 1
}

RESULTS=()
STATUS=0
for N in "${COUNTS[@]}"; do
  RUN_ID="$(date +%s)-$RANDOM$RANDOM"
  DIR="$WORK/n$N"
  mkdir -p "$DIR"
  PLOG="$DIR/producer.log"
  echo "== $N tenants x $USERS users (run $RUN_ID)"

  SIM_ARGS=()
  for i in $(seq 1 "$N"); do
    SIM_ARGS+=(--tenant "name=bench-$i,users=$USERS,seed=$i,client_id=bench-client-$i,client_secret=bench-secret-$RUN_ID-$i,region=com")
  done
  "$SIM_BIN" --listen 127.0.0.1:0 "${SIM_ARGS[@]}" > "$DIR/sim.out" 2> "$DIR/sim.log" &
  SIM_PID=$!
  for _ in $(seq 1 600); do
    [ "$(wc -l < "$DIR/sim.out")" -ge "$N" ] && break
    alive "$SIM_PID" || break
    sleep 0.1
  done
  [ "$(wc -l < "$DIR/sim.out")" -ge "$N" ] \
    || { echo "simulator did not print $N tenants:"; tail -n 20 "$DIR/sim.log"; exit 1; }

  LISTEN="127.0.0.1:$(free_port)"
  CFG="$DIR/producer.toml"
  cat > "$CFG" <<TOML
[kafka]
bootstrap_servers = "$KAFKA_BOOTSTRAP_SERVERS"
raw_topic = "bench.tenants.raw.$RUN_ID"
checkpoint_topic = "bench.tenants.checkpoints.$RUN_ID"
transactional_id_prefix = "bench-tenants-$RUN_ID"

[schema_registry]
url = "$SCHEMA_REGISTRY_URL"

[operations]
listen_addr = "$LISTEN"
log_format = "json"
TOML
  k=0
  while IFS= read -r line; do
    k=$((k + 1))
    # The secret of each tenant in its own variable, as a deployment would have it.
    export "BENCH_TENANT_SECRET_$k=$(jq -r .client_secret <<<"$line")"
    jq -r --arg id "tenant-$k" --arg var "BENCH_TENANT_SECRET_$k" '
      "\n[[tenants]]",
      "tenant_id = \"\($id)\"",
      "environment_id = \"\(.environment_id)\"",
      "region = \"\(.region)\"",
      "client_id = \"\(.client_id)\"",
      "client_secret_env = \"\($var)\"",
      "auth_base_url = \"\(.auth_base_url)\"",
      "api_base_url = \"\(.api_base_url)\"",
      "snapshot_interval_s = 86400",
      "activity_poll_interval_s = 60"' <<<"$line" >> "$CFG"
  done < <(head -n "$N" "$DIR/sim.out")

  T0=$(now)
  "$PRODUCER_BIN" run --config "$CFG" > "$DIR/producer.out" 2> "$PLOG" &
  P_PID=$!
  THREADS_PEAK=0 FDS_PEAK=0 LAST_REPORT=0
  while :; do
    alive "$P_PID" || { wait "$P_PID" && rc=0 || rc=$?; P_PID=""; fail "producer exited early (status $rc) after $(elapsed "$T0") s"; }
    sample
    [ -n "$S_THREADS" ] && [ "$S_THREADS" -gt "$THREADS_PEAK" ] && THREADS_PEAK=$S_THREADS
    [ -n "$S_FDS" ] && [ "$S_FDS" -gt "$FDS_PEAK" ] && FDS_PEAK=$S_FDS
    read_metrics
    T=$(elapsed "$T0")
    if [ "$M_SNAP" -ge "$N" ] && [ "$M_ACT" -ge "$N" ]; then break; fi
    if [ "${T%.*}" -ge "$((LAST_REPORT + 10))" ]; then
      LAST_REPORT=${T%.*}
      echo "  ${T}s: snapshot synced $M_SNAP/$N, activity polled $M_ACT/$N; threads $S_THREADS, fds $S_FDS, rss $((${S_RSS_KB:-0} / 1024)) MB, errors $M_ERRORS"
    fi
    [ "${T%.*}" -lt "$TIMEOUT_S" ] \
      || fail "not all tenants synced within ${TIMEOUT_S}s (snapshot $M_SNAP/$N, activity $M_ACT/$N)"
    sleep 0.5
  done
  SYNC_S=$T
  CPU_S=$(cpu_seconds)
  echo "  all $N synced after ${SYNC_S}s (snapshot + first activity window)"

  CAUGHT_S=skipped CPU_CAUGHT_S=skipped
  if [ "$CATCH_UP" = 1 ]; then
    LAST_REPORT=${T%.*}
    while :; do
      alive "$P_PID" || fail "producer exited before the activity catch-up"
      sample
      [ -n "$S_THREADS" ] && [ "$S_THREADS" -gt "$THREADS_PEAK" ] && THREADS_PEAK=$S_THREADS
      [ -n "$S_FDS" ] && [ "$S_FDS" -gt "$FDS_PEAK" ] && FDS_PEAK=$S_FDS
      CAUGHT=$(caught_up_count)
      T=$(elapsed "$T0")
      if [ "$CAUGHT" -ge "$N" ]; then
        CAUGHT_S=$T CPU_CAUGHT_S=$(cpu_seconds)
        echo "  all $N caught up with activity after ${CAUGHT_S}s"
        break
      fi
      if [ "${T%.*}" -ge "$((LAST_REPORT + 10))" ]; then
        LAST_REPORT=${T%.*}
        echo "  ${T}s: activity caught up $CAUGHT/$N; threads $S_THREADS, fds $S_FDS, rss $((${S_RSS_KB:-0} / 1024)) MB"
      fi
      if [ "${T%.*}" -ge "$TIMEOUT_S" ]; then
        CAUGHT_S=none CPU_CAUGHT_S=none
        echo "  WARNING: only $CAUGHT/$N tenants caught up with activity within ${TIMEOUT_S}s"
        break
      fi
      sleep 0.5
    done
  fi
  read_metrics
  ERRORS=$M_ERRORS
  echo "  sampling ${IDLE_S}s idle..."

  THREADS_IDLE=0 FDS_IDLE=0
  for _ in $(seq 1 $((IDLE_S * 2))); do
    sleep 0.5
    alive "$P_PID" || fail "producer exited while idle"
    sample
    [ -n "$S_THREADS" ] && [ "$S_THREADS" -gt "$THREADS_IDLE" ] && THREADS_IDLE=$S_THREADS
    [ -n "$S_FDS" ] && [ "$S_FDS" -gt "$FDS_IDLE" ] && FDS_IDLE=$S_FDS
  done
  RSS_MB=$(awk -v k="$S_RSS_KB" 'BEGIN { printf "%.1f", k / 1024 }')
  HWM_MB=$(awk -v k="$S_HWM_KB" 'BEGIN { printf "%.1f", k / 1024 }')
  [ "$THREADS_IDLE" -gt "$THREADS_PEAK" ] && THREADS_PEAK=$THREADS_IDLE
  [ "$FDS_IDLE" -gt "$FDS_PEAK" ] && FDS_PEAK=$FDS_IDLE

  TS=$(now)
  kill -TERM "$P_PID"
  EXIT=0
  for _ in $(seq 1 600); do alive "$P_PID" || break; sleep 0.1; done
  if alive "$P_PID"; then
    kill -KILL "$P_PID" 2>/dev/null || true
    EXIT=killed
  fi
  wait "$P_PID" && rc=0 || rc=$?
  [ "$EXIT" = killed ] || EXIT=$rc
  P_PID=""
  STOP_S=$(elapsed "$TS")
  cp "$PLOG" "/tmp/producer-tenants-$N-last.log"
  stop_pid "$SIM_PID" TERM
  SIM_PID=""

  LINE="tenants=$N users_each=$USERS sync_all_s=$SYNC_S cpu_s=$CPU_S caught_up_s=$CAUGHT_S cpu_caught_up_s=$CPU_CAUGHT_S threads_peak=$THREADS_PEAK threads_idle=$THREADS_IDLE fds_peak=$FDS_PEAK fds_idle=$FDS_IDLE rss_mb=$RSS_MB hwm_mb=$HWM_MB errors=$ERRORS stop_s=$STOP_S exit=$EXIT"
  echo "$LINE"
  [ "$EXIT" = 0 ] || echo "  WARNING: the producer did not stop cleanly on SIGTERM (exit=$EXIT)"
  RESULTS+=("$LINE")
done

echo
echo "targets at 200 tenants: threads_peak <= $TARGET_THREADS, hwm_mb <= $TARGET_RSS_MB"
printf '%8s %6s %10s %6s %11s %8s %8s %7s %7s %8s %8s %s\n' \
  tenants users sync_all_s cpu_s caught_up_s thr_peak thr_idle fd_peak fd_idle rss_mb hwm_mb verdict
for LINE in "${RESULTS[@]}"; do
  declare -A F=()
  for kv in $LINE; do F[${kv%%=*}]=${kv#*=}; done
  VERDICT="-"
  if [ "${F[tenants]}" = 200 ]; then
    T_OK=FAIL; R_OK=FAIL
    [ "${F[threads_peak]}" -le "$TARGET_THREADS" ] && T_OK=PASS
    awk -v m="${F[hwm_mb]}" -v t="$TARGET_RSS_MB" 'BEGIN { exit !(m <= t) }' && R_OK=PASS
    VERDICT="threads:$T_OK rss:$R_OK"
    { [ "$T_OK" = PASS ] && [ "$R_OK" = PASS ]; } || STATUS=3
  fi
  printf '%8s %6s %10s %6s %11s %8s %8s %7s %7s %8s %8s %s\n' "${F[tenants]}" "${F[users_each]}" \
    "${F[sync_all_s]}" "${F[cpu_s]}" "${F[caught_up_s]}" "${F[threads_peak]}" "${F[threads_idle]}" "${F[fds_peak]}" \
    "${F[fds_idle]}" "${F[rss_mb]}" "${F[hwm_mb]}" "$VERDICT"
  unset F
done
exit "$STATUS"
