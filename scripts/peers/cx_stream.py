"""Peer for scripts/bench-source.sh: ConnectorX's Arrow stream over the same
query, batches dropped as they arrive (like `shiftload bench --stage source`)."""
import sys
import time

import connectorx as cx

url, query, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
protocol = sys.argv[4] if len(sys.argv) > 4 else "binary"
start = time.perf_counter()
reader = cx.read_sql(url, query, return_type="arrow_stream", protocol=protocol, batch_size=batch)
rows = batches = 0
for b in reader:
    rows += b.num_rows
    batches += 1
secs = time.perf_counter() - start
print(f"connectorx ({protocol}): {rows} rows in {batches} batches, {secs:.2f} s, {rows / secs:.0f} rows/s")
