#!/usr/bin/env python3
"""Runs elevflyt on the sample pipelines and prints a fingerprint of every table's contents, for
comparing two builds (a refactor must not change what is written):

    scripts/table_fingerprint.py BIN_BEFORE > before.txt
    scripts/table_fingerprint.py BIN_AFTER > after.txt
    diff before.txt after.txt

The exports arrive one date at a time: Bergen in order (a first load appends, the second day
closes versions with the streamed rewrite and resolves deviations), then an unchanged rerun and
the last export again under a later date; Voss newest first, so its older list arrives late and
its history is rebuilt with a MERGE. Every commit strategy is exercised. Tables are read with the Python deltalake reader (not with
elevflyt), every version of every table. What differs from run to run by nature is left out:
run ids, wall-clock times (`transaction_time`, `lastet`, `oppdaga`, `malt`, ...), and metrics
that depend on the time of the run (`ferskleik_dagar`). `lost`/`lost_av` become "resolved or not".
Needs the reader venv (`make venv`): deltalake and polars.
"""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import polars as pl
from deltalake import DeltaTable

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
VOLATILE = {
    "run_id", "transaction_time", "lastet", "lastet_tid", "oppdaga", "malt", "started",
    "finished", "publisert", "elevflyt_version", "delta_versions",
}
RESOLVED = {"lost", "lost_av"}


def run(binary, *args):
    out = subprocess.run([binary, *args], capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out.returncode


def date_of(name):
    """The date in an export's name: 2026-01-15 or 20261101."""
    m = re.search(r"(\d{4})-?(\d{2})-?(\d{2})", name)
    return "".join(m.groups()) if m else ""


def table_dirs(lake):
    for dirpath, dirnames, _ in os.walk(lake):
        if "_delta_log" in dirnames:
            yield os.path.relpath(dirpath, lake), dirpath
            dirnames[:] = []


def fingerprint(path):
    """One line per version: its row count and a hash of its rows, sorted."""
    dt = DeltaTable(path)
    lines = []
    for v in range(dt.version() + 1):
        dt.load_as_version(v)
        df = pl.from_arrow(dt.to_pyarrow_table())
        drop = [c for c in df.columns if c in VOLATILE]
        df = df.drop(drop)
        for c in RESOLVED & set(df.columns):
            df = df.with_columns(pl.col(c).is_not_null().alias(c))
        if "entitet" in df.columns:
            # A file's marker record holds its size and modification time (of this copy).
            df = df.with_columns(
                pl.when(pl.col("entitet") == "_fil").then(pl.lit("")).otherwise(pl.col("post")).alias("post")
            )
        if "regel_eller_metrikk" in df.columns:
            df = df.filter(pl.col("regel_eller_metrikk") != "ferskleik_dagar")
        rows = sorted(
            "\x1f".join("" if v is None else str(v) for v in row)
            for row in df.select(sorted(df.columns)).iter_rows()
        )
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]
        lines.append(f"v{v}: {len(rows)} rows {digest} cols={','.join(sorted(df.columns))}")
    return lines


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("pipelines", "sample_data"):
            shutil.copytree(os.path.join(ROOT, d), os.path.join(tmp, d))
        lake = os.path.join(tmp, "lakehouse")
        codes = []
        for pipeline, folder, newest_first in (
            ("bergen", "sample_data/bergen/vigilo", False),
            ("voss", "sample_data/voss/vigo", True),
        ):
            src = os.path.join(tmp, folder)
            held = src + ".all"
            os.rename(src, held)
            os.mkdir(src)
            dates = sorted({date_of(f) for f in os.listdir(held)}, reverse=newest_first)
            toml = os.path.join(tmp, "pipelines", pipeline + ".toml")
            for i, d in enumerate(dates):
                # Newest first: the newest list of each school, then the older ones late.
                for f in sorted(os.listdir(held)):
                    if date_of(f) == d:
                        shutil.copy(os.path.join(held, f), src)
                codes.append(run(binary, "run", toml))
            codes.append(run(binary, "run", toml))
        # The last Bergen export again under a later date: every pupil still there.
        src = os.path.join(tmp, "sample_data", "bergen", "vigilo")
        for f in sorted(os.listdir(src)):
            if "2026-02-05" in f:
                shutil.copy(os.path.join(src, f), os.path.join(src, f.replace("2026-02-05", "2026-03-01")))
        codes.append(run(binary, "run", os.path.join(tmp, "pipelines/bergen.toml")))
        print("exit codes:", codes)
        for name, path in sorted(table_dirs(lake)):
            print(f"== {name}")
            for line in fingerprint(path):
                print(line)


if __name__ == "__main__":
    main()
