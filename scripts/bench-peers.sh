#!/usr/bin/env bash
# shiftload beside its peers, in one run, on the same table and the same
# sink: ConnectorX (cursor protocol, as Redshift requires) + PyMongoArrow
# `write`, and pandas.read_sql(chunksize) + pymongo insert_many(ordered=False).
# Each runs into the real MongoDB-compatible server (MONGODB_URI, FerretDB by
# default) and into the ack endpoint (examples/ack_endpoint.rs: a measuring
# instrument that acknowledges the inserts without storing them), which
# takes the server's own cost out. Client CPU is user + sys of the client
# process from /usr/bin/time -v; the ratios are the peers' CPU over
# shiftload's in the same sink.
#   ROWS   (default 1000000)  rows of the reference table ref_ROWS
#   SINKS  (default "ack real")
#   BUDGET (default 256MiB)   shiftload's --memory-limit
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${ROWS:-1000000}
SINKS=${SINKS:-"ack real"}
BUDGET=${BUDGET:-256MiB}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
peers_env
TABLE=ref_$ROWS
reference_table "$TABLE" "$ROWS"
cargo build --release --quiet
work=$(mktemp -d)
trap 'ack_stop; rm -rf "$work"' EXIT
DB=bench_peers
export PYTHONWARNINGS=ignore
drop() { python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])" "$MONGODB_URI" "$DB"; }
stored() { python3 -c "import pymongo,sys; print(pymongo.MongoClient(sys.argv[1])[sys.argv[2]].c.count_documents({}))" "$MONGODB_URI" "$DB"; }

run() { # sink uri pipeline
  local sink=$1 uri=$2 name=$3
  drop
  case $name in
    shiftload)
      cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM $TABLE"
[target]
uri = "$uri"
database = "$DB"
collection = "c"
[mapping]
id = ["order_id"]
decimal = "string"
JOB
      /usr/bin/time -v ./target/release/shiftload run --no-progress --memory-limit "$BUDGET" "$work/job.toml" \
        >"$work/out" 2>"$work/time" ;;
    cx+pymongoarrow)
      /usr/bin/time -v "$PEERS_PY" scripts/peers/cx_pymongoarrow.py "$PG" "SELECT * FROM $TABLE" "$uri" "$DB" c 65536 order_id \
        >"$work/out" 2>"$work/time" ;;
    pandas+pymongo)
      /usr/bin/time -v "$PEERS_PY" scripts/peers/classic_pipeline.py "$PG" "SELECT * FROM $TABLE" "$uri" "$DB" c 50000 \
        >"$work/out" 2>"$work/time" ;;
  esac || { echo "bench: $name into $sink failed:" >&2; tail -5 "$work/out" "$work/time" >&2; return 1; }
  local check=""
  if [ "$sink" = real ]; then
    local n; n=$(stored)
    [ "$n" = "$ROWS" ] || check=" (only $n of $ROWS documents stored)"
  fi
  read -r rate wall cpu rss < <(time_figures "$work/time" "$ROWS")
  printf '%-5s %-18s %10s %8s %8s %10s %8s MiB%s\n' "$sink" "$name" "$rate" "$wall" "$cpu" \
    "$(awk -v c="$cpu" -v r="$ROWS" 'BEGIN {printf "%.2f", c / r * 1e6}')" "$rss" "$check"
  echo "$sink $name $cpu" >>"$work/cpu"
  drop
}

echo "bench-peers: $ROWS rows of $TABLE, shiftload budget $BUDGET" >&2
printf '%-5s %-18s %10s %8s %8s %10s %12s\n' sink pipeline "rows/s" "wall s" "CPU s" "CPU s/1M" "peak RSS"
for sink in $SINKS; do
  uri=$MONGODB_URI
  if [ "$sink" = ack ]; then ack_start 27099 c; uri=$ACK_URI; fi
  for p in shiftload cx+pymongoarrow pandas+pymongo; do run "$sink" "$uri" "$p" || true; done
  ack_stop
done
echo
echo "client CPU of each peer over shiftload's, same sink:"
awk '$2 == "shiftload" {base[$1] = $3} {cpu[$1" "$2] = $3; order[++n] = $1" "$2}
  END {for (i = 1; i <= n; i++) {split(order[i], k, " "); if (k[2] != "shiftload" && base[k[1]] > 0)
    printf "  %-5s %-18s %6.1fx\n", k[1], k[2], cpu[order[i]] / base[k[1]]}}' "$work/cpu"
