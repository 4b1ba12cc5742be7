#!/usr/bin/env bash
# The volume transfer: ROWS rows (default 1,000,000) of the reference table
# through the real binary into the MongoDB-compatible server, every document
# compared with its source row, then a second run that must add nothing.
# Prints the first run's summary (rows/s, peak RSS).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"
SHIFTLOAD_VOLUME_ROWS=${ROWS:-1000000} cargo test --release --test integration -- \
  --ignored --nocapture --exact transfer::volume_transfer_matches_the_source
