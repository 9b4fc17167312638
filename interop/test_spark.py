"""Apache Spark with Delta (delta-spark, the reference implementation Databricks runs) reads every
table elevflyt writes: current rows, versionAsOf, DESCRIBE HISTORY, the Change Data Feed and the
column comments — and sees what elevflyt itself returns.

Run by `make interop`: $ELEVFLYT_BIN is the binary, $DELTA_JARS the folder with the delta-spark
jars that Maven resolved from interop/pom.xml.
"""
import glob
import json
import os
import pathlib
import subprocess

import pytest
from pyspark.sql import SparkSession

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = os.environ.get("ELEVFLYT_BIN", str(REPO / "target" / "debug" / "elevflyt"))
JARS = os.environ.get("DELTA_JARS", str(REPO / "interop" / "target" / "jars"))
TABLES = ["elev", "elevforhold", "skole", "elev_id", "avvik", "kvalitet", "kjoring", "elevliste_vgs"]


@pytest.fixture(scope="session")
def lake(tmp_path_factory):
    """Bergen in two runs (a snapshot each, so history has updates) and Voss in one."""
    tmp = tmp_path_factory.mktemp("interop")
    body = (REPO / "pipelines" / "bergen.toml").read_text()
    body = body.replace('"../sample_data', f'"{REPO}/sample_data').replace('"../lakehouse"', f'"{tmp}/lake"')
    bergen = tmp / "bergen.toml"
    for include in ['["*-2026-01-15.json"]', '["*.json"]']:
        bergen.write_text(body.replace('["*.json"]', include))
        subprocess.run([BIN, "run", str(bergen)], check=True, capture_output=True)
    voss = tmp / "voss.toml"
    voss.write_text((REPO / "pipelines" / "voss.toml").read_text()
                    .replace('"../sample_data', f'"{REPO}/sample_data').replace('"../lakehouse"', f'"{tmp}/lake"'))
    subprocess.run([BIN, "run", str(voss)], check=True, capture_output=True)
    return {"bergen_kommune": bergen, "voss_herad": voss}, tmp / "lake"


