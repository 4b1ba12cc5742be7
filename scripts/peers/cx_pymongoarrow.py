"""Peer for scripts/bench-peers.sh: ConnectorX's Arrow stream over the
cursor protocol (the one Redshift allows), each batch written with
PyMongoArrow's `write` (unordered inserts). The key column becomes `_id`, as
shiftload's `mapping.id` makes it; the conversions are the ones MongoDB
needs for these Arrow types (decimal -> string, date -> timestamp)."""
import sys
import time

import connectorx as cx
import pyarrow as pa
import pyarrow.compute as pc
import pymongo
from pymongoarrow.api import write

url, query, mongo_uri, db, coll, batch, key = sys.argv[1:8]


def convert(table):
    cols, names = [], []
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_decimal(col.type):
            col = pc.cast(col, pa.string())
        elif pa.types.is_date(col.type):
            col = pc.cast(col, pa.timestamp("ms"))
        cols.append(col)
        names.append("_id" if name == key else name)
    return pa.Table.from_arrays(cols, names=names)


start = time.perf_counter()
target = pymongo.MongoClient(mongo_uri)[db][coll]
reader = cx.read_sql(url, query, return_type="arrow_stream", protocol="cursor", batch_size=int(batch))
rows = 0
for b in reader:
    if b.num_rows == 0:
        continue
    write(target, convert(pa.Table.from_batches([b])))
    rows += b.num_rows
secs = time.perf_counter() - start
print(f"connectorx+pymongoarrow: {rows} rows, {secs:.2f} s, {rows / secs:.0f} rows/s")
