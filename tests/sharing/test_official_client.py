"""The county's side of `elevflyt serve`: the official Delta Sharing client (delta-sharing 1.4.2,
as the admission office installs it) reads a kommune's county list over HTTP and over TLS.

The data is generated with pupils bound for two counties (Vestland 46, Oslo 03), in two daily
snapshots; each county's profile must give that county's pupils and nobody else's, equal to the
same filter applied with `deltalake` to the table directly, and the changes after the second
snapshot must be exactly the rows that changed.

Run by `make test-sharing` (part of `make test`) with ELEVFLYT_BIN set.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys

import delta_sharing
import pandas as pd
import pytest
import requests
from deltalake import DeltaTable

BIN = os.environ["ELEVFLYT_BIN"]
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
FNR = re.compile(r"\b\d{11}\b")
KEY = ["fodselsnummer", "skolenummer", "klasse", "elev_namn"]


def run(*args, **kw):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{args}: {p.stderr[-2000:]}"
    return p.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`elevflyt serve` in a subprocess, stopped with SIGTERM (which writes the disclosure log)."""

    def __init__(self, sharing, env=None):
        self.proc = subprocess.Popen([BIN, "serve", str(sharing)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert "listening on" in line, self.proc.stderr.read()[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        return self.proc.returncode


SHARING = """
[server]
listen = "127.0.0.1:{port}"
{server_extra}

[[share]]
name = "inntak"
[[share.schema]]
pipeline = "pipeline.toml"
tables = ["elevliste_vgs"]
history = true

[[recipient]]
name = "vestland"
shares = ["inntak"]
rows = {{ fylkesnummer = "46" }}

[[recipient]]
name = "oslo"
shares = ["inntak"]
rows = {{ fylkesnummer = "03" }}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharing")
    src = root / "src"
    # Three of four schools in Bergen (46), one in Oslo (03): Vestland's file is well over 64 KiB,
    # so the client reads it in ranges.
    run("generate", "--kommune", "4601,4601,4601,0301", "--pupils", "80000", "--snapshots", "2",
        "--out", str(src))
    (root / "pipeline.toml").write_text(f"""
[pipeline]
name = "region"
kommunenummer = "4601"
warehouse = "lake"
catalog = "region"
schema = "grunnskole"

[[source]]
name = "gen"
format = "oneroster-json"
location = "{src}"

[quality]
allow_synthetic_fnr = true
""")
    run("run", str(root / "pipeline.toml"), "--until", "2026-01-15")
    port = free_port()
    sharing = root / "sharing.toml"
    sharing.write_text(SHARING.format(port=port, server_extra=""))
    profiles = {}
    for r in ["vestland", "oslo"]:
        profiles[r] = root / f"{r}.share"
        token = run("share", "token", str(sharing), "--recipient", r, "--days", "7", "--out",
                    str(profiles[r])).strip()
        assert token not in sharing.read_text(), "only the token's hash is kept"
    server = Server(sharing)
    w = {"root": root, "profiles": profiles, "server": server, "sharing": sharing,
         "table": str(root / "lake" / "region" / "grunnskole" / "elevliste_vgs")}
    yield w
    server.stop()
    if "tls" in w:
        w["tls"].stop()


def url(profile, table="elevliste_vgs"):
    return f"{profile}#inntak.region.{table}"


def direct(path, fylke, version=None):
    """The same filter applied to the table directly, with deltalake."""
    df = DeltaTable(path, version=version).to_pandas()
    return df[df.fylkesnummer == fylke]


def rows(df):
    return sorted(map(tuple, df[KEY].astype(str).values.tolist()))


def test_list_all_tables(world):
    tables = delta_sharing.SharingClient(str(world["profiles"]["vestland"])).list_all_tables()
    print("list_all_tables:", tables)
    assert [(t.share, t.schema, t.name) for t in tables] == [("inntak", "region", "elevliste_vgs")]


def test_each_county_reads_its_own_pupils_and_nobody_elses(world):
    for county, fylke in [("vestland", "46"), ("oslo", "03")]:
        df = delta_sharing.load_as_pandas(url(world["profiles"][county]))
        print(f"{county}: {len(df)} rows, fylkesnummer {sorted(df.fylkesnummer.unique())}")
        assert len(df) > 0
        assert set(df.fylkesnummer) == {fylke}
        assert rows(df) == rows(direct(world["table"], fylke))
    # Range requests were needed: Vestland's data file is larger than 64 KiB.
    sizes = [os.path.getsize(os.path.join(d, f))
             for d, _, fs in os.walk(os.path.join(world["table"], "fylkesnummer=46")) for f in fs]
    assert max(sizes) > 64 * 1024, sizes
    limited = delta_sharing.load_as_pandas(url(world["profiles"]["vestland"]), limit=5)
    assert len(limited) == 5 and set(limited.fylkesnummer) == {"46"}


def test_a_second_snapshot_gives_exactly_the_changed_pupils(world):
    profile = world["profiles"]["vestland"]
    v1 = delta_sharing.get_table_version(url(profile))
    run("run", str(world["root"] / "pipeline.toml"))
    v2 = delta_sharing.get_table_version(url(profile))
    print("versions:", v1, "->", v2)
    assert v2 > v1
    changes = delta_sharing.load_table_changes_as_pandas(url(profile), starting_version=v1 + 1)
    print("changes:", changes.groupby("_change_type").size().to_dict())
    assert set(changes.fylkesnummer) == {"46"}
    before, after = set(rows(direct(world["table"], "46", v1))), set(rows(direct(world["table"], "46", v2)))
    inserted = sorted(after - before)
    deleted = sorted(before - after)
    assert len(inserted) + len(deleted) > 0
    assert rows(changes[changes._change_type == "insert"]) == inserted
    assert rows(changes[changes._change_type == "delete"]) == deleted
    assert len(changes) == len(inserted) + len(deleted), "no row for a pupil that did not change"
    assert set(changes._commit_version) <= set(range(v1 + 1, v2 + 1))
    # Time travel: version v1 as it was.
    old = delta_sharing.load_as_pandas(url(profile), version=v1)
    assert rows(old) == rows(direct(world["table"], "46", v1))
    oslo = delta_sharing.load_table_changes_as_pandas(url(world["profiles"]["oslo"]), starting_version=v1 + 1)
    assert set(oslo.fylkesnummer) <= {"03"}


def test_a_bad_token_is_refused_with_401(world, tmp_path):
    profile = json.loads(world["profiles"]["vestland"].read_text())
    profile["bearerToken"] = "x" * 43
    bad = tmp_path / "bad.share"
    bad.write_text(json.dumps(profile))
    with pytest.raises(requests.exceptions.HTTPError) as e:
        delta_sharing.load_as_pandas(url(bad))
    print("bad token:", str(e.value).splitlines()[0])
    assert e.value.response.status_code == 401
    assert e.value.response.json()["errorCode"] == "UNAUTHENTICATED"


def test_over_tls_with_a_certificate_made_here(world):
    root = world["root"]
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    port = free_port()
    sharing = root / "sharing-tls.toml"
    sharing.write_text(SHARING.format(port=port, server_extra=(
        f'public_url = "https://localhost:{port}"\ntls_cert = "cert.pem"\ntls_key = "key.pem"')))
    profile = root / "tls.share"
    run("share", "token", str(sharing), "--recipient", "vestland", "--out", str(profile))
    assert json.loads(profile.read_text())["endpoint"] == f"https://localhost:{port}/delta-sharing/"
    world["tls"] = Server(sharing)
    # The client verifies the server (requests) and the data files (aiohttp) against this
    # certificate, as it would against a CA the county trusts. aiohttp reads the trust store
    # when it is imported, so the client runs in a process of its own with the variables set.
    reader = (
        "import delta_sharing, json, sys\n"
        "df = delta_sharing.load_as_pandas(sys.argv[1])\n"
        "print(json.dumps(sorted(map(list, df[%r].astype(str).values.tolist()))))\n" % KEY
    )
    env = dict(os.environ, SSL_CERT_FILE=str(cert), REQUESTS_CA_BUNDLE=str(cert))
    p = subprocess.run([sys.executable, "-c", reader, url(profile)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    got = [tuple(r) for r in json.loads(p.stdout)]
    print(f"over TLS: {len(got)} rows")
    assert got == rows(direct(world["table"], "46"))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{port}/delta-sharing/shares", verify=True, timeout=10)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/delta-sharing/shares", timeout=10)


def test_every_read_is_in_the_disclosure_log(world):
    assert world["server"].stop() == 0
    if "tls" in world:
        assert world["tls"].stop() == 0
    log = DeltaTable(str(world["root"] / "lake" / "region" / "grunnskole" / "utlevering")).to_pandas()
    print(log.groupby(["mottakar", "operasjon"]).size().to_string())
    ops = set(zip(log.mottakar, log.operasjon))
    assert {("vestland", "query"), ("vestland", "changes"), ("vestland", "download"),
            ("oslo", "query"), ("oslo", "changes")} <= ops
    assert set(log[log.mottakar == "vestland"].avgrensing) == {"fylkesnummer=46"}
    assert (log.request_id.str.len() > 0).all()
    text = log.astype(str).to_csv()
    assert not FNR.search(text), "no fødselsnummer in the disclosure log"
