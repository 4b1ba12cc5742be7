#!/usr/bin/env bash
# Upserts next to inserts, same run, same rows: `on_conflict = "fail"`
# (unordered inserts) into an empty collection, then `"replace"` (upserts)
# into an empty one and again into the full one, then `"merge"` into the
# full one. On FerretDB v1 every upsert is one statement per command and
# looks its `_id` up by scanning the collection, so upserts slow down as
# the collection grows; a real MongoDB uses the `_id` index.
#   ROWS (default 5,000)   rows of the reference table
#   WRITERS (default 4)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${ROWS:-5000}
WRITERS=${WRITERS:-4}
scripts/services.sh start
# shellcheck disable=SC1091
. "${SHIFTLOAD_SERVICES_DIR:-${TMPDIR:-/tmp}/shiftload-services}/env"
PG=${SHIFTLOAD_PG_URL%%\?*}
TABLE=ref_$ROWS
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
python3 -m pip install -q pymongo >/dev/null 2>&1 || true
if [ "$(psql "$PG" -qAtc "SELECT count(*) FROM $TABLE" 2>/dev/null || echo 0)" != "$ROWS" ]; then
  sed "s/demo_orders/$TABLE/g" scripts/seed-demo.sql | psql "$PG" -q -v ON_ERROR_STOP=1 -v rows="$ROWS" 2>&1 | grep -v NOTICE >&2 || true
fi
cargo build --release --quiet
work=$(mktemp -d)
drop() { python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database('bench_upsert')" "$MONGODB_URI"; }
trap 'rm -rf "$work"; drop' EXIT
printf '%-22s %10s %10s %10s %14s\n' write "rows/s" "wall s" "CPU s" "ms/document"
for step in "insert,fail,empty" "upsert,replace,empty" "upsert,replace,full" "merge,merge,full"; do
  IFS=, read -r name conflict into <<<"$step"
  [ "$into" = empty ] && drop
  cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM $TABLE"
[target]
uri = "$MONGODB_URI"
database = "bench_upsert"
collection = "c"
writers = $WRITERS
on_conflict = "$conflict"
[mapping]
id = ["order_id"]
decimal = "string"
JOB
  /usr/bin/time -v ./target/release/shiftload run --no-progress "$work/job.toml" >"$work/out" 2>"$work/time"
  awk -v name="$name into $into" -v rows="$ROWS" '
    /Elapsed \(wall/ {n=split($NF, t, ":"); wall = (n == 3) ? t[1]*3600+t[2]*60+t[3] : t[1]*60+t[2]}
    /User time/ {user=$NF} /System time/ {sys=$NF}
    END {printf "%-22s %10.0f %10.1f %10.2f %14.2f\n", name, rows/wall, wall, user+sys, 1000*wall/rows}' "$work/time"
done
