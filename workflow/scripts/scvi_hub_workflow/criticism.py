"""Streaming posterior predictive check: criticism metrics at atlas scale.

scvi-tools' ``PosteriorPredictiveCheck`` keeps every sampled count of every cell and gene in
memory. Here posterior samples are drawn minibatch by minibatch and only what the metrics need is
kept: per-cell and per-gene sums and sums of squares (coefficient of variation), per-group sums of
log expression (fold changes), and the non-zeros of the log-normalised data in a disk-backed,
gene-chunked store (Wilcoxon ranks need all cells of a gene). Observed counts are read from the
``.h5ad`` in the same cell chunks, so memory stays flat in the number of cells.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from scvi_hub_workflow import metrics
from scvi_hub_workflow.wilcoxon import (
    BYTES_PER_NONZERO,
    DEResult,
    de_result,
    gene_chunks,
    pack_keys,
    rank_sums_from_keys,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
GENE_SPLITS = ("all", "train", "validation")
DEFAULT_MEMORY_BUDGET = 512 * 2**20


# --- inputs --------------------------------------------------------------------------------


def load_minified_model(model_dir: str | os.PathLike):
    """Load the saved scvi-tools model (SCVI, SCANVI, ...) whose class is named in model.pt."""
    import scvi
    import torch

    saved = torch.load(Path(model_dir) / "model.pt", map_location="cpu", weights_only=False)
    model_name = saved["attr_dict"]["registry_"]["model_name"]
    model_class = getattr(scvi.model, model_name)
    return model_class.load(str(model_dir), accelerator="auto")


class ObservedCounts:
    """Cell-chunk reader of a count matrix (``X`` or ``layers[layer]``) in an ``.h5ad`` file.

    Reads only the rows asked for; works for CSR-encoded and dense matrices.
    """

    def __init__(self, path: str | os.PathLike, layer: str | None = None):
        self._file = h5py.File(path, "r")
        self._matrix = self._file["X"] if layer is None else self._file["layers"][layer]
        encoding = self._matrix.attrs.get("encoding-type", "array")
        if isinstance(self._matrix, h5py.Group) and encoding != "csr_matrix":
            raise ValueError(f"counts must be CSR or dense, not {encoding!r}")
        self.is_sparse = isinstance(self._matrix, h5py.Group)
        self.shape = tuple(
            int(n) for n in (self._matrix.attrs["shape"] if self.is_sparse else self._matrix.shape)
        )

    def obs_names(self) -> pd.Index:
        import anndata

        return pd.Index(anndata.io.read_elem(self._file["obs"]).index)

    def dense_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a dense float32 block (one minibatch, never the whole matrix)."""
        if not self.is_sparse:
            return np.asarray(self._matrix[start:stop], dtype=np.float32)
        indptr = self._matrix["indptr"][start : stop + 1]
        lo, hi = int(indptr[0]), int(indptr[-1])
        block = sparse.csr_matrix(
            (self._matrix["data"][lo:hi], self._matrix["indices"][lo:hi], indptr - lo),
            shape=(stop - start, self.shape[1]),
        )
        return block.toarray().astype(np.float32, copy=False)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ObservedCounts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cell_splits(model) -> np.ndarray:
    """The model's own train/validation/test label per cell, from ``obs["split"]``."""
    if "split" not in model.adata.obs:
        raise KeyError("the minified AnnData has no obs['split'] (the model's data split)")
    return model.adata.obs["split"].astype(str).to_numpy()


# --- posterior samples ---------------------------------------------------------------------


def posterior_predictive_blocks(
    model, *, n_samples: int, batch_size: int, seed: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, samples)`` for consecutive cell minibatches, in cell order;
    ``samples`` is (n_samples, cells, genes) float32 drawn on the model's device."""
    import torch

    torch.manual_seed(seed)
    n_cells = model.adata.n_obs
    loader = model._make_data_loader(
        adata=model.adata, indices=np.arange(n_cells), batch_size=batch_size, shuffle=False
    )
    model.module.eval()
    start = 0
    with torch.inference_mode():
        for tensors in loader:
            drawn = model.module.sample(tensors, n_samples=n_samples)
            # scvi returns (cells, genes) for one sample, else (cells, genes, samples)
            drawn = drawn[None] if n_samples == 1 else drawn.permute(2, 0, 1)
            block = drawn.to(torch.float32).contiguous().numpy()
            stop = start + block.shape[1]
            yield start, stop, block
            start = stop


# --- accumulators --------------------------------------------------------------------------


