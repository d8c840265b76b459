"""Streaming seurat_v3 HVG selection: equal to scanpy's on small data, in row blocks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import rule_settings
from scvi_hub_workflow import h5ad_io
from scvi_hub_workflow.builtin_datasets import simulated_atlas
from scvi_hub_workflow.config import model_settings
from scvi_hub_workflow.hvg import select_hvg, select_hvg_file

HVG = {"flavor": "seurat_v3", "n_top_genes": 60, "batch_aware": True}


@pytest.fixture
def dataset(tmp_path):
    adata = simulated_atlas(n_cells=700, n_genes=200, seed=2)
    adata.layers["counts"] = adata.X.copy()
    path = tmp_path / "dataset.h5ad"
    adata.write_h5ad(path)
    return adata, path


@pytest.mark.parametrize(
    ("setup", "hvg"),
    [
        ({"batch_key": "batch"}, HVG),
        ({"batch_key": None}, HVG),
        ({"batch_key": "batch"}, {**HVG, "batch_aware": False}),
        ({"batch_key": "batch", "layer": "counts"}, {**HVG, "n_top_genes": None}),
        ({"batch_key": "batch"}, {**HVG, "span": 1.0}),  # the Tabula Sapiens recipe's
    ],
)
def test_streaming_seurat_v3_equals_scanpy(tmp_path, monkeypatch, dataset, setup, hvg):
    adata, path = dataset
    entry = {
        "dataset": {"source": "builtin:simulated-atlas"},
        "model": {"class": "SCVI", "setup": setup},
        "hvg": hvg,
    }
    settings = rule_settings(model_settings({"models": {"m": entry}}, "m"), "hvg")
    expected_data, expected = select_hvg(adata, settings)
    monkeypatch.setattr(h5ad_io, "BLOCK_BYTES", 20_000)  # many blocks
    out, table_path = tmp_path / "hvg.h5ad", tmp_path / "hvg.tsv"
    kept, total = select_hvg_file(path, settings, out, table_path)
    table = pd.read_csv(tmp_path / "hvg.tsv", sep="\t", index_col=0)
    assert (kept, total) == (expected_data.n_vars, adata.n_vars)
    assert list(table.columns) == list(expected.columns)
    np.testing.assert_array_equal(table["highly_variable"], expected["highly_variable"])
    for column in ("means", "variances", "variances_norm", "highly_variable_rank"):
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-9, equal_nan=True)
    got = ad.read_h5ad(tmp_path / "hvg.h5ad")
    assert list(got.var_names) == list(expected_data.var_names)
    np.testing.assert_array_equal(got.X.toarray(), expected_data.X.toarray())
    assert got.uns["hvg"]["n_selected"] == expected_data.uns["hvg"]["n_selected"]
    np.testing.assert_array_equal(got.varm["true_log2fc"], expected_data.varm["true_log2fc"])
    if setup.get("layer"):
        assert sp.issparse(got.layers["counts"]) and got.layers["counts"].sum() == got.X.sum()
    assert list(got.obs_names) == list(adata.obs_names)
