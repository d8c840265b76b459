"""Streaming posterior predictive check: criticism metrics at atlas scale.

scvi-tools' ``PosteriorPredictiveCheck`` keeps every sampled count of every cell and gene in
memory. Here posterior samples are drawn minibatch by minibatch and only what the metrics need is
kept: per-cell and per-gene sums and sums of squares (coefficient of variation), per-group sums of
log expression (fold changes), and the non-zeros of the log-normalised data in a disk-backed,
gene-chunked store (Wilcoxon ranks need all cells of a gene). Observed counts are read from the
``.h5ad`` in the same cell chunks, so memory stays flat in the number of cells.

Time goes to drawing counts, so only the decoder runs in torch; counts are drawn by exact numpy
samplers in worker threads (one generator per minibatch), and all bookkeeping runs over the
non-zero entries.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import sparse

from scvi_hub_workflow import metrics
from scvi_hub_workflow.model_io import load_model
from scvi_hub_workflow.training import SPLIT_COLUMN, latent_keys
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
# Posterior samples of a fitted model are about as sparse as the data; the DE store plans its
# gene chunks from the observed non-zeros with this margin for sparser-fitting models.
SAMPLE_DENSITY_MARGIN = 1.5


# --- inputs --------------------------------------------------------------------------------


def load_minified_model(model_dir: str | os.PathLike):
    """Load the saved (minified) model, whatever its class; on the GPU when there is one."""
    return load_model(model_dir)


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

    def nonzeros(self, start: int, stop: int) -> Nonzeros:
        """Rows ``start:stop`` (one minibatch, never the whole matrix) as their non-zeros."""
        if not self.is_sparse:
            return Nonzeros.from_dense(np.asarray(self._matrix[start:stop], dtype=np.float32))
        indptr = self._matrix["indptr"][start : stop + 1]
        lo, hi = int(indptr[0]), int(indptr[-1])
        return Nonzeros.from_csr(
            self._matrix["data"][lo:hi], self._matrix["indices"][lo:hi], indptr - lo
        )

    def nonzeros_per_gene(self, rows_per_read: int = 4096) -> np.ndarray:
        """Non-zeros of each gene (column), read in slices so memory stays flat."""
        n_cells, n_genes = self.shape
        counts = np.zeros(n_genes, dtype=np.int64)
        if self.is_sparse:  # explicit zeros, if any, count too: this is only for planning
            indices = self._matrix["indices"]
            step = rows_per_read * n_genes
            for lo in range(0, indices.shape[0], step):
                counts += np.bincount(indices[lo : lo + step], minlength=n_genes)
            return counts
        for lo in range(0, n_cells, rows_per_read):
            counts += (self._matrix[lo : lo + rows_per_read] != 0).sum(axis=0)
        return counts

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ObservedCounts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cell_splits(model) -> np.ndarray:
    """The model's own train/validation/test label per cell, as the train rule recorded it."""
    if SPLIT_COLUMN not in model.adata.obs:
        raise KeyError(f"the minified AnnData has no obs[{SPLIT_COLUMN!r}] (the model's split)")
    return model.adata.obs[SPLIT_COLUMN].astype(str).to_numpy()


# --- posterior samples ---------------------------------------------------------------------


@dataclass(frozen=True)
class CountLikelihood:
    """The model's count distribution for one minibatch; arrays (samples, cells, genes) float32,
    or broadcastable to that shape.

    ``kind`` is "poisson" (``mean`` only), "nb" (``mean``, ``theta``: inverse dispersion) or
    "zinb" (also ``zero_prob``, the probability of an extra zero).
    """

    kind: str
    mean: np.ndarray
    theta: np.ndarray | None = None
    zero_prob: np.ndarray | None = None


# Same clip scvi-tools applies to Poisson rates before sampling; numpy refuses huge rates.
MAX_POISSON_RATE = 1e8


def likelihood_blocks(
    model, *, n_samples: int, batch_size: int, seed: int
) -> Iterator[tuple[int, int, CountLikelihood]]:
    """Yield ``(start, stop, likelihood)`` for consecutive cell minibatches, in cell order.

    Only the forward pass runs in torch (latent draw from the stored posterior, then the
    decoder); the counts themselves are drawn by ``draw_counts``, in numpy, because torch's CPU
    gamma and Poisson samplers are single-threaded and about half as fast.
    """
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
            _, generative = model.module.forward(
                tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
            )
            likelihood = _count_likelihood(generative["px"], n_samples)
            stop = start + likelihood.mean.shape[1]
            yield start, stop, likelihood
            start = stop


