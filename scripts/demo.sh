#!/usr/bin/env bash
# Quick start: start the local servers, seed the demo table in PostgreSQL
# (DEMO_ROWS rows, default 1,000,000), build shiftload and transfer the table
# into MongoDB (FerretDB) with examples/demo.toml, then print the summary.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${DEMO_ROWS:-1000000}

scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"

echo "demo: seeding demo_orders with $ROWS rows" >&2
psql "${SHIFTLOAD_PG_URL%%\?*}" -q -v ON_ERROR_STOP=1 -v rows="$ROWS" -f scripts/seed-demo.sql 2>&1 \
  | grep -v 'NOTICE' >&2 || true

echo "demo: building shiftload (release)" >&2
cargo build --release --quiet

echo "demo: shiftload run examples/demo.toml" >&2
./target/release/shiftload run examples/demo.toml
