"""Integration metrics of a model's latent space: scib-metrics' Benchmarker, model vs PCA.

Definitions in docs/metrics.md ("Integration"). The cells are chosen (labelled cells, a seeded
subsample), their latent means and counts read row by row from the files (never the whole
atlas, never scvi-tools or torch), and both embeddings scored on the same cells. scib-metrics
and jax are imported only inside ``score_embeddings``: no other job pays for them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .h5ad_io import iter_rows, read_frame
from .layout import CLUSTER_COLUMN, RAN, SKIPPED_REASON, TOTAL, TOTAL_PCA, latent_keys
from .settings import ModelSettings

MODEL, BASELINE = "model", "pca"
# scib-metrics' default metrics except kBET per label: measured 54 s for one 1,500-cell
# embedding on 2 cores (jax re-compiles it for every label's cell count), more than the rest of
# the benchmark together (benchmarks/integration.py). BRAS and iLISI measure batch mixing too.
LEFT_OUT_METRICS = {"kbet_per_label": "jax compiles it once per cell type: minutes at 24 types"}
# Aggregate scores, as scib-metrics names them, and ours.
AGGREGATES = {
    "Bio conservation": "bio_conservation",
    "Batch correction": "batch_correction",
    "Total": TOTAL,
}
# PCR comparison scores the batch variance removed relative to the unintegrated embedding,
# which is the PCA baseline itself: the baseline scores 0 by definition, and with it in the
# mean the batch aggregate compares the model's 4 batch metrics with the baseline's 3 and a 0.
PCR_COMPARISON = "PCR comparison"
# Aggregates without it, for the model and the baseline alike.
LIKE_FOR_LIKE = {
    "batch_correction_without_pcr": "batch_correction",
    "total_without_pcr": TOTAL,
}
AGGREGATE_NAMES = (*AGGREGATES.values(), *LIKE_FOR_LIKE)
# scib's weighting of the total
BATCH_WEIGHT, BIO_WEIGHT = 0.4, 0.6


@dataclass(frozen=True)
class Cells:
    """The cells scored: file rows (sorted), their labels and batches, and how they were chosen;
    ``skipped``: why they cannot be scored (None: they can)."""

    rows: np.ndarray
    labels: np.ndarray
    batches: np.ndarray
    record: dict
    skipped: str | None = None


def unmeasurable(
    batches, labels, *, batch_key: str, what: str = "cells", clusters: bool = False
) -> str | None:
    """Why integration cannot be measured on cells with these batches and labels, or None.

    Batch mixing needs at least 2 batches among the scored cells, bio conservation at least 2
    labels: a labelled reference in one batch beside an unlabelled query batch has a single
    batch among its labelled cells. ``clusters``: the labels are clusters of the latent.
    """
    batches, labels = np.asarray(batches, dtype=str), np.asarray(labels, dtype=str)
    n_batches, n_labels = len(np.unique(batches)), len(np.unique(labels))
    if n_batches < 2:
        only = f" ({str(batches[0])!r})" if len(batches) else ""
        return (
            f"integration needs at least 2 batches ({batch_key}) among the cells it scores; "
            f"the {len(batches)} {what} are in {n_batches} batch{only}"
        )
    if n_labels < 2:
        return (
            f"integration needs at least 2 labels among the cells it scores; the "
            f"{len(labels)} {what} have {n_labels}"
        )
    # scib's batch silhouette averages over the labels in 2+ batches (not 1 cell per batch)
    per_label = (batches[labels == label] for label in np.unique(labels))
    if not any(1 < len(np.unique(b)) < len(b) for b in per_label):
        reason = (
            f"integration needs a label found in at least 2 batches ({batch_key}); each label "
            f"of the {len(labels)} {what} is in one batch only"
        )
        if clusters:
            reason += ": these are clusters of the model's latent, which keeps batches apart"
        return reason
    return None


def label_source(labels_key: str | None) -> str:
    """The label source: "labels" (the model's labels_key) or "clusters" (Leiden, the PPC's)."""
    return "labels" if labels_key else "clusters"


def choose_cells(
    obs: pd.DataFrame,
    *,
    batch_key: str,
    labels: pd.Series,
    unlabeled_category: str | None,
    max_cells: int,
    seed: int,
    clusters: bool = False,
) -> Cells:
    """The labelled cells (the unlabeled category left out), subsampled to ``max_cells`` with
    ``seed``; ``labels`` is per cell of ``obs``, in its order."""
    if batch_key not in obs:
        raise KeyError(f"obs has no batch column {batch_key!r} (model.setup.batch_key)")
    if len(labels) != len(obs):
        raise ValueError(f"{len(labels)} labels for {len(obs)} cells")
    label_values = np.asarray(labels, dtype=str)
    if unlabeled_category is None:
        labelled = np.arange(len(obs))
    else:
        labelled = np.flatnonzero(label_values != str(unlabeled_category))
    if len(labelled) > max_cells:
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(labelled, size=max_cells, replace=False))
    else:
        chosen = labelled
    batches = obs[batch_key].astype(str).to_numpy()[chosen]
    chosen_labels = label_values[chosen]
    skipped = unmeasurable(
        batches,
        chosen_labels,
        batch_key=f"model.setup.batch_key {batch_key!r}",
        what="labelled cells" if unlabeled_category is not None else "cells",
        clusters=clusters,
    )
    record = {
        "n_cells_model": len(obs),
        "n_cells_unlabelled": len(obs) - len(labelled),
        "n_cells_labelled": len(labelled),
        "n_cells": len(chosen),
        "max_cells": max_cells,
        "subsampled": len(chosen) < len(labelled),
        "seed": seed,
        "n_batches": len(np.unique(batches)),
        "n_labels": len(np.unique(chosen_labels)),
    }
    return Cells(chosen, chosen_labels, batches, record, skipped)


def read_latent(path: str | os.PathLike, key: str, rows: np.ndarray) -> np.ndarray:
    """Rows of the latent means ``obsm[key]`` of an .h5ad file (h5py: no scvi-tools, no torch)."""
    with h5py.File(path, "r") as f:
        if key not in f.get("obsm", {}):
            raise KeyError(f"{path}: no obsm[{key!r}] (the latent posterior mean)")
        return np.asarray(f["obsm"][key][np.asarray(rows)], dtype=np.float32)


def read_obs(path: str | os.PathLike) -> pd.DataFrame:
    with h5py.File(path, "r") as f:
        return read_frame(f["obs"])


def read_counts(path: str | os.PathLike, rows: np.ndarray, layer: str | None) -> sp.csr_matrix:
    """The count rows of ``X`` (or ``layers[layer]``), read block by block."""
    with h5py.File(path, "r") as f:
        matrix = f["X"] if layer is None else f["layers"][layer]
        return sp.vstack([block for _, block in iter_rows(matrix, rows)], format="csr")


def pca_baseline(counts: sp.spmatrix, n_comps: int, seed: int) -> np.ndarray:
    """The unintegrated embedding: PCA of the log-normalised counts (scanpy normalize_total,
    log1p, pca); at most n_cells - 1 and n_genes - 1 components."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32))
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    n_comps = min(n_comps, adata.n_obs - 1, adata.n_vars - 1)
    sc.pp.pca(adata, n_comps=n_comps, random_state=seed)
    return np.asarray(adata.obsm["X_pca"], dtype=np.float32)