def _count_likelihood(px, n_samples: int) -> CountLikelihood:
    import torch
    from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

    def array(tensor: torch.Tensor) -> np.ndarray:
        # scvi drops the sample axis when n_samples is 1
        values = tensor.detach().to("cpu", torch.float32).numpy()
        return values[None] if n_samples == 1 else values

    if isinstance(px, ZeroInflatedNegativeBinomial):
        return CountLikelihood("zinb", array(px.mu), array(px.theta), array(px.zi_probs))
    if isinstance(px, NegativeBinomial):
        return CountLikelihood("nb", array(px.mu), array(px.theta))
    if isinstance(px, torch.distributions.Poisson):
        return CountLikelihood("poisson", np.minimum(array(px.rate), MAX_POISSON_RATE))
    raise ValueError(f"no count sampler for the model's likelihood {type(px).__name__}")


# Means up to this are sampled by inverting the NB distribution function (about 1 + mean steps,
# most entries settle on the first: single-cell means are mostly well below 1); larger means by
# the gamma-Poisson mixture, whose cost does not grow with the mean.
INVERSION_MAX_MEAN = 4.0
# A loop guard: the inversion of a mean <= 4 ends long before this unless rounding stalls the
# running sum of probabilities below the uniform draw; such entries go to the gamma-Poisson path.
MAX_INVERSION_STEPS = 2000


def draw_counts(likelihood: CountLikelihood, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One (cells, genes) float32 block of sampled counts per posterior sample.

    Exact samplers in numpy, about three times faster than torch's on CPU (and they release the
    GIL, so minibatches sample in parallel threads); zero inflation zeroes each count with
    probability ``zero_prob``.
    """
    for i, mean in enumerate(likelihood.mean):
        if likelihood.kind == "poisson":
            counts = rng.poisson(mean.astype(np.float64)).astype(np.float32)
        else:
            theta = likelihood.theta[i] if likelihood.theta.ndim == 3 else likelihood.theta
            counts = negative_binomial(mean, np.broadcast_to(theta, mean.shape), rng)
        if likelihood.kind == "zinb":
            counts[rng.random(mean.shape, dtype=np.float32) < likelihood.zero_prob[i]] = 0
        yield counts


def negative_binomial(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NB(mean, inverse dispersion theta) counts, float32, same shape as ``mean``."""
    shape = mean.shape
    mean = mean.astype(np.float64).ravel()
    counts = np.zeros(mean.size, dtype=np.float32)
    u = rng.random(mean.size)
    # P(X > 0) <= E[X], so u <= 1 - mean settles on 0 without computing P(X = 0): at single-cell
    # means that skips most entries. Entries with means >= 1 always go on.
    going = np.flatnonzero(u > 1 - mean)
    mean, theta, u = mean[going], theta.ravel()[going], u[going]
    low = mean <= INVERSION_MAX_MEAN
    inverted, stalled = _inverted_negative_binomial(u[low], mean[low], theta[low])
    counts[going[low]] = inverted
    high = np.flatnonzero(~low)
    high = np.concatenate([high, np.flatnonzero(low)[stalled]]) if stalled.size else high
    counts[going[high]] = _gamma_poisson(mean[high], theta[high], rng)
    return counts.reshape(shape)


