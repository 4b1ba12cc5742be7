#!/usr/bin/env bash
# Upserts next to inserts, same run, same rows: `on_conflict = "fail"`
# (unordered inserts) into an empty collection, then `"replace"` (upserts)
# into an empty one and again into the full one, then `"merge"` into the
# full one. FerretDB v1 gets one upsert per `update` command (see
# README), and on its SQLite backend each took about 50 ms here, whatever
# the collection's size (300 or 1,000 rows): upserts into the local
# stand-in measure its per-command cost, not the client's.
#   ROWS (default 1,000: upserts into FerretDB take tens of ms each)
#   WRITERS (default 4)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${ROWS:-1000}
WRITERS=${WRITERS:-4}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
TABLE=ref_$ROWS
reference_table "$TABLE" "$ROWS"
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
