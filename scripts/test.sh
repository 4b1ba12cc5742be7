#!/usr/bin/env bash
# The whole test suite: starts the real servers (installing what is missing),
# checks formatting and lints, then runs every test against those servers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"

# The tests leave their tables behind (a failing test's are there to
# inspect); each is named prefix_PID_N by tests/common's unique(). Those of
# test processes no longer running are dropped from the project's own
# database here, so that runs do not pile them up.
pg="${SHIFTLOAD_PG_URL%%\?*}"
stale=$(psql "$pg" -Atq -c "SELECT tablename FROM pg_tables
    WHERE schemaname = 'public' AND tablename ~ '^[a-z0-9_]+_[0-9]+_[0-9]+$'" \
  | while read -r table; do
    pid=${table%_*}
    kill -0 "${pid##*_}" 2>/dev/null || echo "DROP TABLE IF EXISTS \"$table\" CASCADE;"
  done)
if [ -n "$stale" ]; then
  printf '%s\n' "$stale" | psql "$pg" -q -v ON_ERROR_STOP=1 >/dev/null
  echo "test: dropped $(printf '%s\n' "$stale" | wc -l) tables left by earlier test runs" >&2
fi

# pyarrow: the independent Parquet reader of tests/export.rs.
python3 -c 'import pyarrow' 2>/dev/null || python3 -m pip install -q 'pyarrow>=15'

cargo fmt --all -- --check
cargo clippy --release --all-targets --quiet -- -D warnings
cargo test --release "$@"
