#!/usr/bin/env bash
# The staged Parquet path against the query path, same table, same filter
# (keeps about 45 % of the rows) and mapping, side by side: rows/s and peak
# RSS measured from outside (/usr/bin/time -v), under a 256 MiB budget.
#
#   BENCH_ROWS=1000000 scripts/bench-staging.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${BENCH_ROWS:-1000000}
scripts/services.sh start >/dev/null
# shellcheck disable=SC1091
. "${TMPDIR:-/tmp}/shiftload-services/env"
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cargo build --release --quiet
SHIFTLOAD_VOLUME_ROWS=$ROWS SHIFTLOAD_BENCH_DIR=$DIR \
  cargo test --release --quiet --test integration -- --ignored --nocapture --exact filter::stage_for_bench | grep staged
printf '%-8s %12s %10s %12s %14s\n' path written seconds rows/s "peak RSS MiB"
for kind in query staged; do
  /usr/bin/time -v target/release/shiftload run --no-progress --memory-limit 256MiB "$DIR/$kind.toml" \
    >"$DIR/$kind.out" 2>"$DIR/$kind.time"
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,t,":"); s=0; for(i=1;i<=n;i++) s=s*60+t[i]; print s}' "$DIR/$kind.time")
  rss=$(awk '/Maximum resident set size/ {printf "%.0f", $NF/1024}' "$DIR/$kind.time")
  written=$(grep -o '[0-9,]* inserted' "$DIR/$kind.out" | head -1 | sed 's/[^0-9]//g')
  rate=$(awk -v n="$written" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')
  printf '%-8s %12s %10s %12s %14s\n' "$kind" "$written" "$secs" "$rate" "$rss"
done
