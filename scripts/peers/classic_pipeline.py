"""Peer for scripts/bench-memory.sh: the classic Python pipeline shiftload
replaces — pandas.read_sql with a chunksize over psycopg2, each chunk turned
into dicts and written with pymongo's insert_many (unordered). The value
conversions are the ones such scripts need for MongoDB to accept the rows
(Decimal → str, date → datetime, NaN/NaT → None)."""
import datetime
import decimal
import sys
import time

import pandas as pd
import psycopg2
import pymongo

url, query, mongo_uri, db, coll, chunksize = sys.argv[1:7]


def convert(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if type(v) is datetime.date:
        return datetime.datetime(v.year, v.month, v.day)
    return v


start = time.perf_counter()
conn = psycopg2.connect(url)
target = pymongo.MongoClient(mongo_uri)[db][coll]
rows = 0
for df in pd.read_sql(query, conn, chunksize=int(chunksize)):
    df = df.astype(object).where(df.notna(), None)
    records = [{k: convert(v) for k, v in r.items()} for r in df.to_dict("records")]
    target.insert_many(records, ordered=False)
    rows += len(records)
secs = time.perf_counter() - start
print(f"classic pipeline: {rows} rows, {secs:.2f} s, {rows / secs:.0f} rows/s")