def _exact_neighbours(n_jobs: int):
    """scikit-learn's exact kNN for the Benchmarker: skips pynndescent's numba JIT compile
    (several seconds per process) and is exact."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    def neighbours(x: np.ndarray, k: int):
        distances, indices = NearestNeighbors(n_neighbors=k, n_jobs=n_jobs).fit(x).kneighbors(x)
        return NeighborsResults(indices=indices, distances=distances)

    return neighbours


def score_embeddings(
    embeddings: dict[str, np.ndarray],
    labels: np.ndarray,
    batches: np.ndarray,
    *,
    baseline: str = BASELINE,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """scib-metrics' Benchmarker on every embedding (same cells): metric x embedding, unscaled
    (min-max scaling two embeddings would only say which is larger), with the aggregates.

    Columns: metric, type ("Bio conservation", "Batch correction", "Aggregate score") and one
    per embedding. ``baseline`` is the unintegrated embedding of PCR comparison.
    """
    from .job_env import fast_xla_compile

    fast_xla_compile()
    import anndata as ad
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    obs = pd.DataFrame(
        {"batch": pd.Categorical(batches), "label": pd.Categorical(labels)},
        index=[str(i) for i in range(len(labels))],
    )
    adata = ad.AnnData(obs=obs, obsm={k: np.asarray(v) for k, v in embeddings.items()})
    bench = Benchmarker(
        adata,
        batch_key="batch",
        label_key="label",
        embedding_obsm_keys=list(embeddings),
        bio_conservation_metrics=BioConservation(),
        batch_correction_metrics=BatchCorrection(**dict.fromkeys(LEFT_OUT_METRICS, False)),
        pre_integrated_embedding_obsm_key=baseline,
        n_jobs=n_jobs,
        progress_bar=False,
    )
    bench.prepare(neighbor_computer=_exact_neighbours(n_jobs))
    bench.benchmark()
    results = bench.get_results(min_max_scale=False)
    kinds = results.loc["Metric Type"]
    table = results.drop(index="Metric Type").T.astype(float)
    table.insert(0, "type", kinds)
    table.index.name = "metric"
    table = table.reset_index()
    table.columns.name = None
    table["metric"] = table["metric"].replace(AGGREGATES)
    return with_like_for_like(table[["metric", "type", *embeddings]], list(embeddings))


def batch_metrics(table: pd.DataFrame, *, with_pcr: bool) -> list[str]:
    """The batch-correction metrics of the table, with or without PCR comparison."""
    names = table.loc[table["type"] == "Batch correction", "metric"].tolist()
    return names if with_pcr else [m for m in names if m != PCR_COMPARISON]


def with_like_for_like(table: pd.DataFrame, embeddings: list[str]) -> pd.DataFrame:
    """The table with the aggregates without PCR comparison appended (``LIKE_FOR_LIKE``):
    the mean of the other batch metrics, and the total from it with scib's weights."""
    rows = table.set_index("metric")
    batch = rows.loc[batch_metrics(table, with_pcr=False), embeddings].mean(axis=0)
    total = BATCH_WEIGHT * batch + BIO_WEIGHT * rows.loc["bio_conservation", embeddings]
    extra = pd.DataFrame(
        [
            {"metric": name, "type": "Aggregate score"} | dict(values.items())
            for name, values in (
                ("batch_correction_without_pcr", batch),
                ("total_without_pcr", total),
            )
        ]
    )
    return pd.concat([table, extra], ignore_index=True)


