"""The built-in datasets (`dataset.source: builtin:<name>`): generated, no download needed."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .compat import import_scvi
from .layout import BUILTIN_DATASETS, TRUTH_COLUMN
from .rule_io import atomic_path


def synthetic_iid(seed: int = 0) -> ad.AnnData:
    """scvi-tools' synthetic IID counts, shaped as the SCVI reference card (400 x 100 genes)."""
    scvi = import_scvi()
    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=200, n_genes=100, n_batches=2, n_labels=3)
    # Keep RNA only: the protein and accessibility parts are not used by SCVI/SCANVI.
    for key in list(adata.obsm):
        del adata.obsm[key]
    adata.X = sp.csr_matrix(adata.X.astype(np.float32))
    adata.uns = {"source": "scvi.data.synthetic_iid(batch_size=200, n_genes=100)"}
    return adata


def simulated_atlas(
    n_cells: int = 1500,
    n_genes: int = 800,
    n_cell_types: int = 6,
    n_batches: int = 3,
    n_markers: int = 20,
    unlabeled_fraction: float = 0.1,
    seed: int = 0,
) -> ad.AnnData:
    """A labelled negative-binomial simulation with batch effects and planted DE genes.

    Each cell type up-regulates `n_markers` genes (log2 fold change 1.5-3) and down-regulates
    half as many; each batch scales every gene by a log-normal factor (sd 0.3); library sizes
    are log-normal. The truth is kept with the data: `obs[TRUTH_COLUMN]`,
    `var["de_up_<type>"]`, `var["de_down_<type>"]` and `varm["true_log2fc"]`. A fraction of
    cells get the label `unknown`, as in a partly annotated atlas.
    """
    rng = np.random.default_rng(seed)
    types = [f"type_{i}" for i in range(n_cell_types)]
    batches = [f"batch_{i}" for i in range(n_batches)]
    base = rng.lognormal(mean=-1.0, sigma=1.2, size=n_genes)
    log2fc = np.zeros((n_cell_types, n_genes))
    up = np.zeros((n_cell_types, n_genes), dtype=bool)
    down = np.zeros((n_cell_types, n_genes), dtype=bool)
    for t in range(n_cell_types):
        chosen = rng.choice(n_genes, size=n_markers + n_markers // 2, replace=False)
        up[t, chosen[:n_markers]] = True
        down[t, chosen[n_markers:]] = True
        log2fc[t, chosen[:n_markers]] = rng.uniform(1.5, 3.0, n_markers)
        log2fc[t, chosen[n_markers:]] = -rng.uniform(1.5, 3.0, n_markers // 2)
    batch_effect = rng.lognormal(0.0, 0.3, size=(n_batches, n_genes))

    cell_type = rng.choice(n_cell_types, size=n_cells, p=_uneven_proportions(n_cell_types, rng))
    batch = rng.integers(n_batches, size=n_cells)
    library = rng.lognormal(mean=np.log(1500), sigma=0.35, size=n_cells)
    mean = base[None, :] * 2.0 ** log2fc[cell_type] * batch_effect[batch]
    mean = mean / mean.sum(axis=1, keepdims=True) * library[:, None]
    theta = 5.0  # NB inverse dispersion, typical of UMI data
    counts = rng.poisson(rng.gamma(shape=theta, scale=mean / theta)).astype(np.float32)

    labels = np.array(types, dtype=object)[cell_type]
    masked = rng.random(n_cells) < unlabeled_fraction
    labels = np.where(masked, "unknown", labels)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(labels),
            TRUTH_COLUMN: pd.Categorical(np.array(types)[cell_type], categories=types),
            "batch": pd.Categorical(np.array(batches)[batch], categories=batches),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{i}" for i in range(n_genes)])
    for t, name in enumerate(types):
        var[f"de_up_{name}"] = up[t]
        var[f"de_down_{name}"] = down[t]
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.varm["true_log2fc"] = log2fc.T
    adata.uns["simulation"] = {
        "cell_types": types,
        "batches": batches,
        "n_markers": n_markers,
        "nb_theta": theta,
        "seed": seed,
    }
    return adata


# The obsm entry of the simulated protein counts (scvi-tools' own name in its examples).
PROTEIN_OBSM_KEY = "protein_expression"


def simulated_citeseq(
    n_cells: int = 1000,
    n_genes: int = 400,
    n_proteins: int = 24,
    n_cell_types: int = 5,
    n_batches: int = 2,
    seed: int = 0,
) -> ad.AnnData:
    """CITE-seq: `simulated_atlas`'s RNA (every cell labelled) plus antibody counts of the same
    cells in `obsm[PROTEIN_OBSM_KEY]`, a DataFrame whose columns are the protein names.

    Each protein has a background in every cell (ambient antibody, log-normal per protein,
    scaled per batch) and a foreground 5-30 times higher in the cell types that express it
    (each type at least two proteins); counts are negative binomial (inverse dispersion 10).
    The truth is kept in `uns["simulation"]`: `protein_expressed` (cell types x proteins).
    """
    adata = simulated_atlas(
        n_cells=n_cells,
        n_genes=n_genes,
        n_cell_types=n_cell_types,
        n_batches=n_batches,
        unlabeled_fraction=0.0,
        seed=seed,
    )
    rng = np.random.default_rng([seed, 1])
    expressed = rng.random((n_cell_types, n_proteins)) < 0.25
    for t in range(n_cell_types):
        expressed[t, rng.choice(n_proteins, size=2, replace=False)] = True
    background = rng.lognormal(np.log(20.0), 0.5, n_proteins)
    batch_scale = rng.lognormal(0.0, 0.25, size=(n_batches, n_proteins))
    foreground = background * rng.uniform(5.0, 30.0, n_proteins)
    cell_type = adata.obs[TRUTH_COLUMN].cat.codes.to_numpy()
    batch = adata.obs["batch"].cat.codes.to_numpy()
    mean = (background + expressed[cell_type] * foreground) * batch_scale[batch]
    theta = 10.0
    counts = rng.poisson(rng.gamma(shape=theta, scale=mean / theta)).astype(np.float32)
    names = [f"protein_{i}" for i in range(n_proteins)]
    adata.obsm[PROTEIN_OBSM_KEY] = pd.DataFrame(counts, index=adata.obs_names, columns=names)
    adata.uns["simulation"] |= {
        "protein_names": names,
        "protein_expressed": expressed,
        "protein_nb_theta": theta,
    }
    return adata


def _uneven_proportions(n: int, rng: np.random.Generator) -> np.ndarray:
    # Real tissues have common and rare types; DE on a rare type is the hard case.
    weights = rng.uniform(0.3, 1.0, n) * np.linspace(2.0, 0.5, n)
    return weights / weights.sum()


BUILTINS = dict(
    zip(BUILTIN_DATASETS, (synthetic_iid, simulated_atlas, simulated_citeseq), strict=True)
)


def write_builtin(name: str, path: str | Path) -> None:
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}")
    adata = BUILTINS[name]()
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
