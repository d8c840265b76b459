"""Fast one-vs-rest Wilcoxon rank-sum test over all groups at once, for sparse data.

Same statistic as ``scanpy.tl.rank_genes_groups(method="wilcoxon")`` with its defaults
(no tie correction, Benjamini-Hochberg, reference "rest"), computed differently:

* zeros all tie at the lowest rank, so only the non-zeros of a gene are sorted;
* one sort serves every group: each non-zero is packed into a single ``uint64`` key
  (gene | value bits | group), so sorting the keys orders the values within each gene and
  carries the cell's group along, without an argsort;
* the rank sums of all groups then come from one ``bincount``.

Values are compared in float32 precision (the precision scanpy's normalised data has).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from scvi_hub_workflow.metrics import log2_fold_change

# Bit layout of one packed key: [ gene (16) | float32 bits of a positive value (31) | group (17) ]
_GROUP_BITS = 17
_VALUE_BITS = 31
MAX_GENES_PER_CHUNK = 1 << (64 - _GROUP_BITS - _VALUE_BITS)
MAX_GROUPS = 1 << _GROUP_BITS
# Working memory per non-zero while ranking a gene chunk (keys, ranks, indices, temporaries).
BYTES_PER_NONZERO = 48


@dataclass(frozen=True)
class DEResult:
    """One-vs-rest test of every group against all other cells; arrays are (groups, genes)."""

    scores: np.ndarray
    logfoldchanges: np.ndarray
    pvals_adj: np.ndarray
    n_cells: np.ndarray


def pack_keys(genes: np.ndarray, values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Pack each non-zero entry into one sortable ``uint64``: gene | value | group.

    ``genes`` is the gene index within its chunk, ``values`` the positive value (compared in
    float32) and ``groups`` the group code of the entry's cell. Sorting the keys orders the
    values within each gene; for positive floats the IEEE bit pattern orders like the value.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.size and not values.min() > 0:
        raise ValueError("values must be the positive non-zeros (zeros are implicit)")
    key = np.asarray(genes).astype(np.uint64) << np.uint64(_VALUE_BITS + _GROUP_BITS)
    key |= values.view(np.uint32).astype(np.uint64) << np.uint64(_GROUP_BITS)
    key |= np.asarray(groups).astype(np.uint64)
    return key


def rank_sums_from_keys(keys: np.ndarray, group_sizes: np.ndarray, n_genes: int) -> np.ndarray:
    """Rank sums per (group, gene) of one gene chunk from its packed non-zeros (sorted in place).

    ``group_sizes[k]`` counts all cells with group code k, zeros included (every cell has exactly
    one code, so ``group_sizes.sum()`` is the number of cells). Ties get their mid-rank, like
    ``scipy.stats.rankdata``; the zeros of a gene tie below all its non-zeros.
    """
    n_groups = len(group_sizes)
    if n_genes > MAX_GENES_PER_CHUNK or n_groups > MAX_GROUPS:
        raise ValueError(f"at most {MAX_GENES_PER_CHUNK} genes and {MAX_GROUPS} groups per chunk")
    n_cells = int(group_sizes.sum())
    keys.sort()
    gene_of = (keys >> np.uint64(_VALUE_BITS + _GROUP_BITS)).astype(np.intp)
    nonzeros_per_gene = np.bincount(gene_of, minlength=n_genes)
    n_zeros = n_cells - nonzeros_per_gene

    tie_key = keys >> np.uint64(_GROUP_BITS)
    new_run = np.empty(keys.size, dtype=bool)
    new_run[:1] = True
    np.not_equal(tie_key[1:], tie_key[:-1], out=new_run[1:])
    del tie_key
    run_starts = np.flatnonzero(new_run)
    del new_run
    run_ends = np.append(run_starts[1:], keys.size)
    # Mid-rank of each run of ties, 1-based over the whole sorted chunk ...
    mid_rank = np.repeat((run_starts + run_ends + 1) / 2.0, run_ends - run_starts)
    del run_starts, run_ends
    # ... shifted to the gene's own ranking, where its zeros come first.
    gene_start = np.concatenate([[0], np.cumsum(nonzeros_per_gene)[:-1]])
    mid_rank += (n_zeros - gene_start)[gene_of]
    index = (keys & np.uint64(MAX_GROUPS - 1)).astype(np.intp) * n_genes
    index += gene_of
    del gene_of
    size = n_groups * n_genes
    nonzero_rank_sums = np.bincount(index, weights=mid_rank, minlength=size)
    nonzero_counts = np.bincount(index, minlength=size)
    zero_rank = (n_zeros + 1) / 2.0
    zero_counts = group_sizes[:, None] - nonzero_counts.reshape(n_groups, n_genes)
    return nonzero_rank_sums.reshape(n_groups, n_genes) + zero_counts * zero_rank[None, :]


def rank_sum_z_scores(rank_sums: np.ndarray, group_sizes: np.ndarray) -> np.ndarray:
    """Normal approximation of the rank-sum statistic, one group against all other cells."""
    n_cells = float(group_sizes.sum())
    n = group_sizes[:, None].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (rank_sums - n * (n_cells + 1) / 2.0) / np.sqrt(n * (n_cells - n) * (n_cells + 1) / 12)
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


def two_sided_pvalues(z: np.ndarray) -> np.ndarray:
    """P(|N(0,1)| >= |z|)."""
    return erfc(np.abs(z) / np.sqrt(2.0))


def benjamini_hochberg(pvals: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values along the last axis (NaN counts as 1)."""
    pvals = np.nan_to_num(np.asarray(pvals, dtype=np.float64), nan=1.0)
    m = pvals.shape[-1]
    order = np.argsort(pvals, axis=-1, kind="stable")
    ranked = np.take_along_axis(pvals, order, axis=-1) * m / np.arange(1, m + 1)
    # Adjusted p of the i-th smallest is the smallest scaled p at or above it.
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    adjusted = np.empty_like(ranked)
    np.put_along_axis(adjusted, order, np.minimum(ranked, 1.0), axis=-1)
    return adjusted


