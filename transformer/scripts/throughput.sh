#!/usr/bin/env bash
# transformer/scripts/throughput.sh — transformer throughput against a pass-through
# consume->produce loop with the same client settings, in the same run, on the local broker.
#
# Usage: transformer/scripts/throughput.sh [SYNCS...]   (default: 2 8)
#        transformer/scripts/throughput.sh idle         (RSS at rest: an empty raw topic, 15 s)
#        transformer/scripts/throughput.sh scale [SYNCS] (1 vs 2 instances in a group, two tenants
#                                                  of SYNCS syncs each on two partitions; the
#                                                  longest commit stall while the second joins)
# Needs KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL (eval "$(deploy/local/up)").
# Prints CSV: per input size, seconds, events/s, CPU microseconds per event (user + system of
# the process over events) and peak RSS of each, and the ratio transformer/pass-through (issue
# targets: >= 0.75 at 32 syncs, >= 0.85 at 128, for the whole run). Each sync adds 5,000 users, 205 other sync events
# and 1,000 accesses over a fixed population, so a flat transformer RSS means bounded memory.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${KAFKA_BOOTSTRAP_SERVERS:?run: eval \"\$(deploy/local/up)\"}"
: "${SCHEMA_REGISTRY_URL:?run: eval \"\$(deploy/local/up)\"}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p transformer --bin transformer --example throughput >&2
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(2 8)
"$CARGO_TARGET_DIR/release/examples/throughput" "$CARGO_TARGET_DIR/release/transformer" "${sizes[@]}"
