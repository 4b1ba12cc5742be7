#!/usr/bin/env bash
# The end-to-end ceiling and flat memory: shiftload from PostgreSQL through
# the ack endpoint (examples/ack_endpoint.rs, a measuring instrument that
# acknowledges the inserts without storing them and forwards the rest,
# checkpoint included, to the real server) under a memory budget, at each
# size. Prints rows/s, client CPU per million rows and peak RSS (from
# /usr/bin/time -v) per size; RSS should not grow with the size.
#   SIZES  (default "1000000 10000000 50000000")  rows of ref_N (seeded when missing)
#   BUDGET (default 256MiB)
#   SEND   (default: the job's default)           target.send
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZES=${SIZES:-"1000000 10000000 50000000"}
BUDGET=${BUDGET:-256MiB}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
cargo build --release --quiet
work=$(mktemp -d)
trap 'ack_stop; rm -rf "$work"' EXIT
ack_start 27098 c
DB=bench_ceiling
printf '%-10s %10s %10s %8s %10s %12s\n' rows "rows/s" "MiB/s" "wall s" "CPU s/1M" "peak RSS"
for n in $SIZES; do
  reference_table "ref_$n" "$n"
  cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM ref_$n"
[target]
uri = "$ACK_URI"
database = "$DB"
collection = "c"
${SEND:+send = \"$SEND\"}
[mapping]
id = ["order_id"]
decimal = "string"
JOB
  /usr/bin/time -v ./target/release/shiftload run --no-progress --restart --memory-limit "$BUDGET" "$work/job.toml" \
    >"$work/out" 2>"$work/time" || { cat "$work/out" "$work/time" >&2; exit 1; }
  grep -q "transfer complete" "$work/out" || { cat "$work/out" >&2; exit 1; }
  read -r rate wall cpu rss < <(time_figures "$work/time" "$n")
  printf '%-10s %10s %10s %8s %10s %8s MiB\n' "$n" "$rate" \
    "$(awk '/throughput/ {print $4}' "$work/out")" "$wall" \
    "$(awk -v c="$cpu" -v r="$n" 'BEGIN {printf "%.2f", c / r * 1e6}')" "$rss"
done
python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])" "$MONGODB_URI" "$DB"
