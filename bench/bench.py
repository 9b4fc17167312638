"""make bench: elevflyt (release) beside two peers on the same generated data — a straightforward
Python polars + deltalake SCD2 (baseline_polars.py) and the Databricks way, PySpark + delta-spark
with MERGE INTO on local[2] (baseline_spark.py) — and elevflyt's cost curves.

Per size: the first full load, a next day with 1 % churn and an unchanged rerun, wall time and
peak RSS of the whole process tree (sampled from /proc, so Spark's JVM counts). elevflyt runs its
main command, `elevflyt run` (ingest → standardize → publish in one process); the per-stage
seconds come from the run's own summary. The cost curves add the next day at each churn of
BENCH_CHURNS, each from a copy of the warehouse after the first load. At 1M pupils it ends with the
performance targets (issue 18), each with its figure and by how much it is met or missed.

usage: bench.py <elevflyt binary> <python with polars+deltalake> [sizes…]   (default 100000 1000000)
environment: BENCH_CHURNS (default "0.001 0.01 0.1"), PY_MAX (largest size for the polars peer,
default 1000000), SPARK_PY (python with pyspark; no Spark peer without it), DELTA_JARS,
SPARK_MAX (largest size for the Spark peer, default 1000000), TARGETS_AT (the size whose
targets are judged, default 1000000).
Data is cached in bench/data/<size>/c<churn>; results go to bench/results.json.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
BIN, PY = sys.argv[1], sys.argv[2]
SIZES = [int(s) for s in sys.argv[3:]] or [100_000, 1_000_000]
CHURNS = [float(c) for c in os.environ.get("BENCH_CHURNS", "0.001 0.01 0.1").split()]
PY_MAX = int(os.environ.get("PY_MAX", 1_000_000))
SPARK_PY = os.environ.get("SPARK_PY")
SPARK_MAX = int(os.environ.get("SPARK_MAX", 1_000_000))
TARGETS_AT = int(os.environ.get("TARGETS_AT", 1_000_000))
DAY1, DAY2 = "2026-01-15", "2026-01-16"
MAIN_CHURN = 0.01


def tree_rss_kb(pid):
    """RSS of a process and all its descendants, in KiB (0 once it is gone)."""
    children = {}
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(p.name))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        todo.extend(children.get(q, []))
        try:
            for line in pathlib.Path(f"/proc/{q}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def timed(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS MB of its process tree, stdout)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss_kb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return wall, peak[0] / 1024, out


def pipeline(dir, location, include):
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
location = "{location}"
include = {json.dumps(include)}

[quality]
allow_synthetic_fnr = true
""")
    return p


def elev_version(lake):
    log = lake / "bench" / "grunnskole" / "elev" / "_delta_log"
    return max(int(p.name[:20]) for p in log.glob("*.json"))


def data_for(n, churn):
    """The two days at this size and churn; the first day is the same bytes at every churn (same
    seed), linked to the main churn's files so a warehouse loaded from one knows them all."""
    main = HERE / "data" / str(n) / f"c{MAIN_CHURN}"
    d = HERE / "data" / str(n) / f"c{churn}"
    if not (d / f"users-{DAY2}.json").exists():
        shutil.rmtree(d, ignore_errors=True)
        subprocess.run([BIN, "generate", "--pupils", str(n), "--snapshots", "2", "--churn", str(churn),
                        "--seed", "42", "--out", str(d)], check=True, capture_output=True)
        if churn != MAIN_CHURN:
            data_for(n, MAIN_CHURN)
            for f in main.glob(f"*-{DAY1}.json"):
                (d / f.name).unlink()
                (d / f.name).symlink_to(f)
    return d


