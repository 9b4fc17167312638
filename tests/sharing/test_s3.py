"""Sharing from a warehouse on S3: the Bergen sample pipeline runs with its sources and warehouse
on moto's S3 server (started here on 127.0.0.1, stopped at the end), `elevflyt serve` hands the
county the object store's pre-signed URLs (`cloud_files = "presign"`, the default), and the
official client reads them: only fylke 46, and the changes of the second delivery.

Run by `make test-sharing` with ELEVFLYT_BIN set.
"""
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.parse

import boto3
import delta_sharing
import pytest
import requests

from test_official_client import BIN, Server, free_port

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(endpoint, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="lake")
    for f in sorted((REPO / "sample_data" / "bergen" / "vigilo").iterdir()):
        client.upload_file(str(f), "lake", f"kjelder/bergen/{f.name}")
    root = tmp_path_factory.mktemp("s3")
    (root / "bergen.toml").write_text((REPO / "pipelines" / "bergen.toml").read_text()
                                      .replace('"../sample_data/bergen/vigilo"', '"s3://lake/kjelder/bergen"')
                                      .replace('"../lakehouse"', '"s3://lake/lager"'))
    yield {"env": env, "root": root, "endpoint": endpoint, "client": client}
    moto.terminate()
    moto.wait(timeout=10)


def elevflyt(env, *args):
    p = subprocess.run([BIN, *args], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_the_county_reads_a_warehouse_on_s3_through_pre_signed_urls(s3):
    env, root = s3["env"], s3["root"]
    elevflyt(env, "run", str(root / "bergen.toml"), "--until", "2026-01-15")
    port = free_port()
    sharing = root / "sharing.toml"
    sharing.write_text(f"""
[server]
listen = "127.0.0.1:{port}"

[[share]]
name = "vgs_inntak"
[[share.schema]]
pipeline = "bergen.toml"
tables = ["elevliste_vgs"]
history = true

[[recipient]]
name = "vestland"
shares = ["vgs_inntak"]
rows = {{ fylkesnummer = "46" }}
""")
    profile = root / "vestland.share"
    elevflyt(env, "share", "token", str(sharing), "--recipient", "vestland", "--out", str(profile))
    # The server gets the credentials from its environment, as `run` does.
    server = Server(sharing, env=env)
    try:
        url = f"{profile}#vgs_inntak.bergen_kommune.elevliste_vgs"
        v1 = delta_sharing.get_table_version(url)
        df = delta_sharing.load_as_pandas(url)
        print(f"S3: {len(df)} rows at version {v1}, fylkesnummer {sorted(set(df.fylkesnummer))}")
        assert len(df) > 0 and set(df.fylkesnummer) == {"46"}

        # The file URLs are S3's own pre-signed URLs (an hour), at the S3 server; the server does
        # not carry the bytes.
        token = json.loads(profile.read_text())["bearerToken"]
        r = requests.post(f"http://127.0.0.1:{port}/delta-sharing/shares/vgs_inntak/schemas/bergen_kommune/tables/elevliste_vgs/query",
                          headers={"Authorization": f"Bearer {token}"}, json={}, timeout=30)
        files = [json.loads(l)["file"] for l in r.text.splitlines()[2:]]
        assert files, r.text
        for f in files:
            parsed = urllib.parse.urlparse(f["url"])
            assert f["url"].startswith(s3["endpoint"] + "/lake/lager/"), f["url"]
            assert "X-Amz-Signature" in parsed.query and "X-Amz-Expires=3600" in parsed.query
            assert requests.get(f["url"], timeout=30).status_code == 200
        # (moto does not check signatures, so a tampered URL is S3's to refuse, not tested here.)

        # The second delivery: the county's changes are the corrections.
        elevflyt(env, "run", str(root / "bergen.toml"))
        changes = delta_sharing.load_table_changes_as_pandas(url, starting_version=v1 + 1)
        print("S3 changes:", changes.groupby("_change_type").size().to_dict())
        assert sorted(changes._change_type) == ["delete", "delete", "insert", "insert", "insert"]
    finally:
        assert server.stop() == 0
    # Every query is in utlevering, on S3 too.
    out = elevflyt(env, "sql", str(root / "bergen.toml"),
                   "SELECT mottakar, operasjon, count(*) AS n FROM utlevering GROUP BY 1, 2 ORDER BY 2",
                   "--format", "csv")
    print(out)
    assert "vestland,query" in out and "vestland,changes" in out
