#!/usr/bin/env bash
# Reader throughput: shiftload's PostgreSQL reader (row-limited portal,
# binary rows decoded into Arrow) against ConnectorX's Arrow stream, same
# table, same server, same run. Peak RSS from /usr/bin/time -v.
#   BENCH_ROWS (default 5,000,000)  rows of the reference table
#   BENCH_REPEAT (default 2)        runs of each, alternating
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${BENCH_ROWS:-5000000}
REPEAT=${BENCH_REPEAT:-2}
TABLE=bench_ref_$ROWS

# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
peers_env
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }

if [ "$(psql "$PG" -qAtc "SELECT count(*) FROM $TABLE" 2>/dev/null || echo 0)" != "$ROWS" ]; then
  echo "bench: seeding $TABLE ($ROWS rows)" >&2
  sed "s/demo_orders/$TABLE/g" scripts/seed-demo.sql | psql "$PG" -q -v ON_ERROR_STOP=1 -v rows="$ROWS" 2>&1 | grep -v NOTICE >&2 || true
fi
cargo build --release --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM $TABLE"
fetch_rows = 65536
[target]
uri = "mongodb://127.0.0.1:1/"
database = "unused"
collection = "unused"
JOB

peak() { awk -F: '/Maximum resident/ {printf "%.0f MiB", $2/1024}' "$1"; }
rate() { grep -o '[0-9]* rows/s' "$1" | head -1; }

printf '%-32s %14s %10s\n' "reader ($ROWS rows)" "rows/s" "peak RSS"
for i in $(seq "$REPEAT"); do
  /usr/bin/time -v ./target/release/shiftload bench --stage source "$work/job.toml" >"$work/sl.out" 2>"$work/sl.time"
  printf '%-32s %14s %10s\n' "shiftload (portal, binary)" "$(rate "$work/sl.out")" "$(peak "$work/sl.time")"
  /usr/bin/time -v "$PEERS_PY" scripts/peers/cx_stream.py "$PG" "SELECT * FROM $TABLE" 65536 >"$work/cx.out" 2>"$work/cx.time"
  printf '%-32s %14s %10s\n' "connectorx arrow_stream" "$(rate "$work/cx.out")" "$(peak "$work/cx.time")"
done
