"""The tables elevflyt writes, read by independent readers: Python deltalake, polars and DuckDB
(delta extension loaded by file path from the duckdb-extension-delta package).

Runs the elevflyt binary ($ELEVFLYT_BIN) on both sample pipelines into a temporary warehouse.
"""
import glob
import json
import os
import pathlib
import subprocess

import duckdb
import duckdb_extension_delta
import polars as pl
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("ELEVFLYT_BIN", str(REPO / "target" / "debug" / "elevflyt"))


@pytest.fixture(scope="session")
def lake(tmp_path_factory):
    w = tmp_path_factory.mktemp("lake")
    for p in ["bergen.toml", "voss.toml"]:
        subprocess.run([BIN, "run", str(REPO / "pipelines" / p), "--warehouse", str(w)],
                       check=True, capture_output=True)
    return w


def tables(lake, catalog):
    return lambda name: str(lake / catalog / "grunnskole" / name)


def elevflyt_sql(pipeline, lake, query):
    out = subprocess.run([BIN, "sql", str(REPO / "pipelines" / pipeline), query, "--format", "json",
                          "--warehouse", str(lake)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("catalog,pipeline", [("bergen_kommune", "bergen.toml"), ("voss_herad", "voss.toml")])
def test_deltalake_reads_rows_comments_history_and_properties(lake, catalog, pipeline):
    t = tables(lake, catalog)
    for name in ["elev", "elevforhold", "skole", "avvik", "kvalitet", "kjoring", "elevliste_vgs"]:
        dt = DeltaTable(t(name))
        fields = dt.schema().fields
        missing = [f.name for f in fields if not f.metadata.get("comment")]
        assert not missing, f"{name}: columns without comment: {missing}"
        assert dt.metadata().description, f"{name} has no description"
        n = dt.to_pyarrow_table().num_rows
        print(f"deltalake {catalog}.{name}: {n} rows, version {dt.version()}")
    elev = DeltaTable(t("elev"))
    assert elev.metadata().configuration.get("delta.enableChangeDataFeed") == "true"
    comment = {f.name: f.metadata["comment"] for f in elev.schema().fields}
    assert comment["id"] == "Stabil global elev-ID, tåler endring i fødselsnummer"
    history = elev.history()
    assert any("elevflyt_run_id" in h for h in history), history[0]
    current = elev.to_pyarrow_table(filters=[("is_current", "=", True)]).num_rows
    expected = elevflyt_sql(pipeline, lake, "SELECT count(*) AS n FROM elev WHERE is_current")[0]["n"]
    assert current == expected


def test_polars_reads_the_same_history(lake):
    t = tables(lake, "bergen_kommune")
    elev = pl.read_delta(t("elev"))
    assert elev.schema["valid_from"] == pl.Datetime("us", "UTC")
    assert elev.schema["fodselsdato"] == pl.Date
    story = (elev.filter(pl.col("system_id").is_in(["V-NAMN", "V-DNR", "V-SLUTTA", "V-NY", "V-FLYTTA"]))
             .sort("system_id", "valid_from")
             .select("system_id", "valid_from", "valid_to", "is_current"))
    print(story)
    assert story.height == 7
    assert story.filter(pl.col("system_id") == "V-DNR").select(pl.col("valid_to").is_null()).to_series().to_list() == [False, True]
    assert elev.filter(pl.col("is_current")).group_by("id").len().filter(pl.col("len") > 1).height == 0
    per_class = (pl.read_delta(t("elevforhold")).filter(pl.col("is_current"))
                 .group_by("skolenummer", "klasse").len().sort("skolenummer", "klasse"))
    print(per_class)
    ours = elevflyt_sql("bergen.toml", lake,
                        "SELECT skolenummer, klasse, count(*) AS len FROM elevforhold WHERE is_current GROUP BY 1, 2 ORDER BY 1, 2")
    assert per_class.to_dicts() == ours
    vgs = pl.read_delta(t("elevliste_vgs"))
    assert vgs.height == pl.read_delta(t("elevforhold")).filter(pl.col("is_current") & (pl.col("trinn") == 10)).height


def duck():
    con = duckdb.connect()
    ext = glob.glob(os.path.join(os.path.dirname(duckdb_extension_delta.__file__), "extensions", "*", "delta.duckdb_extension"))
    assert ext, "duckdb-extension-delta ships no extension binary"
    con.execute(f"LOAD '{ext[0]}'")
    return con


@pytest.mark.parametrize("catalog,pipeline", [("bergen_kommune", "bergen.toml"), ("voss_herad", "voss.toml")])
def test_raw_tables_and_their_record_numbers_read_alike(lake, catalog, pipeline):
    """raw_<source>, the records as delivered: its record numbers (`rad`) are stored as the
    differences between them (DELTA_BINARY_PACKED); every reader decodes the numbers elevflyt
    reads."""
    raws = sorted(p.name for p in (lake / catalog / "grunnskole").glob("raw_*"))
    assert raws, f"{catalog} has no raw table"
    con = duck()
    for name in raws:
        path = tables(lake, catalog)(name)
        expected = elevflyt_sql(pipeline, lake, f"SELECT count(*) AS n, sum(rad) AS s, max(rad) AS m FROM {name}")[0]
        expected = (expected["n"], expected["s"], expected["m"])
        rad = DeltaTable(path).to_pyarrow_table(columns=["rad"]).column("rad").to_pylist()
        read = {
            "deltalake": (len(rad), sum(rad), max(rad)),
            "polars": tuple(pl.read_delta(path).select(pl.len(), pl.col("rad").sum().alias("s"), pl.col("rad").max().alias("m")).row(0)),
            "duckdb": con.execute(f"SELECT count(*), sum(rad), max(rad) FROM delta_scan('{path}')").fetchone(),
        }
        print(f"{catalog}.{name}: elevflyt {expected}, {read}")
        for f in DeltaTable(path).file_uris():
            meta = pq.ParquetFile(f).metadata
            for g in range(meta.num_row_groups):
                rg = meta.row_group(g)
                rad = next(rg.column(c) for c in range(rg.num_columns) if rg.column(c).path_in_schema == "rad")
                assert "DELTA_BINARY_PACKED" in rad.encodings, (f, rad.encodings)
        for reader, got in read.items():
            assert tuple(got) == expected, f"{reader} reads {name} as {got}, elevflyt {expected}"


def test_duckdb_reads_tables_and_comments(lake):
    con = duck()
    for catalog, pipeline in [("bergen_kommune", "bergen.toml"), ("voss_herad", "voss.toml")]:
        t = tables(lake, catalog)
        n = con.execute(f"SELECT count(*) FROM delta_scan('{t('elev')}') WHERE is_current").fetchone()[0]
        ours = elevflyt_sql(pipeline, lake, "SELECT count(*) AS n FROM elev WHERE is_current")[0]["n"]
        print(f"duckdb {catalog}.elev current rows: {n} (elevflyt: {ours})")
        assert n == ours
        rows = con.execute(f"SELECT skolenummer, klasse, count(*) FROM delta_scan('{t('elevliste_vgs')}') GROUP BY ALL ORDER BY ALL").fetchall()
        print(f"duckdb {catalog}.elevliste_vgs per class: {rows}")
        assert sum(r[2] for r in rows) == elevflyt_sql(pipeline, lake, "SELECT count(*) AS n FROM elevliste_vgs")[0]["n"]
        # Column comments as DuckDB sees them in the Delta log's schema.
        log = con.execute(f"""
            SELECT metaData.schemaString FROM read_json_auto('{t('elev')}/_delta_log/00000000000000000000.json', format='newline_delimited')
            WHERE metaData IS NOT NULL""").fetchone()[0]
        comments = {f["name"]: f["metadata"].get("comment") for f in json.loads(log)["fields"]}
        assert comments["fodselsnummer"] == "Fødselsnummer (PII krev maskering ved bruk)"
        assert all(comments.values())
    # Timestamps and dates keep their types.
    t = tables(lake, "bergen_kommune")
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM delta_scan('{t('elev')}'))").fetchall())
    assert types["valid_from"].startswith("TIMESTAMP") and types["fodselsdato"] == "DATE"


def test_deltalake_reads_the_change_data_feed_elevflyt_prints(tmp_path):
    """Bergen loaded in two runs (one snapshot each): the Change Data Feed of the SCD2 tables, read
    by Python deltalake, equals `elevflyt changes`, updates included."""
    body = (REPO / "pipelines" / "bergen.toml").read_text()
    body = body.replace('"../sample_data', f'"{REPO}/sample_data').replace('"../lakehouse"', f'"{tmp_path}/lake"')
    pipeline = tmp_path / "bergen.toml"
    for include in ['["*-2026-01-15.json"]', '["*.json"]']:
        pipeline.write_text(body.replace('["*.json"]', include))
        subprocess.run([BIN, "run", str(pipeline)], check=True, capture_output=True)
    for table in ["elev", "elevforhold"]:
        path = str(tmp_path / "lake" / "bergen_kommune" / "grunnskole" / table)
        cdf = DeltaTable(path).load_cdf(starting_version=0).read_all()
        theirs = sorted(zip(cdf.column("id").to_pylist(), cdf.column("_change_type").to_pylist(),
                            cdf.column("_commit_version").to_pylist()))
        out = subprocess.run([BIN, "changes", str(pipeline), table, "--from", "0", "--format", "json"],
                             check=True, capture_output=True, text=True)
        ours = sorted((r["id"], r["_change_type"], r["_commit_version"]) for r in json.loads(out.stdout))
        kinds = sorted(set(t for _, t, _ in theirs))
        print(f"deltalake CDF bergen_kommune.{table}: {len(theirs)} changes ({', '.join(kinds)})")
        assert theirs == ours
        assert kinds == ["insert", "update_postimage", "update_preimage"]


def test_elev_id_is_readable(lake):
    ids = pl.read_delta(tables(lake, "bergen_kommune")("elev_id"))
    elev = pl.read_delta(tables(lake, "bergen_kommune")("elev"))
    assert set(ids["id"].to_list()) == set(elev["id"].to_list())
    # The D-number pupil: one id, two numbers.
    dnr = ids.filter(pl.col("system_id") == "V-DNR")
    assert dnr.height == 2 and dnr["id"].n_unique() == 1