class CoefficientOfVariation:
    """Accumulates cell-wise and gene-wise CVs of observed counts and posterior samples."""

    def __init__(self, splits: np.ndarray, n_samples: int, n_genes: int):
        self.splits = splits
        n_cells = len(splits)
        self.model_cell_cv = np.zeros(n_cells)
        self.observed_cell_cv = np.zeros(n_cells)
        # gene-wise sums of x and x² per (source, split, gene); source 0 is observed
        self.gene_sums = np.zeros((1 + n_samples, len(GENE_SPLITS), 2, n_genes))
        self.n_samples = n_samples

    def add(self, start: int, stop: int, observed: np.ndarray, samples: np.ndarray) -> None:
        split = self.splits[start:stop]
        membership = np.stack([np.ones(len(split), bool)] + [split == s for s in SPLITS])
        membership = membership.astype(np.float64)
        for source, block in enumerate([observed, *samples]):
            block = block.astype(np.float64)
            squares = block * block
            cell_cv = metrics.cv_from_moments(block.sum(1), squares.sum(1), block.shape[1])
            if source == 0:
                self.observed_cell_cv[start:stop] = cell_cv
            else:
                self.model_cell_cv[start:stop] += cell_cv / self.n_samples
            self.gene_sums[source, :, 0] += membership @ block
            self.gene_sums[source, :, 1] += membership @ squares

    def result(self) -> dict:
        cell_wise = {}
        for split in SPLITS:
            mask = self.splits == split
            cell_wise[split] = metrics.compare_cv(
                self.model_cell_cv[mask], self.observed_cell_cv[mask]
            ) | {"n_cells": int(mask.sum())}
        gene_wise = {}
        for i, split in enumerate(GENE_SPLITS):
            n = len(self.splits) if split == "all" else int((self.splits == split).sum())
            if n == 0:  # no cells in this split: nothing to compare
                gene_wise[split] = metrics.compare_cv(np.empty(0), np.empty(0)) | {"n_genes": 0}
                continue
            cvs = metrics.cv_from_moments(self.gene_sums[:, i, 0], self.gene_sums[:, i, 1], n)
            gene_wise[split] = metrics.compare_cv(cvs[1:].mean(axis=0), cvs[0]) | {
                "n_genes": int(cvs.shape[-1])
            }
        return {"cell_wise": cell_wise, "gene_wise": gene_wise}


class DifferentialExpression:
    """One-vs-rest Wilcoxon of every group, for observed counts and each posterior sample.

    While streaming, each source's log-normalised non-zeros are appended as packed keys to one
    file per gene chunk (``tmp_dir``); ranking then loads one chunk at a time.
    """

    def __init__(
        self,
        groups: np.ndarray,
        n_groups: int,
        n_samples: int,
        n_genes: int,
        tmp_dir: str | os.PathLike,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    ):
        self.codes = np.where(groups < 0, n_groups, groups).astype(np.int64)
        self.n_groups = n_groups
        self.group_sizes = np.bincount(self.codes, minlength=n_groups + 1)
        self.n_sources = 1 + n_samples
        self.n_genes = n_genes
        self.tmp_dir = Path(tmp_dir)
        self.max_nonzeros = max(memory_budget_bytes // BYTES_PER_NONZERO, 1)
        self.group_value_sums = np.zeros((self.n_sources, n_groups + 1, n_genes))
        self.chunks: list[tuple[int, int]] | None = None
        self._files: list[list] = []

    def _plan_chunks(self, nonzeros_per_gene: np.ndarray, n_block_cells: int) -> None:
        # Extrapolate the first minibatch's non-zeros per gene to all cells (densest source).
        scale = len(self.codes) / n_block_cells
        expected = nonzeros_per_gene * scale * 1.2 + 1
        self.chunks = gene_chunks(expected, self.max_nonzeros)
        # kept open for the whole stream (appended per minibatch), closed in results()
        self._files = [
            [self._open(s, c) for c in range(len(self.chunks))] for s in range(self.n_sources)
        ]
        log.info("DE store: %d gene chunks in %s", len(self.chunks), self.tmp_dir)

    def _open(self, source: int, chunk: int):
        return open(self.tmp_dir / f"source{source}_chunk{chunk}.u64", "wb")  # noqa: SIM115

    def add(self, start: int, stop: int, observed: np.ndarray, samples: np.ndarray) -> None:
        blocks = [observed, *samples]
        codes = self.codes[start:stop]
        if self.chunks is None:
            self._plan_chunks(np.max([(b > 0).sum(axis=0) for b in blocks], axis=0), stop - start)
        membership = sparse.csr_matrix(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))),
            shape=(self.n_groups + 1, len(codes)),
        )
        chunk_starts = np.array([c[0] for c in self.chunks] + [self.n_genes])
        for source, counts in enumerate(blocks):
            log_x = metrics.log_normalise(counts, counts.sum(axis=1, dtype=np.float64))
            self.group_value_sums[source] += membership @ log_x.astype(np.float64)
            # gene-major non-zeros, so each gene chunk is one contiguous slice
            by_gene = np.ascontiguousarray(log_x.T)
            flat = np.flatnonzero(by_gene)
            genes, cells = np.divmod(flat, by_gene.shape[1])
            values = by_gene.ravel()[flat]
            bounds = np.searchsorted(genes, chunk_starts)
            for c, (g0, _) in enumerate(self.chunks):
                lo, hi = bounds[c], bounds[c + 1]
                keys = pack_keys(genes[lo:hi] - g0, values[lo:hi], codes[cells[lo:hi]])
                keys.tofile(self._files[source][c])

    def results(self) -> list[DEResult]:
        """DE results, observed first then one per sample."""
        for files in self._files:
            for handle in files:
                handle.close()
        out = []
        for source in range(self.n_sources):
            rank_sums = np.empty((self.n_groups + 1, self.n_genes))
            for c, (g0, g1) in enumerate(self.chunks):
                path = self.tmp_dir / f"source{source}_chunk{c}.u64"
                keys = np.fromfile(path, dtype=np.uint64)
                path.unlink()
                rank_sums[:, g0:g1] = rank_sums_from_keys(keys, self.group_sizes, g1 - g0)
                del keys
            out.append(
                de_result(rank_sums, self.group_value_sums[source], self.group_sizes, self.n_groups)
            )
        return out


