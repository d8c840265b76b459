"""What the metrics keep while samples stream past: CV moments and the DE store."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..layout import CV_SPLITS, GENE_CV_SPLITS, SPLIT_COLUMN
from ..wilcoxon import (
    BYTES_PER_NONZERO,
    DEResult,
    de_result,
    gene_chunks,
    pack_keys,
    rank_sums_from_keys,
)
from .nonzeros import Nonzeros

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 512 * 2**20

# --- accumulators --------------------------------------------------------------------------
# Each accumulator splits its work in two: ``contribution`` (pure, runs in worker threads, one
# minibatch) and ``add`` (merges contributions in minibatch order in the calling thread, so
# results do not depend on the number of threads).


class CoefficientOfVariation:
    """Accumulates cell-wise and gene-wise CVs of observed counts and posterior samples."""

    def __init__(self, splits: np.ndarray, n_samples: int, n_genes: int):
        self.splits = splits
        # split code per cell: its index in CV_SPLITS, or len(CV_SPLITS) for test and other cells
        self.split_codes = np.full(len(splits), len(CV_SPLITS), dtype=np.intp)
        for code, split in enumerate(CV_SPLITS):
            self.split_codes[splits == split] = code
        n_cells = len(splits)
        self.n_genes = n_genes
        self.model_cell_cv = np.zeros(n_cells)
        # each sample's own cell CVs: the ceiling compares the samples with each other
        self.sample_cell_cv = np.zeros((n_samples, n_cells))
        self.observed_cell_cv = np.zeros(n_cells)
        # sums of x and x² per (source, split code, gene); source 0 is observed
        self.gene_sums = np.zeros((1 + n_samples, len(CV_SPLITS) + 1, 2, n_genes))
        self.n_samples = n_samples

    def contribution(self, start: int, stop: int, sources: Sequence[Nonzeros]):
        codes = self.split_codes[start:stop]
        n_codes = len(CV_SPLITS) + 1
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
        self.sample_cell_cv[:, start:stop] = cell_cvs[1:]
        self.gene_sums += gene_sums

    def result(self) -> dict:
        """Per split: the metrics, their number of cells or genes, and under "ceiling" the
        same metrics for a model that is exactly right (``metrics.replicate_ceiling``)."""
        cell_wise = {}
        for split in CV_SPLITS:
            mask = self.splits == split
            cell_wise[split] = metrics.compare_cv(
                self.model_cell_cv[mask], self.observed_cell_cv[mask]
            ) | {
                "n_cells": int(mask.sum()),
                "ceiling": metrics.replicate_ceiling(self.sample_cell_cv[:, mask]),
            }
        gene_wise = {}
        for split in GENE_CV_SPLITS:
            if split == "all":
                sums, n = self.gene_sums.sum(axis=1), len(self.splits)
            else:
                code = CV_SPLITS.index(split)
                sums, n = self.gene_sums[:, code], int((self.split_codes == code).sum())
            if n == 0:  # no cells in this split: nothing to compare
                gene_wise[split] = metrics.compare_cv(np.empty(0), np.empty(0)) | {
                    "n_genes": 0,
                    "ceiling": metrics.replicate_ceiling(np.empty((self.n_samples, 0))),
                }
                continue
            cvs = metrics.cv_from_moments(sums[:, 0], sums[:, 1], n)
            gene_wise[split] = metrics.compare_cv(cvs[1:].mean(axis=0), cvs[0]) | {
                "n_genes": int(cvs.shape[-1]),
                "ceiling": metrics.replicate_ceiling(cvs[1:]),
            }
        return {"cell_wise": cell_wise, "gene_wise": gene_wise}

    def values(self, obs_names: Sequence[str], var_names: Sequence[str]) -> CVValues:
        """The CVs behind the metrics, for plotting: per cell (with its split) and per gene
        (over all cells); ``model_cv`` is averaged over the posterior samples."""
        cells = pd.DataFrame(
            {
                SPLIT_COLUMN: self.splits,
                "observed_cv": self.observed_cell_cv,
                "model_cv": self.model_cell_cv,
            },
            index=pd.Index(obs_names, name="cell"),
        )
        sums = self.gene_sums.sum(axis=1)
        cvs = metrics.cv_from_moments(sums[:, 0], sums[:, 1], len(self.splits))
        genes = pd.DataFrame(
            {"observed_cv": cvs[0], "model_cv": cvs[1:].mean(axis=0)},
            index=pd.Index(var_names, name="gene"),
        )
        return CVValues(cells, genes)


@dataclass(frozen=True)
class CVValues:
    """Per-cell and per-gene coefficients of variation, observed and model (criticism/cv_*.tsv);
    a CITE-seq model's also per cell over its proteins and per protein."""

    cells: pd.DataFrame
    genes: pd.DataFrame
    protein_cells: pd.DataFrame | None = None
    proteins: pd.DataFrame | None = None


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
