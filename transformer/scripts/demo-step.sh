#!/usr/bin/env bash
# transformer/scripts/demo-step.sh — the transformer's part of the demo: normalize everything
# on the raw topic (exactly once, until caught up), then print the license report and write it
# as HTML, with example seat prices, to .cache/license-report.html.
# Expects raw events on pingone.raw.v1 (e.g. from producer/demo.sh) and KAFKA_BOOTSTRAP_SERVERS /
# SCHEMA_REGISTRY_URL from deploy/local/up (started here when unset).
# Usage: transformer/scripts/demo-step.sh [license-report options, e.g. --format csv]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"
if [[ -z "${KAFKA_BOOTSTRAP_SERVERS:-}" || -z "${SCHEMA_REGISTRY_URL:-}" ]]; then
    eval "$(deploy/local/up)"
fi
export KAFKA_BOOTSTRAP_SERVERS SCHEMA_REGISTRY_URL
# Any free port for /metrics, so the demo never collides with a running transformer (9465).
export TRANSFORMER__OPERATIONS__LISTEN_ADDR="${TRANSFORMER__OPERATIONS__LISTEN_ADDR:-127.0.0.1:0}"
cargo build -q -p transformer --bin transformer
echo "==> transformer: pingone.raw.v1 -> usage.* (until caught up)" >&2
"$TARGET/debug/transformer" run --until-caught-up
echo "==> license report" >&2
"$TARGET/debug/transformer" license-report "$@"
# The same as one HTML page with charts, priced with the example seat prices.
html="${LOCAL_CACHE_DIR:-$ROOT/.cache}/license-report.html"
mkdir -p "$(dirname "$html")"
"$TARGET/debug/transformer" license-report --format html \
    --prices transformer/scripts/demo-prices.toml >"$html"
echo "==> HTML license report (example prices: transformer/scripts/demo-prices.toml): $html" >&2
