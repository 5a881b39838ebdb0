#!/usr/bin/env bash
# Benchmark: release build, one tenant of USERS users (default 1,000,000), a full paged scan of
# /users over loopback by examples/scan_client.rs (limit 200, next followed verbatim), checked
# against the truth dump, then a timed read of the 14 days of /activities (also checked against
# the truth); reports users/s, events/s and the simulator's peak resident memory (VmHWM).
# Targets: >= 20,000 users/s and < 200 MB. Exits non-zero when the scan is wrong or a target
# is missed.
set -euo pipefail

users="${USERS:-1000000}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d)"
sim_pid=""
cleanup() {
  if [[ -n "$sim_pid" ]] && kill -0 "$sim_pid" 2>/dev/null; then
    kill "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$repo" && CARGO_TARGET_DIR="$target" cargo build -q --release -p pingone-sim --bin pingone-sim --example scan_client)

"$target/release/pingone-sim" --listen 127.0.0.1:0 --anchor-time 2026-11-20T12:00:00Z \
  --tenant "name=bench,users=$users,seed=42" >"$work/tenants.jsonl" 2>"$work/sim.log" &
sim_pid=$!
for _ in $(seq 1 200); do
  [[ -s "$work/tenants.jsonl" ]] && break
  sleep 0.05
done
line="$(head -n1 "$work/tenants.jsonl")"
rss_idle_kb="$(awk '/VmRSS/ {print $2}' "/proc/$sim_pid/status")"

# Nearly the 14 days before the anchor (an hour short, so the moving 14-day horizon of
# "now = anchor + time since start" cannot cut the window during the run).
result="$("$target/release/examples/scan_client" "$line" 2026-11-06T13:00:00Z 2026-11-20T12:00:00Z)"
hwm_kb="$(awk '/VmHWM/ {print $2}' "/proc/$sim_pid/status")"
rate="$(head -n1 <<<"$result" | sed -E 's/.*"users_per_second":([0-9.]+).*/\1/')"

echo "users scan: $(head -n1 <<<"$result")"
echo "activities (14 days): $(tail -n1 <<<"$result")"
echo "simulator: users=$users idle_rss_kb=$rss_idle_kb peak_rss_kb(VmHWM)=$hwm_kb"
ok=1
awk -v r="$rate" 'BEGIN { exit !(r >= 20000) }' || { echo "FAIL: $rate users/s is below 20000" >&2; ok=0; }
(( hwm_kb < 200 * 1024 )) || { echo "FAIL: peak RSS ${hwm_kb} kB is not under 200 MB" >&2; ok=0; }
(( ok == 1 )) && echo "PASS: >= 20000 users/s and < 200 MB"
(( ok == 1 ))
