"""Resumable, verified downloads and CELLxGENE Discover resolution, against loopback servers."""

from __future__ import annotations

import hashlib
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cellxgene_server import CellxgeneServer, Version
from scvi_hub_workflow import cellxgene, downloads
from scvi_hub_workflow.cellxgene import CellxgeneError
from scvi_hub_workflow.downloads import DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so a dropped connection happens mid-file
VERSION_ID = "1c2d3e4f-0000-4000-8000-00000000beef"
DATASET_ID = "0a1b2c3d-0000-4000-8000-00000000cafe"


@pytest.fixture
def server():
    older = Version(DATASET_ID, "00000000-0000-4000-8000-000000000001", b"old bytes")
    srv = CellxgeneServer([Version(DATASET_ID, VERSION_ID, PAYLOAD, cell_count=27), older])
    yield srv
    srv.close()


def file_url(server) -> str:
    return f"{server.base}/files/{VERSION_ID}.h5ad"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    """Catalogue row 7: an early end of stream is detected by length and resumed."""
    server.drop_after = 300_000
    target = tmp_path / "x.h5ad"
    got = downloads.download(file_url(server), target, sha256(PAYLOAD), backoff_s=0)
    assert target.read_bytes() == PAYLOAD
    assert server.file_requests() == [None, "bytes=300000-"]
    assert got["size"] == len(PAYLOAD) and got["sha256"] == sha256(PAYLOAD)


def test_server_ignoring_range_is_read_again_from_the_start(server, tmp_path):
    server.drop_after, server.ignore_range = 300_000, True
    target = tmp_path / "x.h5ad"
    downloads.download(file_url(server), target, sha256(PAYLOAD), backoff_s=0)
    assert target.read_bytes() == PAYLOAD
    assert server.file_requests() == [None, "bytes=300000-"]


def test_connection_dropping_every_time_is_an_incomplete_download_not_a_checksum(server, tmp_path):
    server.drop_after, server.drops = 1000, 10
    with pytest.raises(DownloadError, match="connection closed after .* of 1048576 bytes"):
        downloads.download(file_url(server), tmp_path / "x.h5ad", "0" * 64, attempts=3, backoff_s=0)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_refused_and_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="received 1048576 bytes, but the file should have 5"):
        downloads.download(file_url(server), tmp_path / "x.h5ad", expected_size=5, backoff_s=0)
    assert list(tmp_path.iterdir()) == []


def test_md5_checksum_as_zenodo_publishes_it(server, tmp_path):
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    target = tmp_path / "x.h5ad"
    downloads.download(file_url(server), target, checksum=f"md5:{md5}", backoff_s=0)
    assert target.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="MD5 .* does not match the configured checksum md5:"):
        downloads.download(file_url(server), tmp_path / "y.h5ad", checksum="md5:" + "0" * 32)
    assert not (tmp_path / "y.h5ad").exists()


@pytest.mark.parametrize("text", ["md5:123", "sha1:" + "0" * 40, "0" * 64, "sha256:" + "g" * 64])
def test_bad_checksum_text_names_the_key(text):
    with pytest.raises(DownloadError, match="dataset.checksum"):
        downloads.parse_checksum(text)


def test_progress_is_logged_with_rate_and_eta(server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="scvi_hub_workflow.downloads")
    downloads.download(file_url(server), tmp_path / "x.h5ad", progress_every_s=0)
    lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert lines and "1.0 MiB of 1.0 MiB (100%)" in lines[-1]


def test_version_id_resolves_to_its_h5ad_asset(server):
    resolved = cellxgene.resolve(VERSION_ID, server.base, backoff_s=0)
    assert resolved.dataset_version_id == VERSION_ID and resolved.dataset_id == DATASET_ID
    assert resolved.url == file_url(server) and resolved.filesize == len(PAYLOAD)
    assert not resolved.newest_of_dataset