def de_result(
    rank_sums: np.ndarray,
    group_value_sums: np.ndarray,
    group_sizes: np.ndarray,
    n_tested: int,
) -> DEResult:
    """Scores, log2 fold changes and adjusted p-values of the first ``n_tested`` groups.

    ``rank_sums`` and ``group_value_sums`` (sum of the log-normalised values per group and gene)
    cover all group codes, including the trailing "not tested" code, so "rest" is every other cell.
    """
    z = rank_sum_z_scores(rank_sums, group_sizes)[:n_tested]
    total = group_value_sums.sum(axis=0)
    sizes = group_sizes[:n_tested, None].astype(np.float64)
    n_cells = float(group_sizes.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_group = group_value_sums[:n_tested] / sizes
        mean_rest = (total[None, :] - group_value_sums[:n_tested]) / (n_cells - sizes)
    return DEResult(
        scores=z,
        logfoldchanges=log2_fold_change(mean_group, mean_rest),
        pvals_adj=benjamini_hochberg(two_sided_pvalues(z)),
        n_cells=group_sizes[:n_tested].copy(),
    )


def gene_chunks(nonzeros_per_gene: np.ndarray, max_nonzeros: int) -> list[tuple[int, int]]:
    """Split genes into contiguous chunks holding at most ``max_nonzeros`` non-zeros each.

    A single gene above the budget gets a chunk of its own.
    """
    chunks, start, filled = [], 0, 0
    for gene, nnz in enumerate(np.asarray(nonzeros_per_gene, dtype=np.int64)):
        too_full = filled + nnz > max_nonzeros or gene - start >= MAX_GENES_PER_CHUNK
        if gene > start and too_full:
            chunks.append((start, gene))
            start, filled = gene, 0
        filled += nnz
    if len(nonzeros_per_gene) > start:
        chunks.append((start, len(nonzeros_per_gene)))
    return chunks
