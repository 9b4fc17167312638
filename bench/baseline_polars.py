"""The straightforward alternative: Python polars + deltalake. Reads the OneRoster users JSON,
flattens, validates the fødselsnummer (mod 11), and SCD2-merges into a Delta table with
deltalake's MERGE (close changed current rows, insert new versions, close missing keys).

usage: baseline_polars.py <users.json> <table path> <as-of yyyy-mm-dd>
"""
import json
import sys
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

users_file, table, as_of = sys.argv[1], sys.argv[2], sys.argv[3]
ts = datetime.fromisoformat(as_of).replace(tzinfo=timezone.utc)

with open(users_file, encoding="utf-8") as f:
    users = json.load(f)["users"]
df = pl.DataFrame(
    {
        "id": [u["sourcedId"] for u in users],
        "fodselsnummer": [u.get("identifier") or u.get("identfier") for u in users],
        "fornavn": [u.get("givenName") for u in users],
        "etternavn": [u.get("familyName") for u in users],
        "skole": [u["orgs"][0]["sourcedId"] if u.get("orgs") else None for u in users],
    }
)
w1 = [3, 7, 6, 1, 8, 9, 4, 5, 2, 1]
w2 = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2, 1]
digits = [pl.col("fodselsnummer").str.slice(i, 1).cast(pl.Int32) for i in range(11)]
df = df.with_columns(
    (pl.sum_horizontal([d * w for d, w in zip(digits, w1)]) % 11 == 0).alias("k1"),
    (pl.sum_horizontal([d * w for d, w in zip(digits, w2)]) % 11 == 0).alias("k2"),
).filter(pl.col("k1") & pl.col("k2")).drop("k1", "k2")
df = df.with_columns(
    pl.concat_str(["fodselsnummer", "fornavn", "etternavn", "skole"], separator="|").hash().cast(pl.Utf8).alias("rad_hash"),
    pl.lit(ts).alias("valid_from"),
    pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("valid_to"),
    pl.lit(True).alias("is_current"),
)
try:
    dt = DeltaTable(table)
except Exception:
    write_deltalake(table, df.to_arrow())
    sys.exit(0)

source = df.to_arrow()
# Close current rows that changed or disappeared, then insert new versions of changed/new keys.
(dt.merge(source, "t.id = s.id AND t.is_current", source_alias="s", target_alias="t")
   .when_matched_update(updates={"valid_to": "s.valid_from", "is_current": "false"}, predicate="t.rad_hash <> s.rad_hash")
   .when_not_matched_by_source_update(updates={"valid_to": f"'{ts.isoformat()}'", "is_current": "false"}, predicate="t.is_current")
   .execute())
dt = DeltaTable(table)
current = pl.from_arrow(dt.to_pyarrow_table(filters=[("is_current", "=", True)], columns=["id", "rad_hash"]))
new = df.join(current, on=["id", "rad_hash"], how="anti")
if new.height:
    write_deltalake(table, new.to_arrow(), mode="append")
