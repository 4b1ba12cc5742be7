#!/usr/bin/env bash
# `shiftload export` beside the MongoDB load of the same table, same run:
# rows/s, MB/s of Parquet written, client CPU (user+sys) and peak RSS, all
# from /usr/bin/time -v, under a 256 MiB budget. Exports to a local
# directory (file://) and to S3 (moto); the MongoDB load only at sizes up
# to BENCH_LOAD_MAX rows (FerretDB takes minutes per million).
#
#   BENCH_SIZES="1000000 10000000" scripts/bench-export.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-common.sh
SIZES=${BENCH_SIZES:-1000000}
LOAD_MAX=${BENCH_LOAD_MAX:-1000000}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cargo build --release --quiet
python3 - <<'PY'
import os, urllib.request
req = urllib.request.Request(os.environ["SHIFTLOAD_S3_ENDPOINT"] + "/bench-export", method="PUT")
try:
    urllib.request.urlopen(req)
except Exception:
    pass
PY

job() { # job FILE TABLE SINK-SECTION
  cat >"$1" <<TOML
[source]
url = "\${SHIFTLOAD_PG_URL}"
query = "SELECT * FROM $2"
[partition]
column = "order_id"
count = 16
parallel = 2
[mapping]
id = ["order_id"]
decimal = "string"
$3
TOML
}

measure() { # measure LABEL ROWS COMMAND...
  local label=$1 rows=$2; shift 2
  /usr/bin/time -v "$@" >"$DIR/out" 2>"$DIR/time" || { cat "$DIR/out" "$DIR/time" >&2; exit 1; }
  awk -v label="$label" -v rows="$rows" '
    /Elapsed \(wall clock\)/ {n=split($NF,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]}
    /User time/ {u=$NF} /System time/ {y=$NF}
    /Maximum resident set size/ {rss=$NF/1024}
    END {printf "%-22s %11d %8.2f %11.0f %8.2f %9.0f\n", label, rows, s, rows/s, u+y, rss}' "$DIR/time"
  grep -E "volume|written" "$DIR/out" | sed 's/^/      /'
}

printf '%-22s %11s %8s %11s %8s %9s\n' run rows seconds rows/s CPU-s "RSS MiB"
for rows in $SIZES; do
  table=bench_export_$rows
  reference_table "$table" "$rows"
  job "$DIR/file.toml" "$table" "[export]
location = \"file://$DIR/parts/\""
  measure "export file:// $rows" "$rows" target/release/shiftload export --no-progress --restart --memory-limit 256MiB "$DIR/file.toml"
  du -sm "$DIR/parts" | awk '{print "      on disk: " $1 " MiB"}'
  rm -rf "$DIR/parts"
  job "$DIR/s3.toml" "$table" "[export]
location = \"s3://bench-export/$table/\"
endpoint = \"\${SHIFTLOAD_S3_ENDPOINT}\""
  measure "export s3 (moto) $rows" "$rows" target/release/shiftload export --no-progress --restart --memory-limit 256MiB "$DIR/s3.toml"
  if [ "$rows" -le "$LOAD_MAX" ]; then
    job "$DIR/load.toml" "$table" "[target]
uri = \"\${MONGODB_URI}\"
database = \"bench_export\"
collection = \"c$rows\""
    python3 -c "import pymongo,os; pymongo.MongoClient(os.environ['MONGODB_URI']).drop_database('bench_export')"
    measure "load MongoDB $rows" "$rows" target/release/shiftload run --no-progress --restart --memory-limit 256MiB "$DIR/load.toml"
  fi
done
