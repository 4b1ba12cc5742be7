#!/usr/bin/env bash
# The encoder's cost in instructions, which a noisy machine does not blur:
# benches/encode_count.rs encodes the reference batch once under cachegrind,
# on the fast path and on the naive path (a bson::Document per row), and a
# run that only builds the batch is subtracted from each; and the fast path
# with the decimal column written as text (mapping.decimal = "string"). Prints
# instructions per row and the naive/fast ratio. Timings stay with
# `cargo bench --bench encode`; this tells whether a change made the
# encoder do less work.
#   BENCH_ROWS (default 100,000)  rows of the reference batch
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROWS=${BENCH_ROWS:-100000}
command -v valgrind >/dev/null || apt-get install -y -qq valgrind >/dev/null

bin=$(cargo bench --bench encode_count --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "encode_count" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "bench: encode_count did not build" >&2; exit 1; }

instructions() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" "$1" "$ROWS" 2>&1 >/dev/null \
    | sed -n 's/.*I *refs: *//p' | tr -d ,
}
none=$(instructions none)
fast=$(( $(instructions fast) - none ))
text=$(( $(instructions text) - none ))
naive=$(( $(instructions naive) - none ))
awk -v rows="$ROWS" -v fast="$fast" -v text="$text" -v naive="$naive" 'BEGIN {
  printf "reference batch, %d rows, one thread\n", rows
  printf "%-8s %14s\n", "path", "instr/row"
  printf "%-8s %14.0f\n", "fast", fast / rows
  printf "%-8s %14.0f  (decimal as text)\n", "text", text / rows
  printf "%-8s %14.0f\n", "naive", naive / rows
  printf "naive/fast: %.1fx\n", naive / fast
}'
