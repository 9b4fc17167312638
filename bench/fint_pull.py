"""make bench, part two: a FINT pull of N pupils (default 100 000) from the local FINT test server
(tests/servers/api_server.py on 127.0.0.1, OAuth2 and paging as FINT has them), timed with its
peak RSS: the first pull (a full load through all three stages) and a second run, where
`sinceTimeStamp` finds nothing changed and nothing is pulled.

usage: fint_pull.py <elevflyt binary> [pupils] [page size]
"""
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
BIN = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
PAGE = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
SECRET = "bench-hemmeleg"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd, env):
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "RSS=%M", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    rss = int(re.findall(r"RSS=(\d+)", out.stderr)[-1]) / 1024
    return wall, rss, json.loads(out.stdout)


base = HERE / "data" / f"fint-{N}"
data = base / "data"
if not (data / "elev-2026-01-15.json").exists():
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([BIN, "generate", "--format", "fint", "--pupils", str(N), "--seed", "42", "--out", str(data)],
                   check=True)
work = base / "elevflyt"
shutil.rmtree(work, ignore_errors=True)
work.mkdir(parents=True)
port = free_port()
server = subprocess.Popen([sys.executable, str(REPO / "tests" / "servers" / "api_server.py"), "--kind", "fint",
                           "--dir", str(data), "--date", "2026-01-15", "--client-secret", SECRET,
                           "--port", str(port)], stdout=subprocess.PIPE, text=True)
try:
    assert server.stdout.readline().startswith("listening"), "the FINT test server did not start"
    p = work / "fint.toml"
    p.write_text(f"""[pipeline]
name = "bench-fint"
kommunenummer = "4601"
warehouse = "lake"
catalog = "bench"
schema = "grunnskole"

[[source]]
name = "fint"
format = "fint"
location = "http://127.0.0.1:{port}/utdanning"
page_size = {PAGE}
[source.auth]
token_url = "http://127.0.0.1:{port}/oauth/token"
client_id = "elevflyt"

[quality]
allow_synthetic_fnr = true
""")
    env = dict(os.environ, ELEVFLYT_FINT_CLIENT_SECRET=SECRET, NO_PROXY="127.0.0.1")
    rows = []
    for phase in ["first pull + load", "next run (unchanged)"]:
        wall, rss, summary = timed([BIN, "run", str(p), "--log-level", "warn"], env)
        pull = summary["pulls"][0]
        rows.append((phase, wall, rss, pull, summary["stage_seconds"]))
    print(f"\nFINT pull of {N:,} pupils from a local FINT test server (pages of {PAGE})")
    print(f"{'phase':<24}{'wall s':>8}{'peak MB':>9}{'pages':>7}{'records':>9}{'MB':>7}{'requests':>9}{'pull s':>8}"
          f"{'records/s':>11}   stages (s)")
    for phase, wall, rss, pull, stages in rows:
        rate = round(pull["records"] / pull["seconds"]) if pull["seconds"] and pull["records"] else 0
        st = " ".join(f"{k}={round(v, 2)}" for k, v in stages.items())
        print(f"{phase:<24}{wall:>8.2f}{rss:>9.0f}{pull['pages']:>7}{pull['records']:>9}{pull['bytes'] / 1e6:>7.0f}"
              f"{pull['requests']:>9}{pull['seconds']:>8.2f}{rate:>11}   {st}"
              + ("  (nothing changed: no pull)" if pull["unchanged"] else ""))
    (HERE / "fint_results.json").write_text(json.dumps(
        [{"phase": r[0], "seconds": round(r[1], 2), "peak_rss_mb": round(r[2]), "pull": r[3]} for r in rows], indent=2))
finally:
    server.terminate()
    server.wait(timeout=10)