def stream(
    model,
    observed: ObservedCounts,
    accumulators: Sequence,
    *,
    n_samples: int,
    batch_size: int,
    seed: int,
) -> None:
    """Draw posterior samples minibatch by minibatch and feed them, with the matching observed
    rows, to every accumulator."""
    if observed.shape != (model.adata.n_obs, model.adata.n_vars):
        raise ValueError(
            f"observed counts {observed.shape} do not match the model's data "
            f"{(model.adata.n_obs, model.adata.n_vars)}"
        )
    started = time.perf_counter()
    blocks = posterior_predictive_blocks(
        model, n_samples=n_samples, batch_size=batch_size, seed=seed
    )
    # Sampling (torch) of the next minibatch overlaps the bookkeeping (numpy) of this one.
    for start, stop, samples in _prefetched(blocks):
        counts = observed.dense_rows(start, stop)
        for accumulator in accumulators:
            accumulator.add(start, stop, counts, samples)
    log.info("streamed %d cells in %.1f s", model.adata.n_obs, time.perf_counter() - started)


def _prefetched(iterator: Iterator, depth: int = 1) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead of the consumer."""
    done = object()
    items: queue.Queue = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in iterator:
                items.put(item)
            items.put(done)
        except BaseException as error:  # re-raised in the consumer
            items.put(error)

    threading.Thread(target=produce, daemon=True).start()
    while (item := items.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


# --- groups --------------------------------------------------------------------------------


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


def cluster_groups(latent: np.ndarray, *, resolution: float, min_cells: int, seed: int) -> Grouping:
    """Leiden clusters (igraph flavour) of the latent means, when there are no labels."""
    import anndata
    import scanpy as sc

    adata = anndata.AnnData(X=np.asarray(latent, dtype=np.float32))
    sc.pp.neighbors(adata, use_rep="X", random_state=seed)
    sc.tl.leiden(
        adata,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
    )
    grouping = label_groups(
        adata.obs["leiden"], unlabeled_category=None, min_cells=min_cells, key="leiden"
    )
    return Grouping(grouping.codes, grouping.names, "clusters", "leiden")


def latent_means(model) -> np.ndarray:
    """The latent posterior means stored in the minified AnnData (``*_latent_qzm``)."""
    keys = [k for k in model.adata.obsm if k.endswith("latent_qzm")]
    if not keys:
        raise KeyError("no '*_latent_qzm' in obsm of the minified AnnData")
    return np.asarray(model.adata.obsm[keys[0]])


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


# --- the two checks ------------------------------------------------------------------------


def coefficient_of_variation_check(
    model,
    counts_path: str | os.PathLike,
    *,
    layer: str | None,
    n_samples: int,
    batch_size: int,
    seed: int,
) -> dict:
    """Cell-wise (per split) and gene-wise (all and per split) CV agreement: cv.json content."""
    with ObservedCounts(counts_path, layer) as observed:
        cv = CoefficientOfVariation(cell_splits(model), n_samples, observed.shape[1])
        stream(model, observed, [cv], n_samples=n_samples, batch_size=batch_size, seed=seed)
    return {"n_samples": n_samples, "seed": seed} | cv.result()


def differential_expression_check(
    model,
    counts_path: str | os.PathLike,
    grouping: Grouping,
    *,
    layer: str | None,
    n_samples: int,
    batch_size: int,
    seed: int,
    alpha: float,
    top_n: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    tmp_dir: str | os.PathLike | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Per-group DE agreement of posterior samples with the observed data.

    Returns the de.tsv table (rows sorted by n_cells, descending) and the de.json summary.
    """
    if not grouping.names:
        raise ValueError("no group has enough cells for differential expression")
    with (
        tempfile.TemporaryDirectory(prefix="de_store_", dir=tmp_dir) as store,
        ObservedCounts(counts_path, layer) as observed,
    ):
        de = DifferentialExpression(
            grouping.codes,
            len(grouping.names),
            n_samples,
            observed.shape[1],
            store,
            memory_budget_bytes,
        )
        stream(model, observed, [de], n_samples=n_samples, batch_size=batch_size, seed=seed)
        observed_de, *sample_de = de.results()
    table = de_table(grouping, observed_de, sample_de, alpha=alpha, top_n=top_n)
    summary = _de_summary(grouping, table, alpha=alpha, top_n=top_n, n_samples=n_samples)
    return table, summary


