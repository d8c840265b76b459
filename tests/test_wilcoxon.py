"""The fast Wilcoxon equals scanpy's rank_genes_groups(method="wilcoxon") on the same data."""

import anndata
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from reference import group_rank_sums, wilcoxon_one_vs_rest
from scipy import sparse, stats
from scvi_hub_workflow.metrics import log_normalise
from scvi_hub_workflow.wilcoxon import benjamini_hochberg, gene_chunks


def _log_counts(n_cells=300, n_genes=60, n_groups=4, seed=0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n_cells)
    # Group-specific means so some genes are real markers; small counts give many ties.
    means = rng.gamma(0.6, 1.0, (n_groups, n_genes)) * rng.choice([1, 4], (n_groups, n_genes))
    counts = rng.poisson(means[groups]).astype(np.float32)
    log_x = log_normalise(counts, counts.sum(axis=1))
    return sparse.csr_matrix(log_x), groups


def _scanpy(x, labels, groups=None):
    adata = anndata.AnnData(X=x.copy(), obs=pd.DataFrame({"g": pd.Categorical(labels.astype(str))}))
    sc.tl.rank_genes_groups(adata, "g", method="wilcoxon", groups=groups or "all", n_genes=None)
    names = [str(n) for n in adata.obs["g"].cat.categories] if groups is None else groups
    out = {}
    for field in ("scores", "logfoldchanges", "pvals_adj"):
        frames = [sc.get.rank_genes_groups_df(adata, group=g).set_index("names") for g in names]
        out[field] = np.stack([f.loc[adata.var_names, field].to_numpy() for f in frames])
    return out


@pytest.mark.parametrize("budget", [512 * 2**20, 48 * 500])  # one chunk / many gene chunks
def test_matches_scanpy_all_groups(budget):
    x, groups = _log_counts()
    ours = wilcoxon_one_vs_rest(x, groups, 4, memory_budget_bytes=budget)
    theirs = _scanpy(x, groups)
    # scanpy stores scores and lfcs as float32
    np.testing.assert_allclose(ours.scores, theirs["scores"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.logfoldchanges, theirs["logfoldchanges"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours.pvals_adj, theirs["pvals_adj"], rtol=1e-4, atol=1e-12)
    assert (np.abs(ours.scores) > 5).any()  # the data does have markers
    np.testing.assert_array_equal(ours.n_cells, np.bincount(groups))


def test_matches_scanpy_when_some_cells_are_untested():
    # Cells outside the tested groups still count in "rest", as in scanpy with groups=[...].
    x, groups = _log_counts(seed=1)
    codes = np.where(groups == 3, -1, groups)
    ours = wilcoxon_one_vs_rest(x, codes, 3)
    theirs = _scanpy(x, groups, groups=["0", "1", "2"])
    np.testing.assert_allclose(ours.scores, theirs["scores"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.logfoldchanges, theirs["logfoldchanges"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ours.pvals_adj, theirs["pvals_adj"], rtol=1e-4, atol=1e-12)


def test_rank_sums_equal_scipy_midranks():
    rng = np.random.default_rng(3)
    dense = rng.poisson(0.7, (50, 7)).astype(np.float32)  # many ties, zeros and non-zeros
    groups = rng.integers(0, 3, 50)
    csc = sparse.csc_matrix(dense)
    genes = np.repeat(np.arange(7), np.diff(csc.indptr))
    sums = group_rank_sums(genes, csc.data, groups[csc.indices], np.bincount(groups), 7)
    ranks = stats.rankdata(dense, axis=0)
    expected = np.stack([ranks[groups == k].sum(axis=0) for k in range(3)])
    np.testing.assert_allclose(sums, expected)


def test_rejects_zero_or_negative_values():
    with pytest.raises(ValueError, match="positive"):
        group_rank_sums(np.array([0]), np.array([0.0]), np.array([0]), np.array([2]), 1)


def test_benjamini_hochberg_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(0).uniform(0, 1, (3, 40)) ** 3
    expected = np.stack([multipletests(row, method="fdr_bh")[1] for row in p])
    np.testing.assert_allclose(benjamini_hochberg(p), expected)


def test_gene_chunks_respect_budget_and_cover_all_genes():
    nnz = np.array([5, 5, 5, 20, 1, 1])
    chunks = gene_chunks(nnz, 10)
    assert chunks == [(0, 2), (2, 3), (3, 4), (4, 6)]
