#!/usr/bin/env bash
# Demo: the producer against a simulated PingOne tenant on the local broker and registry.
#   producer/demo.sh        one snapshot sync (`producer sync --once`), then a summary of the topic
#   producer/demo.sh run    `producer run` (syncs + activity polling) until Ctrl-C
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MODE=${1:-sync}
cd "$ROOT"

eval "$(deploy/local/up)"
cargo build -q -p producer -p pingone-sim --bin producer --bin pingone-sim

export DEMO_CLIENT_SECRET=demo-secret
LOG=$(mktemp)
"$TARGET/debug/pingone-sim" --listen 127.0.0.1:9400 \
  --tenant "name=demo,env=6a0f2b9c-1d3e-4f5a-8b7c-9d0e1f2a3b4c,client_id=demo-client,client_secret=$DEMO_CLIENT_SECRET,region=eu,users=1000,seed=1" \
  > "$LOG" 2>&1 &
SIM_PID=$!
trap 'kill $SIM_PID 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do grep -q environment_id "$LOG" && break; sleep 0.1; done
grep -q environment_id "$LOG" || { echo "the simulator did not start:"; cat "$LOG"; exit 1; }

export PRODUCER__KAFKA__BOOTSTRAP_SERVERS="$KAFKA_BOOTSTRAP_SERVERS"
export PRODUCER__SCHEMA_REGISTRY__URL="$SCHEMA_REGISTRY_URL"
CONFIG=producer/examples/demo.toml
"$TARGET/debug/producer" validate-config --config "$CONFIG"

if [ "$MODE" = run ]; then
  echo "metrics: http://127.0.0.1:9464/metrics — Ctrl-C to stop"
  exec "$TARGET/debug/producer" run --config "$CONFIG"
fi

"$TARGET/debug/producer" sync --config "$CONFIG" --tenant demo --once
echo "raw events of tenant demo on pingone.raw.v1 (read_committed), by kind:"
kcat -C -b "$KAFKA_BOOTSTRAP_SERVERS" -t pingone.raw.v1 -X isolation.level=read_committed -e -q \
  -f '%h\n' 2>/dev/null | tr ',' '\n' | grep '^kind=' | sort | uniq -c