@pytest.fixture(scope="session")
def spark():
    jars = sorted(glob.glob(os.path.join(JARS, "*.jar")))
    assert jars, f"no delta-spark jars in {JARS} (run `make interop`)"
    s = (SparkSession.builder.master("local[2]").appName("elevflyt-interop")
         .config("spark.jars", ",".join(jars))
         .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
         .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def ours(pipeline, *args):
    out = subprocess.run([BIN, *args[:1], str(pipeline), *args[1:], "--format", "json"],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip() else []


def path(lake, catalog, table):
    return str(lake / catalog / "grunnskole" / table)


@pytest.mark.parametrize("catalog", ["bergen_kommune", "voss_herad"])
def test_raw_tables_and_their_record_numbers(lake, spark, catalog):
    """raw_<source>: its record numbers (`rad`) are stored as the differences between them
    (DELTA_BINARY_PACKED); Spark decodes the numbers elevflyt reads."""
    pipelines, root = lake
    raws = sorted(p.name for p in (root / catalog / "grunnskole").glob("raw_*"))
    assert raws, f"{catalog} has no raw table"
    for table in raws:
        got = (spark.read.format("delta").load(path(root, catalog, table))
               .selectExpr("count(*) AS n", "sum(rad) AS s", "max(rad) AS m").collect()[0])
        expected = ours(pipelines[catalog], "sql", f"SELECT count(*) AS n, sum(rad) AS s, max(rad) AS m FROM {table}")[0]
        print(f"spark {catalog}.{table}: {got.asDict()} (elevflyt: {expected})")
        assert (got["n"], got["s"], got["m"]) == (expected["n"], expected["s"], expected["m"])


@pytest.mark.parametrize("catalog", ["bergen_kommune", "voss_herad"])
def test_every_table_and_its_comments(lake, spark, catalog):
    pipelines, root = lake
    for table in TABLES:
        df = spark.read.format("delta").load(path(root, catalog, table))
        n = df.count()
        expected = ours(pipelines[catalog], "sql", f"SELECT count(*) AS n FROM {table}")[0]["n"]
        print(f"spark {catalog}.{table}: {n} rows (elevflyt: {expected})")
        assert n == expected
        described = spark.sql(f"DESCRIBE TABLE delta.`{path(root, catalog, table)}`").collect()
        comments = {r["col_name"]: r["comment"] for r in described if r["col_name"] and not r["col_name"].startswith("#")}
        missing = [c for c in df.columns if not comments.get(c)]
        assert not missing, f"{table}: Spark shows no comment for {missing}"


@pytest.mark.parametrize("catalog", ["bergen_kommune", "voss_herad"])
def test_current_rows_equal(lake, spark, catalog):
    pipelines, root = lake
    for table, key in [("elev", "id"), ("elevforhold", "id"), ("skole", "skolenummer")]:
        rows = (spark.read.format("delta").load(path(root, catalog, table)).where("is_current")
                .selectExpr(f"{key} AS k", "date_format(valid_from, \"yyyy-MM-dd'T'HH:mm:ss'Z'\") AS f", "rad_hash")
                .collect())
        theirs = sorted((r["k"], r["f"], r["rad_hash"]) for r in rows)
        mine = sorted((r["k"], r["f"], r["rad_hash"]) for r in ours(
            pipelines[catalog], "sql",
            f"SELECT {key} AS k, to_char(valid_from, '%Y-%m-%dT%H:%M:%SZ') AS f, rad_hash FROM {table} WHERE is_current"))
        assert theirs == mine, f"{catalog}.{table}"


def test_version_as_of_and_history(lake, spark):
    pipelines, root = lake
    p = path(root, "bergen_kommune", "elev")
    history = spark.sql(f"DESCRIBE HISTORY delta.`{p}`").orderBy("version").collect()
    mine = sorted(ours(pipelines["bergen_kommune"], "history", "elev"), key=lambda r: r["version"])
    print("spark DESCRIBE HISTORY elev:", [(h["version"], h["operation"]) for h in history])
    assert [(h["version"], h["operation"]) for h in history] == [(m["version"], m["operation"]) for m in mine]
    for v in range(len(history)):
        n = spark.read.format("delta").option("versionAsOf", v).load(p).count()
        expected = ours(pipelines["bergen_kommune"], "sql", "SELECT count(*) AS n FROM elev", "--version", str(v))
        expected = expected[0]["n"] if expected else 0
        print(f"spark elev versionAsOf {v}: {n} rows (elevflyt: {expected})")
        assert n == expected


def test_change_data_feed(lake, spark):
    pipelines, root = lake
    seen = {}
    for table in ["elev", "elevforhold", "skole"]:
        rows = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0)
                .load(path(root, "bergen_kommune", table))
                .select("_change_type", "_commit_version", "valid_from", "valid_to").collect())
        theirs = sorted((r["_change_type"], r["_commit_version"]) for r in rows)
        mine = sorted((r["_change_type"], r["_commit_version"])
                      for r in ours(pipelines["bergen_kommune"], "changes", table, "--from", "0"))
        kinds = sorted(set(k for k, _ in theirs))
        print(f"spark CDF bergen_kommune.{table}: {len(theirs)} changes {kinds}")
        assert theirs == mine
        seen[table] = kinds
    assert seen["elev"] == ["insert", "update_postimage", "update_preimage"]


def test_county_list_change_data_feed(lake, spark):
    """elevliste_vgs is written as a change: Spark's Change Data Feed of the second delivery holds
    exactly the pupils whose row changed (the same as `elevflyt changes`), not the whole list."""
    pipelines, root = lake
    rows = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 2)
            .load(path(root, "bergen_kommune", "elevliste_vgs"))
            .select("_change_type", "_commit_version", "fylkesnummer", "skolenummer", "klasse").collect())
    theirs = sorted((r["_change_type"], r["_commit_version"], r["fylkesnummer"], r["skolenummer"]) for r in rows)
    mine = sorted((r["_change_type"], r["_commit_version"], r["fylkesnummer"], r["skolenummer"])
                  for r in ours(pipelines["bergen_kommune"], "changes", "elevliste_vgs", "--from", "2"))
    print(f"spark CDF bergen_kommune.elevliste_vgs from version 2: {theirs}")
    assert theirs == mine
    # The second Bergen delivery: a new pupil, a changed name, a D-number replaced.
    assert sorted(k for k, *_ in theirs) == ["delete", "delete", "insert", "insert", "insert"]
