"""make bench, part three: the country as a fleet. `elevflyt generate --national` splits
FLEET_PUPILS pupils (default 630 000, about Norway's grunnskole) into one OneRoster export per
kommune with a pipeline file each; all of them run (1) in one process, `elevflyt run
pipelines/*.toml`, and (2) as parallel processes (FLEET_JOBS, default 2) against one other
warehouse. Prints wall time, kommuner per hour and pupils per second, and checks that no pupil is
lost: the current rows of every kommune's `elev`, read back with deltalake, add up to the pupils
in the exports.

usage: fleet.py <elevflyt binary> [pupils] [jobs]   (run with the python that has deltalake)
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from deltalake import DeltaTable

HERE = pathlib.Path(__file__).resolve().parent
BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 630_000
JOBS = int(sys.argv[3]) if len(sys.argv) > 3 else 2
out = HERE / "data" / f"national-{N}"
if not (out / "pipelines").is_dir():
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([BIN, "generate", "--national", "--pupils", str(N), "--seed", "42", "--out", str(out)],
                   check=True)
pipelines = sorted((out / "pipelines").glob("*.toml"))
exported = 0
for k in out.iterdir():
    for f in k.glob("users-*.json") if k.is_dir() else []:
        exported += len(json.loads(f.read_text())["users"])


def current(lake):
    total = 0
    for p in pipelines:
        k = p.stem
        total += DeltaTable(str(lake / f"k{k}" / "grunnskole" / "elev")).to_pyarrow_table(
            columns=["is_current"], filters=[("is_current", "=", True)]).num_rows
    return total


rows = []
for mode in ["one process", f"{JOBS} processes"]:
    lake = out / ("lager" if mode == "one process" else "lager-parallel")
    shutil.rmtree(lake, ignore_errors=True)
    t = time.perf_counter()
    if mode == "one process":
        p = subprocess.run([BIN, "run", *map(str, pipelines), "--log-level", "warn"], capture_output=True, text=True)
        failed = p.returncode
    else:
        procs, failed = [], 0
        todo = list(pipelines)
        while todo or procs:
            while todo and len(procs) < JOBS:
                procs.append(subprocess.Popen([BIN, "run", str(todo.pop(0)), "--warehouse", str(lake),
                                               "--log-level", "warn"], stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            for q in list(procs):
                if q.poll() is not None:
                    failed += q.returncode != 0
                    procs.remove(q)
            time.sleep(0.01)
    wall = time.perf_counter() - t
    got = current(lake)
    rows.append((mode, wall, failed, got))

print(f"\nNational fleet: {len(pipelines)} kommuner, {exported:,} pupils in the exports")
print(f"{'mode':<14}{'wall s':>9}{'kommuner/h':>12}{'pupils/s':>10}{'failed':>8}{'current pupils':>16}")
for mode, wall, failed, got in rows:
    print(f"{mode:<14}{wall:>9.1f}{len(pipelines) / wall * 3600:>12.0f}{exported / wall:>10.0f}{failed:>8}"
          f"{got:>16,}" + ("" if got == exported else "  LOST PUPILS"))
lost = any(got != exported or failed for _, _, failed, got in rows)
if lost:
    print("the fleet lost pupils or failed", file=sys.stderr)
sys.stdout.flush()
sys.stderr.flush()
# Straight out: deltalake's runtime threads can abort the interpreter's normal shutdown
# ("terminate called without an active exception", exit 134) after everything was measured.
os._exit(1 if lost else 0)
