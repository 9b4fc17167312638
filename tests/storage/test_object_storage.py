"""The Bergen sample pipeline with its sources and warehouse in object storage, for real: on
moto's S3 server and on Azurite (the Azure Storage emulator, npm), both started here on
127.0.0.1 and stopped at the end. A full run, a rerun, two runs at once on one warehouse, a
missing bucket and missing credentials; the tables are opened there by deltalake (Python), an
independent reader.

Commits are safe under concurrency by conditional puts: a Delta commit is a put-if-absent of
`_delta_log/<version>.json` (object_store's `PutMode::Create`: `If-None-Match: *` on S3, the same
condition on Azure Blob), so of two writers of one version exactly one succeeds; the loser sees a
conflict. No locking service (DynamoDB) is needed. The test below first checks that each server
honours the condition, then runs two pipelines at once.

Run by `make test-storage` (part of `make test`) with ELEVFLYT_BIN set.
"""
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import requests
from deltalake import DeltaTable

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ["ELEVFLYT_BIN"]
SOURCES = REPO / "sample_data" / "bergen" / "vigilo"
TABLES = ["elev", "elevforhold", "skole", "elevliste_vgs", "avvik", "raw_vigilo"]

# Azurite's documented development account (public, the same in every installation).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url):
    for _ in range(200):
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


class Store:
    """One object store: how elevflyt, deltalake and this test reach it."""

    def __init__(self, name, env, url, reader_options, upload, make_container, proc):
        self.name, self.env, self.url = name, env, url
        self.reader_options, self.upload, self.make_container, self.proc = (
            reader_options, upload, make_container, proc)


