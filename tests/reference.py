"""Reference implementations the tests compare the streaming code with (used by tests only):
an in-memory one-vs-rest Wilcoxon and dense coefficients of variation."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scvi_hub_workflow.metrics import cv_from_moments
from scvi_hub_workflow.wilcoxon import (
    BYTES_PER_NONZERO,
    DEResult,
    de_result,
    gene_chunks,
    pack_keys,
    rank_sums_from_keys,
)


def cell_wise_cv(counts: np.ndarray) -> np.ndarray:
    """CV of each cell across genes; ``counts`` is cells x genes, or samples x cells x genes
    (then the per-sample CVs are averaged)."""
    counts = np.asarray(counts, dtype=np.float64)
    cv = cv_from_moments(counts.sum(axis=-1), (counts**2).sum(axis=-1), counts.shape[-1])
    return cv.mean(axis=0) if counts.ndim == 3 else cv


def gene_wise_cv(counts: np.ndarray) -> np.ndarray:
    """CV of each gene across cells; ``counts`` is cells x genes, or samples x cells x genes."""
    counts = np.asarray(counts, dtype=np.float64)
    cv = cv_from_moments(counts.sum(axis=-2), (counts**2).sum(axis=-2), counts.shape[-2])
    return cv.mean(axis=0) if counts.ndim == 3 else cv


def group_rank_sums(
    genes: np.ndarray,
    values: np.ndarray,
    groups: np.ndarray,
    group_sizes: np.ndarray,
    n_genes: int,
) -> np.ndarray:
    """Rank sums per (group, gene) of one gene chunk, from its non-zero entries only."""
    return rank_sums_from_keys(pack_keys(genes, values, groups), group_sizes, n_genes)


def wilcoxon_one_vs_rest(
    log_expression: np.ndarray | sparse.spmatrix | sparse.sparray,
    groups: np.ndarray,
    n_groups: int,
    *,
    memory_budget_bytes: int = 512 * 2**20,
) -> DEResult:
    """Test each of ``n_groups`` groups against all other cells, for every gene.

    ``log_expression`` is cells x genes (normalised, log1p: non-negative). ``groups`` holds a code
    in ``[0, n_groups)`` per cell, or -1 for cells in no tested group (they still count in "rest",
    as in scanpy when ``groups=`` names a subset).
    """
    matrix = sparse.csc_matrix(log_expression, dtype=np.float32)
    matrix.eliminate_zeros()
    codes = _with_untested_code(groups, n_groups)
    group_sizes = np.bincount(codes, minlength=n_groups + 1)
    membership = sparse.csr_matrix(
        (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_groups + 1, len(codes))
    )
    group_value_sums = np.asarray((membership @ matrix.astype(np.float64)).todense())
    rank_sums = np.empty((n_groups + 1, matrix.shape[1]))
    nonzeros_per_gene = np.diff(matrix.indptr)
    for start, stop in gene_chunks(nonzeros_per_gene, memory_budget_bytes // BYTES_PER_NONZERO):
        genes, cells, values = _chunk_nonzeros(matrix, start, stop)
        rank_sums[:, start:stop] = group_rank_sums(
            genes, values, codes[cells], group_sizes, stop - start
        )
    return de_result(rank_sums, group_value_sums, group_sizes, n_groups)


def _with_untested_code(groups: np.ndarray, n_groups: int) -> np.ndarray:
    codes = np.asarray(groups, dtype=np.int64).copy()
    if codes.size and (codes.max() >= n_groups or codes.min() < -1):
        raise ValueError("group codes must lie in [-1, n_groups)")
    codes[codes < 0] = n_groups
    return codes


def _chunk_nonzeros(
    matrix: sparse.csc_matrix, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = matrix.indptr[start], matrix.indptr[stop]
    genes = np.repeat(np.arange(stop - start), np.diff(matrix.indptr[start : stop + 1]))
    return genes, matrix.indices[lo:hi], matrix.data[lo:hi]
