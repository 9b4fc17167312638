"""The Databricks way, as a peer in `make bench`: PySpark + delta-spark on local[2], the same SCD2
on the same OneRoster users JSON — flatten the students, check the fødselsnummer (mod 11), hash
the row, and one `MERGE INTO` that closes changed and vanished current rows and inserts the new
versions (the merge-key pattern from the Delta Lake documentation).

usage: baseline_spark.py <users.json> <table path> <as-of yyyy-mm-dd>
Needs DELTA_JARS (the delta-spark jars `make interop` resolves) and pyspark.
"""
import glob
import os
import sys

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

users_file, table, as_of = sys.argv[1], sys.argv[2], sys.argv[3]
jars = ",".join(sorted(glob.glob(os.path.join(os.environ["DELTA_JARS"], "*.jar"))))
spark = (SparkSession.builder.master("local[2]").appName("elevflyt-bench")
         .config("spark.jars", jars)
         .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
         .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
         .config("spark.driver.memory", "8g")
         .config("spark.sql.shuffle.partitions", "4")
         .config("spark.ui.enabled", "false")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")

raw = spark.read.option("multiLine", True).json(users_file)
u = raw.select(F.explode("users").alias("u")).select("u.*")
fnr_col = F.coalesce(*[F.col(c) for c in ("identifier", "identfier") if c in u.columns])
df = u.select(
    F.col("sourcedId").alias("id"),
    fnr_col.alias("fodselsnummer"),
    F.col("givenName").alias("fornavn"),
    F.col("familyName").alias("etternavn"),
    F.col("orgs")[0]["sourcedId"].alias("skole"),
)
d = [F.substring("fodselsnummer", i + 1, 1).cast("int") for i in range(11)]
w1 = [3, 7, 6, 1, 8, 9, 4, 5, 2, 1]
w2 = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2, 1]
k1 = sum(x * w for x, w in zip(d, w1)) % 11 == 0
k2 = sum(x * w for x, w in zip(d, w2)) % 11 == 0
ts = F.to_timestamp(F.lit(f"{as_of} 00:00:00"))
df = (df.where((F.length("fodselsnummer") == 11) & k1 & k2)
        .withColumn("rad_hash", F.sha2(F.concat_ws("|", "fodselsnummer", "fornavn", "etternavn", "skole"), 256))
        .withColumn("valid_from", ts)
        .withColumn("valid_to", F.lit(None).cast("timestamp"))
        .withColumn("is_current", F.lit(True)))

if not os.path.exists(os.path.join(table, "_delta_log")):
    df.write.format("delta").save(table)
else:
    df.createOrReplaceTempView("s")
    spark.sql(f"CREATE OR REPLACE TEMPORARY VIEW t AS SELECT * FROM delta.`{table}` WHERE is_current")
    spark.sql(f"""
        MERGE INTO delta.`{table}` AS t
        USING (
            SELECT s.id AS merge_key, s.* FROM s
            UNION ALL
            SELECT NULL AS merge_key, s.* FROM s JOIN t ON s.id = t.id WHERE t.rad_hash <> s.rad_hash
        ) AS u
        ON t.id = u.merge_key AND t.is_current
        WHEN MATCHED AND t.rad_hash <> u.rad_hash THEN
            UPDATE SET is_current = false, valid_to = u.valid_from
        WHEN NOT MATCHED THEN
            INSERT (id, fodselsnummer, fornavn, etternavn, skole, rad_hash, valid_from, valid_to, is_current)
            VALUES (u.id, u.fodselsnummer, u.fornavn, u.etternavn, u.skole, u.rad_hash, u.valid_from, NULL, true)
        WHEN NOT MATCHED BY SOURCE AND t.is_current THEN
            UPDATE SET is_current = false, valid_to = timestamp'{as_of} 00:00:00'
    """)
spark.stop()
