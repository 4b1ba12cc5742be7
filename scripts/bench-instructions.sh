#!/usr/bin/env bash
# The client's own work per row, end to end, in instructions, which a noisy
# machine does not blur: shiftload copies ROWS rows of ref_1000000 (the
# decimal column as text, as the other scripts map it) through the ack
# endpoint (examples/ack_endpoint.rs) under cachegrind, and a run of 1,000
# rows is subtracted, which leaves the cost per row without the start
# (connections, PostgreSQL's SCRAM). Prints instructions per row by part.
# User space only: the kernel's share (socket reads and writes, page faults,
# context switches) is not counted here; /usr/bin/time and perf give that.
# A copy counts about one instruction per byte (valgrind counts each step of
# `rep movsb`), so the `copies` row reads as bytes copied per row.
#   ROWS (default 100000)
#   BINS (default target/release/shiftload): binaries to count side by side,
#        e.g. a copy of an earlier build, to compare two revisions
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${ROWS:-100000}
BINS=${BINS:-target/release/shiftload}
# shellcheck source=scripts/bench-common.sh
. scripts/bench-common.sh
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null
reference_table ref_1000000 1000000
cargo build --release --quiet
work=$(mktemp -d)
trap 'ack_stop; rm -rf "$work"' EXIT
ack_start 27092 c
count() { # BIN ROWS OUT
  cat >"$work/job.toml" <<JOB
[source]
url = "$SHIFTLOAD_PG_URL"
query = "SELECT * FROM ref_1000000 WHERE order_id <= $2"
[target]
uri = "$ACK_URI"
database = "bench_instructions"
collection = "c"
[mapping]
id = ["order_id"]
decimal = "string"
JOB
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$3" \
    "$1" run --no-progress --restart --memory-limit 256MiB "$work/job.toml" >"$work/out" 2>&1 \
    || { cat "$work/out" >&2; exit 1; }
  grep -q "transfer complete" "$work/out" || { cat "$work/out" >&2; exit 1; }
}
i=0
for bin in $BINS; do
  count "$bin" 1000 "$work/small.$i"
  count "$bin" "$ROWS" "$work/large.$i"
  i=$((i + 1))
done
python3 - "$work" "$ROWS" $BINS <<'PY'
import collections, sys
work, rows, bins = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
# By the function the instructions are in (inlined code counts in its
# caller); the first part that matches takes it.
PARTS = [
    ("copies (memmove)", ("__mem",)),
    ("allocator", ("mi_", "_mi_", "__rust_alloc", "__rust_dealloc", "__rust_realloc", "__rustc::__rust")),
    ("reader", ("shiftload::source", "arrow_array::builder", "arrow_buffer::builder")),
    ("send: request, reply", ("shiftload::sink", "put_index_key")),
    ("encoder", ("shiftload::encode",)),
    ("send: driver", ("mongodb::", "bson::", "serde")),
    ("runtime (tokio, rayon)", ("tokio::", "rayon", "crossbeam", "parking_lot", "std::sys", "futures")),
]
def per_function(path):
    counts, fn = collections.Counter(), None
    for line in open(path):
        if line.startswith("fn="):
            fn = line[3:].strip()
        elif line[:1].isdigit() and fn is not None:
            counts[fn] += int(line.split()[1])
    return counts
def part(fn):
    for name, prefixes in PARTS:
        if any(fn.startswith(p) or ("::" in p and p in fn) for p in prefixes):
            return name
    return "other"
columns = []
for i, _ in enumerate(bins):
    large, small = per_function(f"{work}/large.{i}"), per_function(f"{work}/small.{i}")
    by_part = collections.Counter()
    for fn in large.keys() | small.keys():
        by_part[part(fn)] += large[fn] - small[fn]
    columns.append({k: v / (rows - 1000) for k, v in by_part.items()})
names = ["reader", "encoder", "send: request, reply", "send: driver", "copies (memmove)",
         "allocator", "runtime (tokio, rayon)", "other"]
print(f"instructions per row, {rows} rows of ref_1000000 through the ack endpoint (user space)")
print(f"{'part':24}" + "".join(f"{b[-28:]:>30}" for b in bins))
for n in names + ["total"]:
    vals = [sum(c.values()) if n == "total" else c.get(n, 0) for c in columns]
    print(f"{n:24}" + "".join(f"{v:30.0f}" for v in vals))
PY
python3 -c "import pymongo,sys; pymongo.MongoClient(sys.argv[1]).drop_database('bench_instructions')" "$MONGODB_URI"
