#!/usr/bin/env bash
# What a slow sink costs the client itself: the same rows through the ack
# endpoint (examples/ack_endpoint.rs) acknowledged at once, and paced at
# each PACE documents per second, as a slow server would take them. The
# paced endpoint sleeps instead of working, so unlike a real slow server on
# the same machine it takes no CPU from the client: the difference in client
# CPU (user + sys from /usr/bin/time) is what waiting costs shiftload. Runs
# alternate between the paces; medians are printed with the ratio to the
# unpaced run, and the page faults and context switches behind them.
#   ROWS   (default 300000)              rows of ref_1000000 (seeded when missing)
#   PACES  (default "60000 12000 4000")  documents per second
#   RUNS   (default 3)                   runs per pace
#   BUDGET (default 256MiB)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${ROWS:-300000}
PACES=${PACES:-"60000 12000 4000"}
RUNS=${RUNS:-3}
BUDGET=${BUDGET:-256MiB}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
reference_table ref_1000000 1000000
cargo build --release --quiet
work=$(mktemp -d)
trap 'ack_stop; rm -rf "$work"' EXIT
for ((run = 1; run <= RUNS; run++)); do
  for pace in 0 $PACES; do
    if [ "$pace" = 0 ]; then ack_start 27093 c; else ack_start 27093 c "$pace"; fi
    cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM ref_1000000 WHERE order_id <= $ROWS"
[target]
uri = "$ACK_URI"
database = "bench_slow_sink"
collection = "c"
[mapping]
id = ["order_id"]
decimal = "string"
JOB
    /usr/bin/time -f "%e %U %S %M %R %w %c" ./target/release/shiftload run --no-progress --restart \
      --memory-limit "$BUDGET" "$work/job.toml" >"$work/out" 2>"$work/time" \
      || { cat "$work/out" "$work/time" >&2; exit 1; }
    ack_stop
    grep -q "transfer complete" "$work/out" || { cat "$work/out" >&2; exit 1; }
    echo "$pace $(tail -1 "$work/time")" >>"$work/runs"
  done
done
printf '%-10s %8s %8s %10s %10s %10s %10s %9s\n' "docs/s" "wall s" "CPU s" "CPU s/1M" "x unpaced" "faults" "switches" "peak RSS"
python3 - "$work/runs" "$ROWS" <<'PY'
import statistics, sys
runs, rows = {}, int(sys.argv[2])
for line in open(sys.argv[1]):
    pace, wall, user, sys_, rss, faults, vol, invol = line.split()
    runs.setdefault(pace, []).append((float(wall), float(user) + float(sys_), int(rss), int(faults), int(vol) + int(invol)))
med = lambda pace, i: statistics.median(r[i] for r in runs[pace])
base = med("0", 1)
for pace in runs:
    cpu = med(pace, 1)
    print(f"{'unpaced' if pace == '0' else pace:<10} {med(pace, 0):8.1f} {cpu:8.2f} {cpu / rows * 1e6:10.2f} "
          f"{cpu / base:10.2f} {med(pace, 3):10.0f} {med(pace, 4):10.0f} {med(pace, 2) / 1024:5.0f} MiB")
PY
python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database('bench_slow_sink')" "$MONGODB_URI"
