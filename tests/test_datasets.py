"""Built-in data, checksummed downloads, and validation of what was read."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scvi_hub_workflow import datasets
from scvi_hub_workflow.config import model_settings, step_settings
from scvi_hub_workflow.datasets import DatasetError, prepare_dataset


def settings_for(counts: str = "X", **setup):
    cfg = {
        "models": {
            "m": {
                "dataset": {"source": "builtin:synthetic-iid", "counts": counts},
                "model": {"class": "SCVI", "setup": setup},
            }
        }
    }
    return step_settings(model_settings(cfg, "m"), "dataset")


def small_adata(x=None) -> ad.AnnData:
    x = np.array([[0, 1, 2], [3, 0, 1], [1, 1, 0]], dtype=np.float32) if x is None else x
    obs = pd.DataFrame({"batch": ["a", "b", "a"], "size": [1.0, 2.0, 0.5]}, index=list("xyz"))
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=["g1", "g2", "g3"]))


def test_synthetic_iid_has_the_reference_card_shape():
    adata = datasets.synthetic_iid()
    assert adata.shape == (400, 100)
    assert sp.issparse(adata.X) and np.all(adata.X.data == np.round(adata.X.data))
    assert not adata.obsm


def test_simulated_atlas_keeps_its_truth_and_the_markers_are_real():
    adata = datasets.simulated_atlas(n_cells=600, n_genes=200, seed=1)
    truth = adata.obs["true_cell_type"]
    assert set(adata.obs["cell_type"].cat.categories) == set(truth.cat.categories) | {"unknown"}
    assert 0 < (adata.obs["cell_type"] == "unknown").mean() < 0.25
    assert adata.obs["batch"].nunique() == 3
    x = adata.X.toarray()
    norm = x / x.sum(1, keepdims=True)
    for cell_type in adata.uns["simulation"]["cell_types"]:
        up = adata.var[f"de_up_{cell_type}"].to_numpy()
        inside = norm[(truth == cell_type).to_numpy()][:, up].mean(0)
        outside = norm[(truth != cell_type).to_numpy()][:, up].mean(0)
        assert np.median(inside / outside) > 2
    assert adata.varm["true_log2fc"].shape == (200, 6)


def test_prepare_dataset_writes_counts_in_x(tmp_path):
    source = tmp_path / "in.h5ad"
    small_adata().write_h5ad(source)
    summary = prepare_dataset(source, settings_for(batch_key="batch"), tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert summary["n_cells"] == 3 and summary["n_genes"] == 3
    assert out.obs["batch"].dtype.name == "category"
    np.testing.assert_array_equal(out.X.toarray(), small_adata().X.toarray())


def test_counts_from_raw_as_cellxgene_files_have_them(tmp_path):
    adata = small_adata()
    adata.raw = adata.copy()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()))  # normalised X, counts in raw
    source = tmp_path / "in.h5ad"
    adata.write_h5ad(source)
    settings = settings_for()
    with pytest.raises(DatasetError, match="counts are not integers"):
        prepare_dataset(source, settings, tmp_path / "out.h5ad")
    prepare_dataset(source, settings_for(counts="raw.X"), tmp_path / "out.h5ad")
    assert ad.read_h5ad(tmp_path / "out.h5ad").X.sum() == small_adata().X.sum()


def test_counts_from_a_layer_and_setup_layer_kept(tmp_path):
    adata = small_adata()
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(adata.X.toarray() / 3)
    source = tmp_path / "in.h5ad"
    adata.write_h5ad(source)
    settings = settings_for(counts="layers/counts", layer="counts")
    prepare_dataset(source, settings, tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.layers["counts"].sum() == small_adata().X.sum()
    with pytest.raises(DatasetError, match="layer 'missing'"):
        missing = settings_for(counts="layers/missing", layer="counts")
        prepare_dataset(source, missing, tmp_path / "out2.h5ad")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[0, 1.5, 2], [3, 0, 1], [1, 1, 0]]), "counts are not integers"),
        (np.array([[0, -1, 2], [3, 0, 1], [1, 1, 0]]), "negative values"),
        (np.array([[0, np.nan, 2], [3, 0, 1], [1, 1, 0]]), "NaN"),
    ],
)
def test_bad_counts_are_refused_with_model_and_file(tmp_path, x, message):
    source = tmp_path / "in.h5ad"
    small_adata(x.astype(np.float32)).write_h5ad(source)
    with pytest.raises(DatasetError, match=message) as error:
        prepare_dataset(source, settings_for(), tmp_path / "out.h5ad")
    assert "model 'm'" in str(error.value) and str(source) in str(error.value)
    assert not (tmp_path / "out.h5ad").exists()


def test_missing_or_bad_columns_name_column_and_key(tmp_path):
    source = tmp_path / "in.h5ad"
    small_adata().write_h5ad(source)
    with pytest.raises(DatasetError, match=r"'cell_type' \(model.setup.labels_key\) not found"):
        prepare_dataset(source, settings_for(labels_key="cell_type"), tmp_path / "o.h5ad")
    with pytest.raises(DatasetError, match=r"'batch' \(model.setup.continuous_covariate_keys\)"):
        prepare_dataset(
            source, settings_for(continuous_covariate_keys=["batch"]), tmp_path / "o.h5ad"
        )
    prepare_dataset(source, settings_for(size_factor_key="size"), tmp_path / "o.h5ad")


def test_not_an_h5ad_file(tmp_path):
    source = tmp_path / "in.h5ad"
    source.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .h5ad"):
        prepare_dataset(source, settings_for(), tmp_path / "out.h5ad")


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
        datasets.download(server.url, target, hashlib.sha256(payload).hexdigest(), backoff_s=0)
        assert target.read_bytes() == payload
    finally:
        server.close()


def test_download_retries_transient_errors(tmp_path, payload):
    server = _Server(payload, failures=2)
    try:
        target = tmp_path / "x.h5ad"
        datasets.download(server.url, target, hashlib.sha256(payload).hexdigest(), backoff_s=0)
        assert server.requests == 3 and target.read_bytes() == payload
    finally:
        server.close()


def test_download_checksum_mismatch_leaves_nothing(tmp_path, payload):
    server = _Server(payload)
    try:
        target = tmp_path / "x.h5ad"
        with pytest.raises(DatasetError, match="does not match the configured sha256"):
            datasets.download(server.url, target, "0" * 64, backoff_s=0)
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()


def test_download_client_error_is_not_retried(tmp_path, payload):
    server = _Server(payload, failures=10, status=404)
    try:
        with pytest.raises(DatasetError, match="HTTP 404"):
            datasets.download(server.url, tmp_path / "x.h5ad", "0" * 64, backoff_s=0)
        assert server.requests == 1 and list(tmp_path.iterdir()) == []
    finally:
        server.close()
