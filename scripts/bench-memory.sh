#!/usr/bin/env bash
# Peak RSS and throughput under a memory budget, measured from outside with
# /usr/bin/time -v, side by side with the classic Python pipeline
# (pandas.read_sql with chunksize + pymongo insert_many) on the same data
# and servers.
#   REF_ROWS   (default "1000000 10000000")  sizes of the reference table
#   WIDE_ROWS  (default "200000")            sizes of the wide table (~2 KiB text a row)
#   BUDGET     (default 256MiB)              shiftload's --memory-limit
#   PEER       (default 1)                   0 skips the Python pipeline
#   PEER_MAX_ROWS (default 2000000)          larger tables run shiftload alone
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REF_ROWS=${REF_ROWS:-"1000000 10000000"}
WIDE_ROWS=${WIDE_ROWS:-"200000"}
BUDGET=${BUDGET:-256MiB}
PEER=${PEER:-1}
PEER_MAX_ROWS=${PEER_MAX_ROWS:-2000000}

# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
peers_env
command -v /usr/bin/time >/dev/null || apt-get install -y -qq time >/dev/null
cargo build --release --quiet

seed() { # table rows kind
  if [ "$(psql "$PG" -qAtc "SELECT count(*) FROM $1" 2>/dev/null || echo 0)" = "$2" ]; then return; fi
  echo "bench: seeding $1 ($2 rows)" >&2
  if [ "$3" = ref ]; then
    sed "s/demo_orders/$1/g" scripts/seed-demo.sql | psql "$PG" -q -v ON_ERROR_STOP=1 -v rows="$2" 2>&1 | grep -v NOTICE >&2 || true
  else
    psql "$PG" -q -v ON_ERROR_STOP=1 -c "DROP TABLE IF EXISTS $1" \
      -c "CREATE TABLE $1 AS SELECT i::bigint AS id, repeat(md5(i::text), 64) AS body, now() AS loaded_at FROM generate_series(1, $2) i"
  fi
}
drop_target() { python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database(sys.argv[2])" "$MONGODB_URI" "$1"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
peak() { awk -F: '/Maximum resident/ {printf "%.0f MiB", $2/1024}' "$1"; }

printf '%-12s %-10s %-24s %14s %12s\n' table rows pipeline "rows/s" "peak RSS"
run_case() { # table rows extra-mapping
  local table=$1 rows=$2 db=bench_mem
  cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM $table"
[target]
uri = "$MONGODB_URI"
database = "$db"
collection = "c"
[mapping]
id = ["${3:-order_id}"]
decimal = "string"
JOB
  drop_target "$db"
  /usr/bin/time -v ./target/release/shiftload run --no-progress --memory-limit "$BUDGET" "$work/job.toml" >"$work/sl.out" 2>"$work/sl.time" \
    || { cat "$work/sl.out" "$work/sl.time" >&2; exit 1; }
  printf '%-12s %-10s %-24s %14s %12s\n' "${table%%_*}" "$rows" "shiftload ($BUDGET)" \
    "$(awk '/throughput/ {print $2}' "$work/sl.out")" "$(peak "$work/sl.time")"
  if [ "$PEER" = 1 ] && [ "$rows" -le "$PEER_MAX_ROWS" ]; then
    drop_target "$db"
    if /usr/bin/time -v "$PEERS_PY" scripts/peers/classic_pipeline.py "$PG" "SELECT * FROM $table" "$MONGODB_URI" "$db" c 50000 \
      >"$work/py.out" 2>"$work/py.time"; then
      printf '%-12s %-10s %-24s %14s %12s\n' "${table%%_*}" "$rows" "pandas+pymongo" \
        "$(grep -o '[0-9]* rows/s' "$work/py.out" | cut -d' ' -f1)" "$(peak "$work/py.time")"
    else
      printf '%-12s %-10s %-24s %14s %12s\n' "${table%%_*}" "$rows" "pandas+pymongo" "failed" "$(peak "$work/py.time")"
    fi
  fi
  drop_target "$db"
}

for n in $REF_ROWS; do seed "ref_$n" "$n" ref; run_case "ref_$n" "$n" order_id; done
for n in $WIDE_ROWS; do seed "wide_$n" "$n" wide; run_case "wide_$n" "$n" id; done
