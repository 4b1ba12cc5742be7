#!/usr/bin/env bash
# Send path: the same transfer with `target.send = "command"` (an insert
# command assembled from the encoded bytes) and `"insert_many"` (the
# driver re-serialises every document), side by side. Against a server that
# is itself the bottleneck (FerretDB), wall time says little: the client's
# CPU time per row is the figure (user + sys from /usr/bin/time -v).
#   ROWS (default 1,000,000)   rows of the reference table
#   WRITERS (default 4)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${ROWS:-1000000}
WRITERS=${WRITERS:-4}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
TABLE=ref_$ROWS
reference_table "$TABLE" "$ROWS"
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-12s %12s %10s %12s %10s\n' send "rows/s" "wall s" "CPU s" "peak RSS"
for mode in command insert_many command insert_many; do
  python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database('bench_send')" "$MONGODB_URI"
  cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM $TABLE"
[target]
uri = "$MONGODB_URI"
database = "bench_send"
collection = "c"
send = "$mode"
writers = $WRITERS
[mapping]
id = ["order_id"]
decimal = "string"
JOB
  /usr/bin/time -v ./target/release/shiftload run --no-progress "$work/job.toml" >"$work/out" 2>"$work/time"
  awk -v mode="$mode" '
    /throughput/ {rate=$2}
    /Elapsed \(wall/ {n=split($NF, t, ":"); wall = (n == 3) ? t[1]*3600+t[2]*60+t[3] : t[1]*60+t[2]}
    /User time/ {user=$NF} /System time/ {sys=$NF}
    /Maximum resident/ {rss=$NF/1024}
    END {printf "%-12s %12s %10.1f %12.2f %7.0f MiB\n", mode, rate, wall, user+sys, rss}' "$work/out" "$work/time"
done
python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database('bench_send')" "$MONGODB_URI"