def aggregate_contents(table: pd.DataFrame) -> dict[str, str]:
    """What each aggregate of the table is, in words (integration.json, the card)."""
    bio = table.loc[table["type"] == "Bio conservation", "metric"].tolist()
    batch = batch_metrics(table, with_pcr=True)
    without = batch_metrics(table, with_pcr=False)
    return {
        "bio_conservation": "mean of " + ", ".join(bio),
        "batch_correction": "mean of " + ", ".join(batch),
        TOTAL: f"{BATCH_WEIGHT} x batch_correction + {BIO_WEIGHT} x bio_conservation",
        "batch_correction_without_pcr": "mean of " + ", ".join(without),
        "total_without_pcr": (
            f"{BATCH_WEIGHT} x batch_correction_without_pcr + {BIO_WEIGHT} x bio_conservation"
        ),
        "note": (
            f"{PCR_COMPARISON} measures the batch variance removed relative to the PCA "
            "baseline, so the baseline scores 0 on it by definition; the *_without_pcr "
            "aggregates compare model and baseline on the same metrics"
        ),
    }


def totals(table: pd.DataFrame, embedding: str) -> dict[str, float]:
    """The aggregate scores of one embedding: bio_conservation, batch_correction, total and
    the batch_correction and total without PCR comparison."""
    rows = table.set_index("metric")[embedding]
    return {name: float(rows[name]) for name in AGGREGATE_NAMES}


