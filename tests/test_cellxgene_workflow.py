"""`cellxgene:<id>` with a tissue subset, end to end, against a loopback curation API."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from cellxgene_server import CellxgeneServer, Version
from conftest import snakemake
from scvi_hub_workflow.builtin_datasets import simulated_atlas

VERSION_ID = "5e1d2c3b-0000-4000-8000-0000000a11a5"
DATASET_ID = "9f8e7d6c-0000-4000-8000-0000000a11a5"


def cellxgene_shaped(path) -> None:
    """A CELLxGENE-shaped file: counts in raw.X, normalised X, Ensembl ids, feature_name."""
    adata = simulated_atlas(n_cells=900, n_genes=80, seed=3)
    rng = np.random.default_rng(0)
    adata.obs["tissue"] = pd.Categorical(rng.choice(["lung", "liver", "salivary gland"], 900))
    adata.obs["donor_id"] = adata.obs["batch"].astype(str)
    adata.var["feature_name"] = adata.var_names.str.upper()
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    for key in list(adata.varm):
        del adata.varm[key]
    adata.raw = adata.copy()
    counts = adata.X.toarray()
    adata.X = sp.csr_matrix(np.log1p(counts / counts.sum(1, keepdims=True) * 1e4))
    adata.write_h5ad(path)


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "atlas.h5ad"
    cellxgene_shaped(path)
    payload = path.read_bytes()
    server = CellxgeneServer([Version(DATASET_ID, VERSION_ID, payload)])
    server.drop_after = len(payload) // 2  # the first transfer breaks off half-way
    yield server, payload
    server.close()


@pytest.mark.slow
def test_cellxgene_source_with_a_tissue_subset_to_a_loadable_hub_folder(tmp_path, served):
    server, payload = served
    cfg = {
        "models": {
            "gland": {
                "tissues": ["salivary gland"],
                "dataset": {
                    "source": f"cellxgene:{DATASET_ID}",
                    "counts": "raw.X",
                    "subset": {"tissue": "salivary gland"},
                },
                "model": {
                    "class": "SCVI",
                    "params": {"n_hidden": 16, "n_latent": 4},
                    "setup": {"batch_key": "donor_id"},
                },
                "hvg": {"n_top_genes": 50},
                "train": {"max_epochs": 2, "accelerator": "cpu"},
                "criticism": {"n_samples": 1, "min_cells": 5},
            }
        }
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {"CELLXGENE_API_URL": server.base, "NO_PROXY": "127.0.0.1,localhost"}
    result = snakemake(
        "--cores", "2", "--configfile", str(tmp_path / "cfg.yaml"), workdir=tmp_path, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    assert server.file_requests()[:2] == [None, f"bytes={len(payload) // 2}-"]  # resumed
    summary = json.loads((tmp_path / "results/gland/dataset.json").read_text())
    resolved = summary["resolved"]
    assert resolved["dataset_version_id"] == VERSION_ID and resolved["newest_of_dataset"]
    assert resolved["url"] == f"{server.base}/files/{VERSION_ID}.h5ad"
    assert resolved["size"] == len(payload)
    assert resolved["sha256"] == hashlib.sha256(payload).hexdigest()
    log = (tmp_path / "logs/cellxgene" / f"{DATASET_ID}.log").read_text()
    assert f"newest version {VERSION_ID}" in log and "ETA" in log

    from scvi.hub import HubModel

    # scvi-tools 1.4.2 GETs a metadata training_data_url in full on every HubModel(...): the
    # default hub folder names none, so loading it makes no network request at all
    with no_network() as attempts:
        hub = HubModel(str(tmp_path / "results/gland/hub"))
        model = hub.model
    assert attempts == []
    assert model.adata.n_obs == summary["n_cells"] < 900
    assert set(model.adata.var_names) <= {f"ENSG{i:011d}" for i in range(80)}
    assert hub.metadata.training_data_url is None
    card = (tmp_path / "results/gland/hub/README.md").read_text()
    assert "- tissue:salivary gland" in card
    # instead, the card names the source, its version and the subset
    assert f"cellxgene:{DATASET_ID}" in card and VERSION_ID in card
    assert "tissue: salivary gland" in card


@contextlib.contextmanager
def no_network():
    """Every socket connection attempted inside is recorded and refused."""
    attempts = []
    original = socket.socket.connect

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"no network in this test: connect to {address}")

    socket.socket.connect = refuse
    try:
        yield attempts
    finally:
        socket.socket.connect = original


def test_unknown_cellxgene_id_stops_the_download_naming_it(tmp_path, served):
    server, _ = served
    cfg = {
        "models": {
            "m": {
                "dataset": {"source": "cellxgene:0000-nope", "counts": "raw.X"},
                "model": {"class": "SCVI"},
            }
        }
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {"CELLXGENE_API_URL": server.base, "NO_PROXY": "127.0.0.1,localhost"}
    result = snakemake(
        "results/m/dataset.json",
        "--cores",
        "1",
        "--configfile",
        str(tmp_path / "cfg.yaml"),
        workdir=tmp_path,
        env=env,
    )
    assert result.returncode != 0
    log = (tmp_path / "logs/cellxgene/0000-nope.log").read_text()
    assert "cellxgene:0000-nope" in log and "HTTP 404" in log
    assert not (tmp_path / "resources/cellxgene/0000-nope.h5ad").exists()