def test_dataset_id_resolves_to_the_newest_version_and_says_so(server, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    record = cellxgene.fetch_dataset(DATASET_ID, tmp_path / "x.h5ad", base=server.base)
    assert record["dataset_version_id"] == VERSION_ID and record["newest_of_dataset"]
    assert record["sha256"] == sha256(PAYLOAD) and record["size"] == len(PAYLOAD)
    assert f"newest version {VERSION_ID}" in caplog.text


def test_base_url_comes_from_the_environment(monkeypatch, server):
    monkeypatch.setenv("CELLXGENE_API_URL", server.base + "/")
    assert cellxgene.api_url() == server.base
    monkeypatch.delenv("CELLXGENE_API_URL")
    assert cellxgene.api_url() == "https://api.cellxgene.cziscience.com"


def test_unknown_id_is_a_clear_error(server):
    with pytest.raises(CellxgeneError, match="cellxgene:nope: .* knows no dataset version"):
        cellxgene.resolve("nope", server.base, backoff_s=0)


def test_announced_size_differs_from_the_file(server, tmp_path):
    server.versions[0].announced_size = len(PAYLOAD) + 1
    with pytest.raises(DownloadError, match="but the file should have 1048577"):
        cellxgene.fetch_dataset(VERSION_ID, tmp_path / "x.h5ad", base=server.base)
    assert list(tmp_path.iterdir()) == []


def test_configured_sha256_is_verified_for_cellxgene(server, tmp_path):
    with pytest.raises(DownloadError, match="does not match the configured sha256"):
        cellxgene.fetch_dataset(
            VERSION_ID, tmp_path / "x.h5ad", sha256="0" * 64, base=server.base, backoff_s=0
        )


# The plain-URL cases (from before resumable downloads), against a server without Range.


class _Server:
    """A loopback HTTP server that fails the first `failures` requests with a 503."""

    def __init__(self, payload: bytes, failures: int = 0, status: int = 503):
        self.payload, self.failures, self.status, self.requests = payload, failures, status, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                server.requests += 1
                if server.requests <= server.failures:
                    self.send_error(server.status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                self.wfile.write(server.payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.h5ad"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def payload() -> bytes:
    return b"not really h5ad, but bytes with a checksum" * 1000


def test_download_verifies_and_renames(tmp_path, payload):
    server = _Server(payload)
    try:
        target = tmp_path / "d" / "x.h5ad"
        downloads.download(server.url, target, hashlib.sha256(payload).hexdigest(), backoff_s=0)
        assert target.read_bytes() == payload
    finally:
        server.close()


def test_download_retries_transient_errors(tmp_path, payload):
    server = _Server(payload, failures=2)
    try:
        target = tmp_path / "x.h5ad"
        downloads.download(server.url, target, hashlib.sha256(payload).hexdigest(), backoff_s=0)
        assert server.requests == 3 and target.read_bytes() == payload
    finally:
        server.close()


def test_download_checksum_mismatch_leaves_nothing(tmp_path, payload):
    server = _Server(payload)
    try:
        target = tmp_path / "x.h5ad"
        with pytest.raises(DownloadError, match="does not match the configured sha256"):
            downloads.download(server.url, target, "0" * 64, backoff_s=0)
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_download_client_error_is_not_retried(tmp_path, payload):
    server = _Server(payload, failures=10, status=404)
    try:
        with pytest.raises(DownloadError, match="HTTP 404"):
            downloads.download(server.url, tmp_path / "x.h5ad", "0" * 64, backoff_s=0)
        assert server.requests == 1 and list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_a_url_download_error_names_the_models_url_status_and_retry(tmp_path, payload):
    """The download rule's message: dataset.source's URL, the models reading it, the status."""
    server = _Server(payload, failures=10, status=404)
    try:
        with pytest.raises(DownloadError) as caught:
            downloads.download(server.url, tmp_path / "x.h5ad", "0" * 64, backoff_s=0)
    finally:
        server.close()
    error = caught.value
    assert (error.url, error.status, error.retryable) == (server.url, 404, False)
    named = error.for_models(["lung", "heart"], f"dataset.source {server.url}")
    assert str(named).startswith(f"dataset.source {server.url} (models lung, heart): GET ")
    assert "HTTP 404" in str(named) and "a retry will not help" in str(named)
    assert (named.url, named.status, named.retryable) == (server.url, 404, False)


def test_a_server_error_after_every_attempt_says_a_retry_may_help(tmp_path, payload):
    server = _Server(payload, failures=10, status=503)
    try:
        with pytest.raises(DownloadError) as caught:
            downloads.download(server.url, tmp_path / "x.h5ad", attempts=2, backoff_s=0)
    finally:
        server.close()
    assert "HTTP 503" in str(caught.value) and "(after 2 attempts)" in str(caught.value)
    assert "a retry may help" in str(caught.value) and caught.value.retryable


def test_models_reading_a_download_are_found_by_its_path():
    from scvi_hub_workflow.config import resolve

    source = {"source": f"cellxgene:{VERSION_ID}", "counts": "raw.X"}
    models = {
        name: {"dataset": source, "model": {"class": "SCVI"}} for name in ("lung", "heart")
    } | {"other": {"dataset": {"source": "builtin:synthetic-iid"}, "model": {"class": "SCVI"}}}
    path = f"resources/cellxgene/{VERSION_ID}.h5ad"
    assert downloads.models_reading(resolve({"models": models}), path) == ["heart", "lung"]


def test_the_dataset_step_sees_a_version_newer_than_the_one_downloaded(server):
    from functools import partial

    from scvi_hub_workflow.datasets import newer_version

    older = server.versions[1].dataset_version_id
    record = {
        "requested_id": DATASET_ID,
        "dataset_id": DATASET_ID,
        "dataset_version_id": older,
        "newest_of_dataset": True,
    }
    note = newer_version(record, partial(cellxgene.resolve, base=server.base, backoff_s=0))
    assert note["newest_version_id"] == VERSION_ID and not note["is_newest"]
    assert f"cellxgene:{VERSION_ID}" in note["how_to_move"]


def test_a_rerun_says_a_newer_version_exists_and_runs_nothing(server, tmp_path):
    """The dataset step checks once; a later run, with nothing to do, must say it too: one
    request for the versions, no download, no job."""
    import json

    import yaml
    from helpers import snakemake

    older = server.versions[1].dataset_version_id
    kept = tmp_path / "resources" / "cellxgene"
    kept.mkdir(parents=True)
    (kept / f"{DATASET_ID}.h5ad").write_bytes(b"old bytes")
    record = {
        "requested_id": DATASET_ID,
        "dataset_id": DATASET_ID,
        "dataset_version_id": older,
        "newest_of_dataset": True,
    }
    (kept / f"{DATASET_ID}.json").write_text(json.dumps(record))
    cfg = {
        "models": {
            "m": {
                "dataset": {"source": f"cellxgene:{DATASET_ID}", "counts": "raw.X"},
                "model": {"class": "SCVI"},
            }
        }
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    target = f"resources/cellxgene/{DATASET_ID}.h5ad"
    env = {"CELLXGENE_API_URL": server.base, "NO_PROXY": "127.0.0.1,localhost"}
    result = snakemake(
        target, "--cores", "1", "--configfile", "cfg.yaml", workdir=tmp_path, env=env, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Nothing to be done" in output
    assert f"CELLxGENE now lists a newer version {VERSION_ID}" in output
    assert f"dataset.source: cellxgene:{VERSION_ID}" in output  # how to move
    assert server.requests == [(f"/curation/v1/datasets/{DATASET_ID}/versions", None)]

    # offline: said, and the run goes on
    server.close()
    result = snakemake(
        target, "--cores", "1", "--configfile", "cfg.yaml", workdir=tmp_path, env=env, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "could not check for a newer version" in output and "Nothing to be done" in output