# integration.tsv's columns
TABLE_COLUMNS = ["metric", "type", MODEL, BASELINE]


def skipped_summary(cells: Cells, *, source: str, key: str, batch_key: str) -> dict:
    """integration.json of a model whose cells cannot be scored: which cells, and why not."""
    return {
        RAN: False,
        SKIPPED_REASON: cells.skipped,
        "label_source": source,
        "labels_key": key,
        "batch_key": batch_key,
        **cells.record,
    }


def integration_summary(
    table: pd.DataFrame, cells: Cells, *, source: str, key: str, batch_key: str, timing: dict
) -> dict:
    """integration.json: how the cells were chosen, both embeddings' scores and the timing."""
    metrics = {
        embedding: dict(zip(table["metric"], map(float, table[embedding]), strict=True))
        for embedding in (MODEL, BASELINE)
    }
    return {
        RAN: True,
        "label_source": source,
        "labels_key": key,
        "batch_key": batch_key,
        **cells.record,
        "baseline": "PCA of the log-normalised HVG counts (normalize_total, log1p)",
        "left_out_metrics": LEFT_OUT_METRICS,
        "aggregates": aggregate_contents(table),
        TOTAL: totals(table, MODEL),
        TOTAL_PCA: totals(table, BASELINE),
        "metrics": metrics,
        "seconds": timing,
    }


def integrate(
    model_data: str | os.PathLike,
    counts_data: str | os.PathLike,
    settings: ModelSettings,
    labels: pd.Series | None = None,
    n_jobs: int = 1,
) -> tuple[dict, pd.DataFrame]:
    """Score the model's latent means (``model_data``: the minified data) and the PCA baseline
    of ``counts_data`` (the HVG counts) on the chosen cells.

    ``labels``: the PPC's clusters (per cell of the model, in order) when the model has no
    labels key. Returns (integration.json, the metric x embedding table).
    """
    setup = settings.model.setup
    batch_key, labels_key, layer = setup.batch_key, setup.labels_key, setup.layer
    latent_key, _ = latent_keys(settings.model.model_class)
    max_cells, seed = settings.criticism.integration_max_cells, settings.train.seed
    start = time.perf_counter()
    obs = read_obs(model_data)
    source = label_source(labels_key)
    if labels_key:
        if labels_key not in obs:
            raise KeyError(f"{model_data}: obs has no labels column {labels_key!r}")
        labels = obs[labels_key]
    cells = choose_cells(
        obs,
        batch_key=batch_key,
        labels=labels,
        unlabeled_category=setup.unlabeled_category if labels_key else None,
        max_cells=max_cells,
        seed=seed,
        clusters=not labels_key,
    )
    if cells.skipped:
        return skipped_summary(
            cells, source=source, key=labels_key or CLUSTER_COLUMN, batch_key=batch_key
        ), pd.DataFrame(columns=TABLE_COLUMNS)
    counts_names = read_obs(counts_data).index
    if not np.array_equal(np.asarray(counts_names), np.asarray(obs.index)):
        raise ValueError(f"{counts_data} and {model_data} do not hold the same cells in order")
    latent = read_latent(model_data, latent_key, cells.rows)
    baseline = pca_baseline(read_counts(counts_data, cells.rows, layer), latent.shape[1], seed)
    read_s = time.perf_counter() - start
    table = score_embeddings(
        {MODEL: latent, BASELINE: baseline}, cells.labels, cells.batches, n_jobs=n_jobs
    )
    timing = {"read_and_pca": read_s, "scib": time.perf_counter() - start - read_s}
    summary = integration_summary(
        table,
        cells,
        source=source,
        key=labels_key or CLUSTER_COLUMN,
        batch_key=batch_key,
        timing=timing,
    )
    return summary, table


def skipped(reason: str, settings: ModelSettings) -> tuple[dict, pd.DataFrame]:
    """integration.json and its (empty) table for a model whose data allow no measurement."""
    summary = {RAN: False, SKIPPED_REASON: reason, "batch_key": settings.model.setup.batch_key}
    return summary, pd.DataFrame(columns=["metric", "type", "model", "pca"])
