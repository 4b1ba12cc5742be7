#!/usr/bin/env bash
# The reader in Redshift mode: the same table read directly from PostgreSQL
# and through the Redshift-dialect test server (tests/common/redshift.rs:
# NUMERIC as unscaled integers, 12-byte INTERVAL, one Execute at a time),
# rows/s and peak RSS side by side; then a whole transfer through the
# dialect server, verified against the direct source with `shiftload verify`.
#   BENCH_ROWS (default 1,000,000)  rows of the reference table
#   BENCH_TRANSFER (default 1)      0 skips the transfer + verify
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${BENCH_ROWS:-1000000}
TABLE=bench_ref_$ROWS

scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"
PG=${SHIFTLOAD_PG_URL%%\?*}
command -v /usr/bin/time >/dev/null || { apt-get install -y -qq time >/dev/null; }
if [ "$(psql "$PG" -qAtc "SELECT count(*) FROM $TABLE" 2>/dev/null || echo 0)" != "$ROWS" ]; then
  echo "bench: seeding $TABLE ($ROWS rows)" >&2
  sed "s/demo_orders/$TABLE/g" scripts/seed-demo.sql | psql "$PG" -q -v ON_ERROR_STOP=1 -v rows="$ROWS" 2>&1 | grep -v NOTICE >&2 || true
fi
cargo build --release --quiet

work=$(mktemp -d)
cargo test --release --quiet --test integration -- --ignored --exact redshift::serve_dialect_server --nocapture >"$work/server.out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; pkill -f "redshift-.*serve_dialect_server" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 600); do grep -q "dialect server port" "$work/server.out" && break; sleep 1; done
port=$(grep -o 'dialect server port: [0-9]*' "$work/server.out" | grep -o '[0-9]*$')
[ -n "$port" ] || { echo "bench: the dialect server did not start" >&2; cat "$work/server.out" >&2; exit 1; }
DIALECT=$(printf '%s' "$SHIFTLOAD_PG_URL" | sed -E "s/@([^:/]+):[0-9]+/@127.0.0.1:$port/")

jobfile() { # url collection
  cat <<JOB
[source]
url = "$1"
query = "SELECT * FROM $TABLE"
fetch_rows = 65536
[target]
uri = "$MONGODB_URI"
database = "bench_redshift"
collection = "$2"
[mapping]
id = ["order_id"]
decimal = "string"
JOB
}
coll=orders_$(date +%s)
jobfile "$SHIFTLOAD_PG_URL" "$coll" >"$work/direct.toml"
jobfile "$DIALECT" "$coll" >"$work/dialect.toml"

peak() { awk -F: '/Maximum resident/ {printf "%.0f MiB", $2/1024}' "$1"; }
rate() { grep -o '[0-9]* rows/s' "$1" | head -1; }
printf '%-40s %14s %10s\n' "reader ($ROWS rows)" "rows/s" "peak RSS"
for i in 1 2; do
  for side in direct dialect; do
    /usr/bin/time -v ./target/release/shiftload bench --stage source "$work/$side.toml" >"$work/$side.out" 2>"$work/$side.time"
    printf '%-40s %14s %10s\n' "$side" "$(rate "$work/$side.out")" "$(peak "$work/$side.time")"
  done
done

if [ "${BENCH_TRANSFER:-1}" != 0 ]; then
  echo "transfer through the dialect server, then verify against the direct source:"
  ./target/release/shiftload run --no-progress --restart "$work/dialect.toml" | sed -n '1,12p'
  ./target/release/shiftload verify "$work/direct.toml"
fi
