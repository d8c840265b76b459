"""The groups of the DE benchmark: the labels when there are some, else Leiden clusters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from ..layout import latent_keys


@dataclass(frozen=True)
class Grouping:
    """Cells' group codes (-1: in no tested group) and how the groups were chosen."""

    codes: np.ndarray
    names: list[str]
    grouping: str  # "labels" or "clusters"
    key: str


def label_groups(
    labels: pd.Series, *, unlabeled_category: str | None, min_cells: int, key: str
) -> Grouping:
    """Groups from a label column, without the unlabeled category and groups below min_cells."""
    labels = labels.astype(str).to_numpy()
    names, counts = np.unique(labels, return_counts=True)
    keep = [
        name
        for name, n in zip(names, counts, strict=True)
        if n >= min_cells and name != unlabeled_category
    ]
    lookup = {name: i for i, name in enumerate(keep)}
    codes = np.array([lookup.get(label, -1) for label in labels], dtype=np.int64)
    return Grouping(codes, keep, "labels", key)


# Neighbours per cell in the clustering graph (scanpy's default for sc.pp.neighbors).
N_NEIGHBORS = 15


def knn_graph(latent: np.ndarray, n_neighbors: int = N_NEIGHBORS) -> sparse.csr_matrix:
    """Symmetric, unweighted kNN graph of the rows of ``latent`` (Euclidean, exact).

    scikit-learn's exact tree/brute-force search instead of scanpy's pynndescent, whose numba
    kernels cost a JIT compile of several seconds in every process; exact search is fast
    enough for a low-dimensional latent space.
    """
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float32)
    k = min(n_neighbors, len(latent) - 1)
    graph = NearestNeighbors(n_neighbors=k).fit(latent).kneighbors_graph(mode="connectivity")
    return graph.maximum(graph.T).tocsr()  # an edge when either cell is a neighbour of the other


def cluster_groups(latent: np.ndarray, *, resolution: float, min_cells: int, seed: int) -> Grouping:
    """Leiden clusters (igraph flavour, seeded) of the kNN graph of the latent means, when there
    are no labels."""
    import anndata
    import scanpy as sc

    adata = anndata.AnnData(X=np.asarray(latent, dtype=np.float32))
    sc.tl.leiden(
        adata,
        adjacency=knn_graph(latent),
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        use_weights=False,
        random_state=seed,
    )
    grouping = label_groups(
        adata.obs["leiden"], unlabeled_category=None, min_cells=min_cells, key="leiden"
    )
    return Grouping(grouping.codes, grouping.names, "clusters", "leiden")


def latent_means(model) -> np.ndarray:
    """The latent posterior means stored in the minified AnnData by the minify rule."""
    key, _ = latent_keys(type(model).__name__)
    if key not in model.adata.obsm:
        raise KeyError(f"no {key!r} in obsm of the minified AnnData")
    return np.asarray(model.adata.obsm[key])


def resolve_groups(
    model,
    *,
    labels_key: str | None,
    unlabeled_category: str | None,
    min_cells: int,
    cluster_resolution: float,
    seed: int = 0,
) -> Grouping:
    """Label groups when ``labels_key`` is given, else Leiden clusters of the latent space."""
    if labels_key is not None:
        return label_groups(
            model.adata.obs[labels_key],
            unlabeled_category=unlabeled_category,
            min_cells=min_cells,
            key=labels_key,
        )
    return cluster_groups(
        latent_means(model), resolution=cluster_resolution, min_cells=min_cells, seed=seed
    )
