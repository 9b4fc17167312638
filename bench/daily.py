"""make bench, part four: a month of daily snapshots. One kommune's export (DAILY_PUPILS, default
100 000, OneRoster JSON, 1 % churn a day) arrives one day at a time in a folder that keeps the
earlier days, as an SIS export folder does, and `elevflyt run` loads each day into one warehouse.
The month runs twice: as is (each run compacting a table's small files every tenth commit, which
the day's line says), and with `elevflyt maintain` once a week (after days 7, 14, 21 and
28, timed apart from the days), as the README advises. For each it prints the wall time and peak
RSS of the first load, the first next day and the last, the ratio last / first next day and of the
medians of the first and last five next days (the issue's target: within 1.2x — a history that
grows must not make a day slower), and the elev table's versions and files at the end.

usage: daily.py <elevflyt binary> [pupils] [days]   (default 100000 30)
"""
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
DAYS = int(sys.argv[3]) if len(sys.argv) > 3 else 30
base = HERE / "data" / f"daily-{N}-{DAYS}"
data = base / "exports"
if len(list(data.glob("users-*.json"))) != DAYS:
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([BIN, "generate", "--pupils", str(N), "--snapshots", str(DAYS), "--churn", "0.01",
                    "--seed", "42", "--format", "oneroster-json", "--out", str(data)],
                   check=True, capture_output=True)
days = sorted({f.name.split("-", 1)[1] for f in data.glob("users-*.json")})
if len(days) != DAYS:
    sys.exit(f"expected {DAYS} days of exports in {data}, found {len(days)}")


def elev_files(work):
    """The elev table's commits, and its live data files (adds less removes over its log)."""
    commits, live = sorted((work / "lake" / "bench" / "grunnskole" / "elev" / "_delta_log").glob("*.json")), set()
    for c in commits:
        for line in c.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                live.add(action["add"]["path"])
            elif "remove" in action:
                live.discard(action["remove"]["path"])
    return len(commits), len(live)


def month(maintain_every):
    """Every day into a new warehouse, with `elevflyt maintain` after every `maintain_every`th day
    (0: never). Returns the days, the maintenance runs and the elev table's commits and files."""
    work = base / "run"
    shutil.rmtree(work, ignore_errors=True)
    inbox = work / "inbox"
    inbox.mkdir(parents=True)
    (work / "daily.toml").write_text(f"""[pipeline]
name = "daily"
kommunenummer = "4601"
warehouse = "lake"
catalog = "bench"
schema = "grunnskole"

[[source]]
name = "vigilo"
format = "oneroster-json"
location = "{inbox}"
include = ["*.json"]

[quality]
allow_synthetic_fnr = true
""")

    def timed(args, out):
        """One elevflyt process: (seconds, peak RSS MB); stdout to `out`."""
        t = time.perf_counter()
        with out.open("w") as f:
            proc = subprocess.Popen([BIN, *args, "daily.toml", "--log-level", "warn"], cwd=work, stdout=f,
                                    stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"elevflyt {args[0]} failed: {proc.stderr.read().decode()[-3000:]}")
        return wall, usage.ru_maxrss / 1024

    runs, maintained = [], []
    for i, day in enumerate(days):
        for f in data.glob(f"*-{day}"):
            (inbox / f.name).symlink_to(f)
        wall, rss = timed(["run"], work / "summary.json")
        summary = json.loads((work / "summary.json").read_text())
        # The run's own compaction (every tenth commit of a table; README "Invariants, crashes and
        # concurrent runs"): counted in the day's time, said on its line.
        compacted = [c for c in summary.get("compacted", []) if c.get("files_compacted")]
        runs.append({"day": day.removesuffix(".json"), "seconds": round(wall, 2), "peak_rss_mb": round(rss),
                     "carried": summary.get("carried"), "records_carried": summary.get("records_carried"),
                     "current_rows_from": summary.get("current_rows_from"),
                     "compacted_tables": len(compacted),
                     "compaction_seconds": summary.get("stage_seconds", {}).get("compaction")})
        note = (f"  compacted {len(compacted)} tables in {runs[-1]['compaction_seconds']:.2f} s"
                if compacted else "")
        print(f"  day {i + 1:>2} {runs[-1]['day']}: {wall:6.2f} s {rss:6.0f} MB  carried {summary.get('carried')}"
              f"  records carried unread {summary.get('records_carried')}{note}", flush=True)
        if maintain_every and (i + 1) % maintain_every == 0 and i + 1 < len(days):
            wall, rss = timed(["maintain"], work / "maintain.json")
            tables = json.loads((work / "maintain.json").read_text())
            compacted = sum(t["files_compacted"] for t in tables)
            maintained.append({"after_day": i + 1, "seconds": round(wall, 2), "peak_rss_mb": round(rss),
                               "files_compacted": compacted})
            print(f"  maintain after day {i + 1}: {wall:6.2f} s {rss:6.0f} MB  {compacted} files compacted", flush=True)
    return runs, maintained, elev_files(work)


def report(title, runs, elev):
    """Prints a month's figures; returns (last / first next day, median ratio)."""
    versions, files = elev
    first, second, last = runs[0], runs[1], runs[-1]
    print(f"\n{DAYS} daily snapshots of {N:,} pupils (1 % churn a day), one warehouse, {title}")
    print(f"  first load          {first['seconds']:6.2f} s {first['peak_rss_mb']:6} MB")
    print(f"  first next day      {second['seconds']:6.2f} s {second['peak_rss_mb']:6} MB")
    print(f"  day {DAYS:<16}{last['seconds']:6.2f} s {last['peak_rss_mb']:6} MB")
    ratio = last["seconds"] / max(second["seconds"], 1e-3)
    print(f"  last / first next day: x{ratio:.2f} time, x{last['peak_rss_mb'] / max(second['peak_rss_mb'], 1):.2f} memory"
          f" (target: within x1.2 — {'met' if ratio <= 1.2 else 'missed'})")
    # One run of a second or two varies by 10-20 % between runs: the medians of the first and the
    # last five next days say whether the history's growth, not the noise, slows a day.
    medians = None
    if DAYS >= 11:
        med = lambda rs: statistics.median(r["seconds"] for r in rs)
        early, late = med(runs[1:6]), med(runs[-5:])
        medians = late / max(early, 1e-3)
        print(f"  median of days 2-6 {early:.2f} s, of days {DAYS - 4}-{DAYS} {late:.2f} s: x{medians:.2f}"
              f" ({'met' if medians <= 1.2 else 'missed'})")
    print(f"  elev after {DAYS} days: {versions} commits, {files} live Parquet files")
    return ratio, medians


print("the month as is:")
plain = month(0)
print("\nthe month with elevflyt maintain once a week:")
weekly = month(7)
report("no maintenance", plain[0], plain[2])
report("elevflyt maintain after days 7, 14, 21 and 28", weekly[0], weekly[2])
(HERE / "daily.json").write_text(json.dumps({
    "pupils": N,
    "no_maintenance": {"days": plain[0], "elev_versions": plain[2][0], "elev_parquet_files": plain[2][1]},
    "weekly_maintain": {"days": weekly[0], "maintain": weekly[1], "elev_versions": weekly[2][0],
                        "elev_parquet_files": weekly[2][1]},
}, indent=2))