def elevflyt_run(work, location, include):
    p = pipeline(work, location, include)
    before = elev_version(work / "lake") if (work / "lake").exists() else None
    wall, rss, out = timed([BIN, "run", str(p), "--log-level", "warn"], cwd=work)
    summary = json.loads(out)
    stages = {k: round(summary["stage_seconds"][k], 2) for k in ["ingest", "standardize", "publish"]
              if k in summary["stage_seconds"]}
    return {"seconds": round(wall, 2), "peak_rss_mb": round(rss), "stages": stages,
            "new_elev_version": before is None or elev_version(work / "lake") != before}


results = []
for n in SIZES:
    base = HERE / "data" / str(n)
    data = data_for(n, MAIN_CHURN)
    mb = (data / f"users-{DAY1}.json").stat().st_size / 1e6
    row = {"pupils": n, "users_json_mb": round(mb, 1), "elevflyt": {}, "python": {}, "spark": {}, "curve": {}}

    # elevflyt: first load, next day at 1 %, unchanged rerun; then the other churns from a copy.
    work = base / "elevflyt"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    row["elevflyt"]["first load"] = elevflyt_run(work, data, [f"*-{DAY1}.json"])
    shutil.rmtree(base / "after-first-load", ignore_errors=True)
    shutil.copytree(work / "lake", base / "after-first-load", symlinks=True)
    row["elevflyt"]["next day (1 % churn)"] = elevflyt_run(work, data, ["*.json"])
    row["elevflyt"]["unchanged rerun"] = elevflyt_run(work, data, ["*.json"])
    for churn in CHURNS:
        if churn == MAIN_CHURN:
            row["curve"][churn] = row["elevflyt"]["next day (1 % churn)"]
            continue
        d = data_for(n, churn)
        shutil.rmtree(work / "lake")
        shutil.copytree(base / "after-first-load", work / "lake", symlinks=True)
        row["curve"][churn] = elevflyt_run(work, d, ["*.json"])
    shutil.rmtree(base / "after-first-load", ignore_errors=True)

    # The polars + deltalake peer.
    if n <= PY_MAX:
        lake = base / "python" / "elev"
        shutil.rmtree(base / "python", ignore_errors=True)
        for phase, day in [("first load", DAY1), ("next day (1 % churn)", DAY2), ("unchanged rerun", DAY2)]:
            wall, rss, _ = timed([PY, str(HERE / "baseline_polars.py"), str(data / f"users-{day}.json"), str(lake), day])
            row["python"][phase] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss)}

    # The PySpark + delta-spark peer (MERGE INTO), where it is installed.
    if SPARK_PY and n <= SPARK_MAX:
        lake = base / "spark" / "elev"
        shutil.rmtree(base / "spark", ignore_errors=True)
        for phase, day in [("first load", DAY1), ("next day (1 % churn)", DAY2), ("unchanged rerun", DAY2)]:
            wall, rss, _ = timed([SPARK_PY, str(HERE / "baseline_spark.py"), str(data / f"users-{day}.json"),
                                  str(lake), day])
            row["spark"][phase] = {"seconds": round(wall, 2), "peak_rss_mb": round(rss)}
    results.append(row)

    print(f"\n{n:,} pupils ({mb:.0f} MB users JSON)")
    print(f"{'phase':<22}{'elevflyt s':>11}{'MB':>7}{'polars s':>10}{'MB':>7}{'spark s':>9}{'MB':>7}"
          f"{'x polars':>9}{'x spark':>8}   elevflyt per stage (s)")
    for phase in ["first load", "next day (1 % churn)", "unchanged rerun"]:
        e = row["elevflyt"][phase]
        py, sp = row["python"].get(phase), row["spark"].get(phase)
        cell = lambda r, k: f"{r[k]}" if r else "-"
        ratio = lambda r: f"{r['seconds'] / max(e['seconds'], 1e-3):.1f}" if r else "-"
        st = " ".join(f"{k}={v}" for k, v in e["stages"].items())
        print(f"{phase:<22}{e['seconds']:>11}{e['peak_rss_mb']:>7}{cell(py, 'seconds'):>10}{cell(py, 'peak_rss_mb'):>7}"
              f"{cell(sp, 'seconds'):>9}{cell(sp, 'peak_rss_mb'):>7}{ratio(py):>9}{ratio(sp):>8}   {st}"
              + ("" if e["new_elev_version"] or phase != "unchanged rerun" else "  (no new version)"))

