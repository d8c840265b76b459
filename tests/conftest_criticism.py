"""Fixtures for the criticism tests: a tiny trained, minified SCVI model and its counts on disk.

Loaded with ``pytest_plugins = ["conftest_criticism"]`` from the criticism test modules.
"""

from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scvi_hub_workflow import training


def simulate_counts(n_cells=360, n_genes=80, n_labels=4, n_batches=2, seed=0) -> anndata.AnnData:
    """Negative-binomial counts with per-label marker genes and a mild batch effect."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    base = rng.gamma(0.8, 1.0, n_genes)
    label_effect = np.exp(rng.normal(0, 0.3, (n_labels, n_genes)))
    for k in range(n_labels):  # a handful of strong markers per label
        label_effect[k, rng.choice(n_genes, 6, replace=False)] *= 6
    batch_effect = np.exp(rng.normal(0, 0.1, (n_batches, n_genes)))
    size = rng.lognormal(0, 0.3, n_cells)[:, None]
    mean = base * label_effect[labels] * batch_effect[batches] * size
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{k}" for k in labels]),
            "batch": pd.Categorical([f"b{b}" for b in batches]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
    return anndata.AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var)


def build_minified_model(adata: anndata.AnnData, out: Path, *, layer=None, max_epochs=3) -> Path:
    """Train a tiny SCVI model, write counts to ``out/hvg.h5ad`` and the minified model to
    ``out/minified`` with the model's train/validation split in ``obs["split"]``."""
    import scvi

    scvi.settings.seed = 0
    adata = adata.copy()
    if layer is not None:
        adata.layers[layer] = adata.X.copy()
        adata.X = sparse.csr_matrix(adata.shape, dtype=np.float32)
    adata.write_h5ad(out / "hvg.h5ad")
    scvi.model.SCVI.setup_anndata(adata, layer=layer, batch_key="batch", labels_key="cell_type")
    model = scvi.model.SCVI(adata, n_latent=5, n_hidden=32)
    model.train(max_epochs=max_epochs, train_size=0.8, enable_progress_bar=False)
    # The workflow's own steps: record the split, then minify (train and minify rules).
    training.record_split(model, adata)
    training.minify(model)
    model.save(out / "minified", save_anndata=True, overwrite=True)
    return out


@pytest.fixture(scope="session")
def minified_model(tmp_path_factory) -> Path:
    """Directory with ``minified/`` (model.pt, adata.h5ad) and ``hvg.h5ad`` (observed counts)."""
    return build_minified_model(simulate_counts(), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def minified_model_with_layer(tmp_path_factory) -> Path:
    """Same, with the counts in ``layers["counts"]`` of hvg.h5ad and an empty X."""
    out = tmp_path_factory.mktemp("model_layer")
    return build_minified_model(simulate_counts(n_cells=200, seed=1), out, layer="counts")