def criticise(
    model,
    counts_path: str | os.PathLike,
    grouping: Grouping,
    *,
    layer: str | None,
    n_samples: int,
    batch_size: int,
    seed: int,
    alpha: float,
    top_n: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    tmp_dir: str | os.PathLike | None = None,
) -> tuple[dict, pd.DataFrame, dict]:
    """CV and DE from one pass of posterior samples: (cv.json content, de.tsv table, de.json).

    Same figures as the two separate checks with the same seed, for half the sampling.
    """
    with (
        tempfile.TemporaryDirectory(prefix="de_store_", dir=tmp_dir) as store,
        ObservedCounts(counts_path, layer) as observed,
    ):
        n_genes = observed.shape[1]
        cv = CoefficientOfVariation(cell_splits(model), n_samples, n_genes)
        de = DifferentialExpression(
            grouping.codes, len(grouping.names), n_samples, n_genes, store, memory_budget_bytes
        )
        stream(model, observed, [cv, de], n_samples=n_samples, batch_size=batch_size, seed=seed)
        observed_de, *sample_de = de.results()
    table = de_table(grouping, observed_de, sample_de, alpha=alpha, top_n=top_n)
    summary = _de_summary(grouping, table, alpha=alpha, top_n=top_n, n_samples=n_samples)
    return {"n_samples": n_samples, "seed": seed} | cv.result(), table, summary


def _de_summary(grouping: Grouping, table: pd.DataFrame, **settings) -> dict:
    return {
        "test": "wilcoxon",
        "grouping": grouping.grouping,
        "groups_key": grouping.key,
        "alpha": settings["alpha"],
        "top_n": settings["top_n"],
        "n_samples": settings["n_samples"],
        "normalisation": metrics.NORMALISATION,
        "groups": table.to_dict(orient="records"),
    }


def de_table(
    grouping: Grouping,
    observed: DEResult,
    samples: Sequence[DEResult],
    *,
    alpha: float,
    top_n: int,
) -> pd.DataFrame:
    """One row of DE metrics per group, columns as in ``metrics.DE_COLUMNS``."""
    rows = []
    for k, name in enumerate(grouping.names):
        row = metrics.group_de_metrics(
            _group_stats(observed, k, with_pvals=True),
            [_group_stats(s, k) for s in samples],
            alpha=alpha,
            top_n=top_n,
        )
        rows.append(row | {"group": name, "n_cells": int(observed.n_cells[k])})
    table = pd.DataFrame(rows, columns=list(metrics.DE_COLUMNS))
    return table.sort_values("n_cells", ascending=False, kind="stable").reset_index(drop=True)


def _group_stats(result: DEResult, k: int, with_pvals: bool = False) -> dict[str, np.ndarray]:
    stats = {"scores": result.scores[k], "logfoldchanges": result.logfoldchanges[k]}
    if with_pvals:
        stats["pvals_adj"] = result.pvals_adj[k]
    return stats
