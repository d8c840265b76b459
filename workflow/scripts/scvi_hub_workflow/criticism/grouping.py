"""The groups of the DE benchmark: the labels when there are some, else Leiden clusters."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from ..layout import CLUSTER_COLUMN, latent_keys
from ..settings import ModelSettings

# DE tests each group against the rest: fewer groups leave no "rest" to compare with.
MIN_DE_GROUPS = 2


class GroupsError(ValueError):
    """The DE benchmark cannot run as configured; the message names the key and column."""


@dataclass(frozen=True)
class Grouping:
    """Cells' group codes (-1: in no tested group) and how the groups were chosen.

    ``labels`` is every cell's label or cluster; ``left_out`` the groups under ``min_cells``
    with their sizes (the unlabelled category is never a group).
    """

    codes: np.ndarray
    names: list[str]
    grouping: str  # "labels" or "clusters"
    key: str
    labels: np.ndarray
    min_cells: int
    left_out: dict[str, int]

    @property
    def absent_reason(self) -> str | None:
        """Why there is no DE benchmark, or None when there is one."""
        if len(self.names) >= MIN_DE_GROUPS:
            return None
        kind = "cell types" if self.grouping == "labels" else "Leiden clusters"
        found = f"{len(self.names)} of the {kind} in {self.key!r}"
        return (
            f"{found} {'has' if len(self.names) == 1 else 'have'} at least {self.min_cells} "
            f"cells (criticism.min_cells); testing one group against the rest needs at least "
            f"{MIN_DE_GROUPS}"
        )

    def cells(self, obs_names: Sequence[str]) -> pd.DataFrame:
        """Every cell's group and whether the DE benchmark tested it."""
        return pd.DataFrame(
            {"cell": list(obs_names), self.key: self.labels, "in_de": self.codes >= 0}
        )


def label_groups(
    labels: pd.Series, *, unlabeled_category: str | None, min_cells: int, key: str
) -> Grouping:
    """Groups from a label column, without the unlabeled category and groups below min_cells."""
    labels = labels.astype(str).to_numpy()
    names, counts = np.unique(labels, return_counts=True)
    sizes = {
        str(name): int(n)
        for name, n in zip(names, counts, strict=True)
        if name != unlabeled_category
    }
    keep = [name for name, n in sizes.items() if n >= min_cells]
    left_out = {name: n for name, n in sizes.items() if n < min_cells}
    lookup = {name: i for i, name in enumerate(keep)}
    codes = np.array([lookup.get(label, -1) for label in labels], dtype=np.int64)
    return Grouping(codes, keep, "labels", key, labels, min_cells, left_out)


def check_label_groups(grouping: Grouping) -> None:
    """Before training: refuse a criticism.min_cells that leaves fewer than two of several cell
    types (one cell type in the data is no error: the DE section then says why it is absent)."""
    if grouping.absent_reason and len(grouping.names) + len(grouping.left_out) >= MIN_DE_GROUPS:
        sizes = ", ".join(f"{g!r} ({n})" for g, n in sorted(grouping.left_out.items()))
        raise GroupsError(
            f"criticism.min_cells is {grouping.min_cells}, but only {len(grouping.names)} cell "
            f"type(s) of obs column {grouping.key!r} (model.setup.labels_key) have that many "
            f"cells; the others: {sizes}. Lower criticism.min_cells to at most the size of the "
            "second largest cell type"
        )


def read_obs(path: str | os.PathLike) -> pd.DataFrame:
    """The obs table of an ``.h5ad`` file, without reading its matrices."""
    import anndata

    with h5py.File(path, "r") as handle:
        return anndata.io.read_elem(handle["obs"])


def plan_groups(obs: pd.DataFrame, settings: ModelSettings) -> dict:
    """What the DE benchmark will compare, from the obs table before training (labels only:
    clusters exist after training)."""
    setup, min_cells = settings.model.setup, settings.criticism.min_cells
    if setup.labels_key is None:
        return {"grouping": "clusters", "min_cells": min_cells}
    grouping = label_groups(
        obs[setup.labels_key],
        unlabeled_category=setup.unlabeled_category,
        min_cells=min_cells,
        key=setup.labels_key,
    )
    check_label_groups(grouping)
    return {
        "grouping": "labels",
        "groups_key": grouping.key,
        "min_cells": grouping.min_cells,
        "groups": grouping.names,
        "left_out": grouping.left_out,
        "absent_reason": grouping.absent_reason,
    }


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
        adata.obs[CLUSTER_COLUMN], unlabeled_category=None, min_cells=min_cells, key=CLUSTER_COLUMN
    )
    return dataclasses.replace(grouping, grouping="clusters")


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