@pytest.fixture(scope="module")
def s3():
    import boto3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(endpoint)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_REGION="us-east-1", AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true")
        yield Store(
            "s3", env, "s3://{bucket}/{path}",
            {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
             "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"},
            lambda bucket, key, path: client.upload_file(str(path), bucket, key),
            lambda bucket: client.create_bucket(Bucket=bucket),
            client,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def azure():
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    data = tempfile.mkdtemp(prefix="azurite-")
    azurite = REPO / "tests" / "storage" / "node_modules" / ".bin" / "azurite-blob"
    proc = subprocess.Popen([str(azurite), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", data,
                             "--silent", "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}/{AZ_ACCOUNT}"
    try:
        wait_for(f"http://127.0.0.1:{port}/")
        service = BlobServiceClient(endpoint, credential={"account_name": AZ_ACCOUNT, "account_key": AZ_KEY})
        env = dict(os.environ, AZURE_STORAGE_ACCOUNT_NAME=AZ_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY=AZ_KEY,
                   AZURE_STORAGE_USE_EMULATOR="true", AZURITE_BLOB_STORAGE_URL=f"http://127.0.0.1:{port}")
        # deltalake (object_store) reads the emulator's address from this process's environment.
        os.environ["AZURITE_BLOB_STORAGE_URL"] = f"http://127.0.0.1:{port}"

        def upload(container, key, path):
            with open(path, "rb") as f:
                service.get_blob_client(container, key).upload_blob(f, overwrite=True)

        yield Store(
            "azure", env, "az://{bucket}/{path}",
            {"account_name": AZ_ACCOUNT, "account_key": AZ_KEY, "use_emulator": "true"},
            upload,
            lambda container: service.create_container(container),
            service,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # Azurite does not always stop on SIGTERM
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["s3", "azure"])
def store(request):
    return request.getfixturevalue(request.param)


def elevflyt(env, *args):
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=600)


def pipeline(tmp, store, bucket, prefix):
    """The Bergen sample pipeline with sources and warehouse under `bucket`/`prefix`."""
    body = (REPO / "pipelines" / "bergen.toml").read_text()
    body = body.replace('"../sample_data/bergen/vigilo"',
                        '"' + store.url.format(bucket=bucket, path=f"{prefix}/kjelder/bergen") + '"')
    body = body.replace('"../lakehouse"', '"' + store.url.format(bucket=bucket, path=f"{prefix}/lager") + '"')
    path = tmp / f"bergen-{store.name}-{prefix}.toml"
    path.write_text(body)
    return path


def upload_sources(store, bucket, prefix):
    for f in sorted(SOURCES.iterdir()):
        store.upload(bucket, f"{prefix}/kjelder/bergen/{f.name}", f)


def table(store, bucket, prefix, name):
    uri = store.url.format(bucket=bucket, path=f"{prefix}/lager/bergen_kommune/grunnskole/{name}")
    return DeltaTable(uri, storage_options=store.reader_options)


def count(pipeline_path, env, sql):
    p = elevflyt(env, "sql", str(pipeline_path), sql, "--format", "csv")
    assert p.returncode == 0, p.stderr[-2000:]
    return int(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def buckets(s3, azure):
    for st in (s3, azure):
        st.make_container("lake")
    return "lake"


def test_a_full_run_and_a_rerun_in_object_storage(store, buckets, tmp_path):
    prefix = "full"
    upload_sources(store, buckets, prefix)
    p = pipeline(tmp_path, store, buckets, prefix)
    t = time.monotonic()
    first = elevflyt(store.env, "run", str(p), "--until", "2026-01-15")
    assert first.returncode == 0, first.stderr[-3000:]
    second = elevflyt(store.env, "run", str(p), "--log-level", "debug")
    assert second.returncode == 0, second.stderr[-3000:]
    print(f"{store.name}: two runs in {time.monotonic() - t:.1f} s")
    # The second day read the state file the first wrote, and wrote what changed beside it in
    # the store (docs/ARCHITECTURE.md, "The current state").
    assert json.loads(second.stdout)["current_rows_from"] == "state file", second.stdout
    assert 'written="change"' in second.stderr, second.stderr[-3000:]

    # deltalake opens every table where elevflyt wrote it, and sees what elevflyt sees.
    for name in TABLES:
        dt = table(store, buckets, prefix, name)
        rows = dt.to_pyarrow_table().num_rows
        assert rows == count(p, store.env, f"SELECT count(*) FROM {name}"), name
    current = table(store, buckets, prefix, "elev").to_pyarrow_table().to_pylist()
    current = [r for r in current if r["is_current"]]
    assert len(current) == count(p, store.env, "SELECT count(*) FROM elev WHERE is_current") > 0
    elevliste = table(store, buckets, prefix, "elevliste_vgs").to_pyarrow_table()
    print(f"{store.name}: elev {len(current)} current, elevliste_vgs {elevliste.num_rows} rows, "
          f"elev at version {table(store, buckets, prefix, 'elev').version()}")

    # A rerun with nothing new commits nothing.
    before = {n: table(store, buckets, prefix, n).version() for n in TABLES}
    again = elevflyt(store.env, "run", str(p))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {n: table(store, buckets, prefix, n).version() for n in ["elev", "elevforhold", "skole", "raw_vigilo"]} == \
        {n: before[n] for n in ["elev", "elevforhold", "skole", "raw_vigilo"]}
    check = elevflyt(store.env, "check", str(p))
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_store_refuses_a_second_writer_of_one_version(store, buckets):
    """The mechanism the concurrent runs below rely on: a put-if-absent loses to an existing key."""
    key = "probe/_delta_log/00000000000000000000.json"
    if store.name == "s3":
        store.proc.put_object(Bucket=buckets, Key=key, Body=b"{}", IfNoneMatch="*")
        with pytest.raises(Exception) as e:
            store.proc.put_object(Bucket=buckets, Key=key, Body=b"{}", IfNoneMatch="*")
        assert "PreconditionFailed" in str(e.value) or "412" in str(e.value)
    else:
        blob = store.proc.get_blob_client(buckets, key)
        blob.upload_blob(b"{}", overwrite=False)
        with pytest.raises(Exception) as e:
            blob.upload_blob(b"{}", overwrite=False)
        assert "BlobAlreadyExists" in str(e.value) or "409" in str(e.value)


def test_two_runs_at_once_on_one_warehouse(store, buckets, tmp_path):
    prefix = "together"
    upload_sources(store, buckets, prefix)
    p = pipeline(tmp_path, store, buckets, prefix)
    runs = [subprocess.Popen([BIN, "run", str(p)], env=store.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(r.wait(timeout=600), r.stdout.read(), r.stderr.read()) for r in runs]
    codes = sorted(c for c, _, _ in results)
    print(f"{store.name}: two runs at once exited {codes}")
    for code, _, err in results:
        # Each either finished or lost a commit race and said so; nothing else.
        assert code == 0 or "another run committed" in err, err[-3000:]
    # Whatever the interleaving, a next run finishes the work and the tables are whole.
    last = elevflyt(store.env, "run", str(p))
    assert last.returncode == 0, last.stderr[-3000:]
    check = elevflyt(store.env, "check", str(p))
    assert check.returncode == 0, check.stdout + check.stderr
    # Every source file is in raw once, though both runs read it.
    assert count(p, store.env, "SELECT count(*) FROM raw_vigilo WHERE entitet = '_fil'") == len(list(SOURCES.iterdir()))
    # The same current pupils as one run alone gives.
    alone = pipeline(tmp_path, store, buckets, "full")
    assert count(p, store.env, "SELECT count(*) FROM elev WHERE is_current") == \
        count(alone, store.env, "SELECT count(*) FROM elev WHERE is_current")


def test_a_missing_bucket_and_missing_credentials_are_named(store, buckets, tmp_path):
    p = pipeline(tmp_path, store, "finst-ikkje", "x")
    r = elevflyt(store.env, "run", str(p))
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    print(f"{store.name}, missing bucket: {last}")
    assert "finst-ikkje" in last and "cannot be read" in last and "does not exist" in last, last

    env = {k: v for k, v in store.env.items() if not k.startswith(("AWS_", "AZURE_"))}
    p = pipeline(tmp_path, store, buckets, "full")
    r = elevflyt(env, "run", str(p))
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    print(f"{store.name}, no credentials: {last}")
    names = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] if store.name == "s3" else \
        ["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY"]
    assert all(n in last for n in names), last
