#!/usr/bin/env python3
"""Read a shiftload export with pyarrow, an independent Parquet reader, and
compare it value for value with rows dumped from PostgreSQL.

usage: check-export.py EXPORT_DIR EXPECTED_JSON

EXPECTED_JSON is a list of rows (id, amount, at_us, day, note, raw, doc as
text). The parts read are the manifest's entries; the manifest's counts
must equal the parts' rows. Prints "N rows equal" or exits 1 naming the
first difference."""
import json
import sys
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq


def fail(msg):
    print(msg)
    sys.exit(1)


def main(export_dir, expected_path):
    manifest = json.load(open(f"{export_dir}/manifest"))
    tables = []
    for entry in manifest["entries"]:
        path = entry["url"].removeprefix("file://")
        t = pq.read_table(path)
        if t.num_rows != entry["meta"]["record_count"]:
            fail(f"{path}: {t.num_rows} rows, the manifest says {entry['meta']['record_count']}")
        tables.append(t)
    table = pa.concat_tables(tables)
    if table.num_rows != manifest["meta"]["record_count"]:
        fail(f"{table.num_rows} rows, the manifest says {manifest['meta']['record_count']}")
    schema = table.schema
    want_types = {
        "id": pa.int32(),
        "amount": pa.decimal128(12, 2),
        "at": pa.timestamp("us", tz="UTC"),
        "day": pa.date32(),
        "note": pa.string(),
        "raw": pa.binary(),
        "doc": pa.string(),
    }
    for name, t in want_types.items():
        if schema.field(name).type != t:
            fail(f"column {name}: {schema.field(name).type}, expected {t}")
    table = table.sort_by("id")
    at_us = table.column("at").cast(pa.int64()).to_pylist()
    got = table.to_pylist()
    expected = json.load(open(expected_path))
    if len(got) != len(expected):
        fail(f"{len(got)} rows read, {len(expected)} expected")
    for row, us, want in zip(got, at_us, expected):
        have = {
            "id": str(row["id"]),
            "amount": None if row["amount"] is None else str(row["amount"]),
            "at_us": str(us),
            "day": row["day"].isoformat(),
            "note": row["note"],
            "raw": None if row["raw"] is None else row["raw"].hex(),
            "doc": row["doc"],
        }
        for key in have:
            w, h = want[key], have[key]
            if key == "doc":
                w, h = json.loads(w), json.loads(h)
            if key == "amount" and w is not None:
                w, h = Decimal(w), Decimal(h)
                if str(w) != str(h):
                    fail(f"id {row['id']}: amount {h}, expected {w} (scale differs)")
            if w != h:
                fail(f"id {row['id']}: {key} = {h!r}, expected {w!r}")
    print(f"{len(got)} rows equal")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