def _inverted_negative_binomial(
    u: np.ndarray, mean: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest k with P(X <= k) >= u for each entry, and the positions where rounding stalled.

    P(X = 0) = (1 - q)^theta and P(X = k) = P(X = k - 1) (k - 1 + theta) / k q with
    q = mean / (theta + mean); only entries not settled yet are carried to the next k.
    """
    mean = mean.astype(np.float64)
    theta = theta.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.nan_to_num(mean / (theta + mean))
    probability = np.exp(theta * np.log1p(-q))
    counts = np.zeros(u.size, dtype=np.float32)
    active = np.flatnonzero(u > probability)  # the others are 0
    u, cdf, probability, q, theta = (
        x[active] for x in (u, probability.copy(), probability, q, theta)
    )
    for k in range(1, MAX_INVERSION_STEPS + 1):
        if not active.size:
            break
        probability *= (k - 1 + theta) / k * q
        cdf += probability
        settled = u <= cdf
        counts[active[settled]] = k
        going = ~settled
        active, u, cdf, probability, q, theta = (
            x[going] for x in (active, u, cdf, probability, q, theta)
        )
    return counts, active


def _gamma_poisson(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NB as a Poisson whose rate is Gamma(theta, theta / mean) distributed."""
    gamma = rng.standard_gamma(theta, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.nan_to_num(gamma.astype(np.float64) * (mean / theta))
    return rng.poisson(np.minimum(rate, MAX_POISSON_RATE)).astype(np.float32)


def sample_rng(seed: int, start: int) -> np.random.Generator:
    """The generator of the minibatch starting at cell ``start``: draws do not depend on which
    thread samples which minibatch, or in what order."""
    return np.random.default_rng([seed, start])


@dataclass(frozen=True)
class Nonzeros:
    """The non-zero entries of a cells x genes block of counts (cell-major), and cell totals.

    Every metric is a sum over non-zeros, so the bookkeeping costs O(non-zeros), not
    O(cells x genes), and the observed CSR rows are used as they are stored.
    """

    cells: np.ndarray
    genes: np.ndarray
    values: np.ndarray
    totals: np.ndarray

    @classmethod
    def from_dense(cls, block: np.ndarray) -> Nonzeros:
        flat = np.flatnonzero(block)
        cells, genes = np.divmod(flat, block.shape[1])
        return cls._build(cells, genes, block.ravel()[flat], block.shape[0])

    @classmethod
    def from_csr(cls, data, indices, indptr) -> Nonzeros:
        cells = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        values = np.asarray(data, dtype=np.float32)
        keep = values != 0  # explicit zeros stored in the file are no non-zeros
        return cls._build(cells[keep], np.asarray(indices)[keep], values[keep], len(indptr) - 1)

    @classmethod
    def _build(cls, cells, genes, values, n_cells: int) -> Nonzeros:
        values = np.asarray(values, dtype=np.float32)
        totals = np.bincount(cells, weights=values, minlength=n_cells)
        return cls(cells.astype(np.intp), genes.astype(np.intp), values, totals)


# --- accumulators --------------------------------------------------------------------------
# Each accumulator splits its work in two: ``contribution`` (pure, runs in worker threads, one
# minibatch) and ``add`` (merges contributions in minibatch order in the calling thread, so
# results do not depend on the number of threads).


class CoefficientOfVariation:
    """Accumulates cell-wise and gene-wise CVs of observed counts and posterior samples."""

    def __init__(self, splits: np.ndarray, n_samples: int, n_genes: int):
        self.splits = splits
        # split code per cell: its index in SPLITS, or len(SPLITS) for test and other cells
        self.split_codes = np.full(len(splits), len(SPLITS), dtype=np.intp)
        for code, split in enumerate(SPLITS):
            self.split_codes[splits == split] = code
        n_cells = len(splits)
        self.n_genes = n_genes
        self.model_cell_cv = np.zeros(n_cells)
        self.observed_cell_cv = np.zeros(n_cells)
        # sums of x and x² per (source, split code, gene); source 0 is observed
        self.gene_sums = np.zeros((1 + n_samples, len(SPLITS) + 1, 2, n_genes))
        self.n_samples = n_samples

    def contribution(self, start: int, stop: int, sources: Sequence[Nonzeros]):
        codes = self.split_codes[start:stop]
        n_codes = len(SPLITS) + 1
        cell_cvs, gene_sums = [], np.empty((len(sources), n_codes, 2, self.n_genes))
        for source, nz in enumerate(sources):
            values = nz.values.astype(np.float64)
            squares = values * values
            cell_squares = np.bincount(nz.cells, weights=squares, minlength=stop - start)
            cell_cvs.append(metrics.cv_from_moments(nz.totals, cell_squares, self.n_genes))
            index = codes[nz.cells] * self.n_genes + nz.genes
            for moment, weights in enumerate((values, squares)):
                sums = np.bincount(index, weights=weights, minlength=n_codes * self.n_genes)
                gene_sums[source, :, moment] = sums.reshape(n_codes, self.n_genes)
        return cell_cvs, gene_sums

    def add(self, start: int, stop: int, contribution) -> None:
        cell_cvs, gene_sums = contribution
        self.observed_cell_cv[start:stop] = cell_cvs[0]
        self.model_cell_cv[start:stop] = np.sum(cell_cvs[1:], axis=0) / self.n_samples
        self.gene_sums += gene_sums

    def result(self) -> dict:
        cell_wise = {}
        for split in SPLITS:
            mask = self.splits == split
            cell_wise[split] = metrics.compare_cv(
                self.model_cell_cv[mask], self.observed_cell_cv[mask]
            ) | {"n_cells": int(mask.sum())}
        gene_wise = {}
        for split in GENE_SPLITS:
            if split == "all":
                sums, n = self.gene_sums.sum(axis=1), len(self.splits)
            else:
                code = SPLITS.index(split)
                sums, n = self.gene_sums[:, code], int((self.split_codes == code).sum())
            if n == 0:  # no cells in this split: nothing to compare
                gene_wise[split] = metrics.compare_cv(np.empty(0), np.empty(0)) | {"n_genes": 0}
                continue
            cvs = metrics.cv_from_moments(sums[:, 0], sums[:, 1], n)
            gene_wise[split] = metrics.compare_cv(cvs[1:].mean(axis=0), cvs[0]) | {
                "n_genes": int(cvs.shape[-1])
            }
        return {"cell_wise": cell_wise, "gene_wise": gene_wise}


class DifferentialExpression:
    """One-vs-rest Wilcoxon of every group, for observed counts and each posterior sample.

    While streaming, each source's log-normalised non-zeros are appended as packed keys to one
    file per gene chunk (``tmp_dir``); ranking then loads ``n_workers`` chunks at a time, so
    the memory budget is shared between them.
    """

    def __init__(
        self,
        groups: np.ndarray,
        n_groups: int,
        n_samples: int,
        expected_nonzeros_per_gene: np.ndarray,
        tmp_dir: str | os.PathLike,
        memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
        n_workers: int = 1,
    ):
        self.codes = np.where(groups < 0, n_groups, groups).astype(np.intp)
        self.n_groups = n_groups
        self.group_sizes = np.bincount(self.codes, minlength=n_groups + 1)
        self.n_sources = 1 + n_samples
        self.n_genes = len(expected_nonzeros_per_gene)
        self.n_workers = n_workers
        self.tmp_dir = Path(tmp_dir)
        max_nonzeros = max(memory_budget_bytes // BYTES_PER_NONZERO // n_workers, 1)
        self.chunks = gene_chunks(expected_nonzeros_per_gene, max_nonzeros)
        self.chunk_of_gene = np.repeat(
            np.arange(len(self.chunks), dtype=np.uint16), [g1 - g0 for g0, g1 in self.chunks]
        )
        self.chunk_start = np.array([g0 for g0, _ in self.chunks], dtype=np.intp)
        self.group_value_sums = np.zeros((self.n_sources, n_groups + 1, self.n_genes))
        log.info("DE store: %d gene chunks in %s", len(self.chunks), self.tmp_dir)

    def _path(self, source: int, chunk: int) -> Path:
        return self.tmp_dir / f"source{source}_chunk{chunk}.u64"

    def contribution(self, start: int, stop: int, sources: Sequence[Nonzeros]):
        codes = self.codes[start:stop]
        out = []
        for nz in sources:
            log_x = metrics.log_normalise(nz.values, nz.totals[nz.cells])
            groups = codes[nz.cells]
            sums = np.bincount(
                groups * self.n_genes + nz.genes,
                weights=log_x,
                minlength=(self.n_groups + 1) * self.n_genes,
            ).reshape(self.n_groups + 1, self.n_genes)
            # Entries by gene chunk (a stable radix sort of small ints), one key run per chunk.
            chunk = self.chunk_of_gene[nz.genes]
            order = np.argsort(chunk, kind="stable")
            chunk = chunk[order]
            keys = pack_keys(nz.genes[order] - self.chunk_start[chunk], log_x[order], groups[order])
            bounds = np.cumsum(np.bincount(chunk, minlength=len(self.chunks)))[:-1]
            out.append((sums, np.split(keys, bounds)))
        return out

    def add(self, start: int, stop: int, contribution) -> None:
        for source, (sums, chunk_keys) in enumerate(contribution):
            self.group_value_sums[source] += sums
            # opened per append: chunks grow with the cells, open files would hit the OS limit
            for c, keys in enumerate(chunk_keys):
                with open(self._path(source, c), "ab") as handle:
                    keys.tofile(handle)

    def results(self) -> list[DEResult]:
        """DE results, observed first then one per sample."""
        tasks = [(s, c) for s in range(self.n_sources) for c in range(len(self.chunks))]
        rank_sums = np.empty((self.n_sources, self.n_groups + 1, self.n_genes))
        # numpy's sort releases the GIL: chunks rank in parallel threads
        with ThreadPoolExecutor(self.n_workers) as pool:
            for (source, c), sums in zip(tasks, pool.map(self._rank_chunk, tasks), strict=True):
                g0, g1 = self.chunks[c]
                rank_sums[source, :, g0:g1] = sums
        return [
            de_result(rank_sums[s], self.group_value_sums[s], self.group_sizes, self.n_groups)
            for s in range(self.n_sources)
        ]

    def _rank_chunk(self, task: tuple[int, int]) -> np.ndarray:
        source, c = task
        g0, g1 = self.chunks[c]
        path = self._path(source, c)
        keys = np.fromfile(path, dtype=np.uint64) if path.exists() else np.empty(0, np.uint64)
        path.unlink(missing_ok=True)
        return rank_sums_from_keys(keys, self.group_sizes, g1 - g0)


def stream(
    model,
    observed: ObservedCounts,
    accumulators: Sequence,
    *,
    n_samples: int,
    batch_size: int,
    seed: int,
    n_workers: int = 1,
) -> None:
    """Draw posterior samples minibatch by minibatch and feed them, with the matching observed
    rows, to every accumulator.

    The forward passes run in one background thread (in order: they use torch's global RNG);
    drawing counts and the bookkeeping of up to ``n_workers`` minibatches run in worker threads
    (numpy releases the GIL there); contributions are merged in minibatch order.
    """
    if observed.shape != (model.adata.n_obs, model.adata.n_vars):
        raise ValueError(
            f"observed counts {observed.shape} do not match the model's data "
            f"{(model.adata.n_obs, model.adata.n_vars)}"
        )
    started = time.perf_counter()
    blocks = likelihood_blocks(model, n_samples=n_samples, batch_size=batch_size, seed=seed)

    def contributions(start: int, stop: int, likelihood: CountLikelihood, counts: Nonzeros):
        drawn = draw_counts(likelihood, sample_rng(seed, start))
        sources = [counts, *(Nonzeros.from_dense(block) for block in drawn)]
        return [acc.contribution(start, stop, sources) for acc in accumulators]

    def merge(start: int, stop: int, future) -> None:
        for accumulator, contribution in zip(accumulators, future.result(), strict=True):
            accumulator.add(start, stop, contribution)

    pending: deque = deque()
    with ThreadPoolExecutor(n_workers) as pool:
        for start, stop, likelihood in _prefetched(blocks, depth=n_workers):
            counts = observed.nonzeros(start, stop)  # h5py reads stay in this thread
            pending.append(
                (start, stop, pool.submit(contributions, start, stop, likelihood, counts))
            )
            if len(pending) > n_workers:  # bounds the minibatches held in memory
                merge(*pending.popleft())
        while pending:
            merge(*pending.popleft())
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


# --- the check ----------------------------------------------------------------------------


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


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
    n_workers: int | None = None,
) -> tuple[dict, pd.DataFrame, dict]:
    """CV and DE from one pass of posterior samples: (cv.json content, de.tsv table, de.json).

    The de.tsv table has one row per group, sorted by n_cells (descending). Results do not
    depend on ``n_workers`` (threads; default: all CPUs of this process).
    """
    if not grouping.names:
        raise ValueError("no group has enough cells for differential expression")
    n_workers = n_workers or default_workers()
    with (
        tempfile.TemporaryDirectory(prefix="de_store_", dir=tmp_dir) as store,
        ObservedCounts(counts_path, layer) as observed,
    ):
        n_genes = observed.shape[1]
        cv = CoefficientOfVariation(cell_splits(model), n_samples, n_genes)
        de = DifferentialExpression(
            grouping.codes,
            len(grouping.names),
            n_samples,
            observed.nonzeros_per_gene() * SAMPLE_DENSITY_MARGIN + 1,
            store,
            memory_budget_bytes,
            n_workers,
        )
        stream(
            model,
            observed,
            [cv, de],
            n_samples=n_samples,
            batch_size=batch_size,
            seed=seed,
            n_workers=n_workers,
        )
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