# The cost curves: how elevflyt's first load and next day grow with N and with the churn.
print("\nCost curves (elevflyt): seconds (peak MB)")
names = ["next day %g %%" % (c * 100) for c in CHURNS]
print("%10s%16s" % ("pupils", "first load") + "".join("%18s" % name for name in names))
for row in results:
    cells = [row["elevflyt"]["first load"]] + [row["curve"][c] for c in CHURNS]
    text = ["%s (%s)" % (c["seconds"], c["peak_rss_mb"]) for c in cells]
    print("%10s" % format(row["pupils"], ",") + "%16s" % text[0] + "".join("%18s" % t for t in text[1:]))
if len(results) > 1:
    first, last = results[0], results[-1]
    grow = last["pupils"] / first["pupils"]
    print(f"\nfrom {first['pupils']:,} to {last['pupils']:,} pupils (x{grow:g}):")
    for name, a, b in [("first load", first["elevflyt"]["first load"], last["elevflyt"]["first load"])] + \
            [("next day %g %%" % (c * 100), first["curve"][c], last["curve"][c]) for c in CHURNS]:
        print(f"  {name:<16} x{b['seconds'] / max(a['seconds'], 1e-3):.1f} time, x{b['peak_rss_mb'] / max(a['peak_rss_mb'], 1):.1f} memory")



def targets(results, n=1_000_000):
    """Issue 18's targets at `n` pupils, each with its figure and by how much it is met or missed
    (GB = 1024 MB, as peak RSS is counted). The month of daily snapshots prints its own (daily.py)."""
    row = next((r for r in results if r["pupils"] == n), None)
    if row is None:
        return []
    e, py = row["elevflyt"], row["python"]
    first, nxt, rerun = e["first load"], e["next day (1 % churn)"], e["unchanged rerun"]
    lines = []

    def at_most(name, value, limit, unit):
        verdict = "met" if value <= limit else "missed"
        lines.append(f"  {name:<34}{value:>9g} {unit:<3} target <= {limit:g} {unit:<3} "
                     f"x{value / limit:.2f}  {verdict}")

    at_most("first load, time", first["seconds"], 5, "s")
    at_most("first load, peak memory", round(first["peak_rss_mb"] / 1024, 2), 1.2, "GB")
    if py.get("first load"):
        speedup = py["first load"]["seconds"] / max(first["seconds"], 1e-3)
        lines.append(f"  {'first load, x faster than polars':<34}{speedup:>9.2f} x   target >= 2.5 x   "
                     f"{'met' if speedup >= 2.5 else 'missed'}")
        less = first["peak_rss_mb"] < py["first load"]["peak_rss_mb"]
        lines.append(f"  {'first load, memory against polars':<34}{first['peak_rss_mb']:>9} MB  polars "
                     f"{py['first load']['peak_rss_mb']} MB  {'met' if less else 'missed'}")
    at_most("next day (1 % churn), time", nxt["seconds"], 3, "s")
    at_most("next day (1 % churn), peak memory", round(nxt["peak_rss_mb"] / 1024, 2), 1, "GB")
    at_most("unchanged rerun, time", rerun["seconds"], 0.5, "s")
    lines.append(f"  {'unchanged rerun, no new version':<34}{'yes' if not rerun['new_elev_version'] else 'no':>9}"
                 f"{'':16}{'met' if not rerun['new_elev_version'] else 'missed'}")
    return [f"\nTargets at {n:,} pupils (issue 18):"] + lines


for line in targets(results, TARGETS_AT):
    print(line)

(HERE / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
print(f"\nwritten {HERE / 'results.json'}")
