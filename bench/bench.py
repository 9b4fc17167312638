"""make bench: elevflyt (release) against a straightforward Python polars + deltalake SCD2 on the
same generated data. Times the first full load, a next-day snapshot with 1 % churn and an
unchanged rerun, with peak RSS from the OS (/usr/bin/time). elevflyt runs its main command,
`elevflyt run` (one process: ingest → standardize → publish); the per-stage seconds come from the
run's own summary (`stage_seconds`).

usage: bench.py <elevflyt binary> <python with polars+deltalake> [sizes…]   (default 100000 1000000)
Data is cached in bench/data/<size>; results go to bench/results.json.
"""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
BIN, PY = sys.argv[1], sys.argv[2]
SIZES = [int(s) for s in sys.argv[3:]] or [100_000, 1_000_000]
DAY1, DAY2 = "2026-01-15", "2026-01-16"


def timed(cmd, **kw):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS MB, stdout)."""
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "RSS=%M", *cmd], capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    rss = int(re.findall(r"RSS=(\d+)", out.stderr)[-1]) / 1024
    return wall, rss, out.stdout


def pipeline(dir, include):
    p = dir / "bench.toml"
    p.write_text(f"""[pipeline]
name = "bench"
kommunenummer = "4601"
warehouse = "lake"
catalog = "bench"
schema = "grunnskole"

[[source]]
name = "vigilo"
format = "oneroster-json"
location = "../data"
include = {json.dumps(include)}

[quality]
allow_synthetic_fnr = true
""")
    return p


def elev_version(lake):
    log = lake / "bench" / "grunnskole" / "elev" / "_delta_log"
    return max(int(p.name[:20]) for p in log.glob("*.json"))


results = []
for n in SIZES:
    base = HERE / "data" / str(n)
    data = base / "data"
    if not (data / f"users-{DAY2}.json").exists():
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([BIN, "generate", "--pupils", str(n), "--snapshots", "2", "--churn", "0.01",
                        "--seed", "42", "--out", str(data)], check=True)
    mb = (data / f"users-{DAY1}.json").stat().st_size / 1e6
    work = base / "elevflyt"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    row = {"pupils": n, "users_json_mb": round(mb, 1)}
    for phase, include in [("first load", [f"*-{DAY1}.json"]), ("next day (1 % churn)", ["*.json"]),
                           ("unchanged rerun", ["*.json"])]:
        p = pipeline(work, include)
        before = elev_version(work / "lake") if (work / "lake").exists() else None
        wall, rss, out = timed([BIN, "run", str(p), "--log-level", "warn"], cwd=work)
        summary = json.loads(out)
        stages = {k: summary["stage_seconds"][k] for k in ["ingest", "standardize", "publish"]
                  if k in summary["stage_seconds"]}
        after = elev_version(work / "lake")
        row[phase] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss),
                      "rows_per_second": round(n / wall),
                      "stages": {k: {"seconds": round(v, 2), "rows_per_second": round(n / max(v, 1e-3))}
                                 for k, v in stages.items()},
                      "new_elev_version": before is None or after != before}
    # The Python baseline, same data.
    lake = base / "python" / "elev"
    shutil.rmtree(base / "python", ignore_errors=True)
    for phase, day in [("first load", DAY1), ("next day (1 % churn)", DAY2), ("unchanged rerun", DAY2)]:
        wall, rss, _ = timed([PY, str(HERE / "baseline_polars.py"), str(data / f"users-{day}.json"), str(lake), day])
        row[f"python {phase}"] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss)}
    results.append(row)

    print(f"\n{n:,} pupils ({mb:.0f} MB users JSON)")
    print(f"{'phase':<24}{'elevflyt s':>11}{'peak MB':>9}{'rows/s':>10}{'python s':>10}{'peak MB':>9}{'ratio':>7}   elevflyt per stage (s)")
    for phase in ["first load", "next day (1 % churn)", "unchanged rerun"]:
        e, py = row[phase], row[f"python {phase}"]
        st = " ".join(f"{k}={v['seconds']}" for k, v in e["stages"].items())
        print(f"{phase:<24}{e['seconds']:>11}{e['peak_rss_mb']:>9}{e['rows_per_second']:>10}{py['seconds']:>10}"
              f"{py['peak_rss_mb']:>9}{py['seconds'] / e['seconds']:>7.2f}   {st}"
              + ("" if e["new_elev_version"] or phase != "unchanged rerun" else "  (no new version)"))

(HERE / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
print(f"\nwritten {HERE / 'results.json'}")
