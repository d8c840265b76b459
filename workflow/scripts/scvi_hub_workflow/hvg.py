"""Highly variable gene selection on raw counts, in bounded memory for `seurat_v3`.

scanpy's `highly_variable_genes(flavor="seurat_v3")` needs the whole counts matrix in memory
(5 x 10^5 cells x 20k genes is ~7 GB of CSR before its copies), so `seurat_v3` is computed here
from two streaming passes over row blocks of the file: per-batch gene sums and sums of squares
(means and variances), then, after scanpy's loess fit of log10 variance on log10 mean
(scikit-misc, `hvg.span`, degree 2), per-batch sums of the clipped counts. The ranking and the
table are scanpy's; tests/test_hvg.py checks the result equals scanpy's on small data.
`pearson_residuals` still goes through scanpy and reads the matrix whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import h5ad_io
from .rule_io import atomic_path
from .settings import HvgSettings, ModelSettings, Setup

SPAN = 0.3  # scanpy's default for seurat_v3 (hvg.span's default)

log = logging.getLogger(__name__)

# Batch-aware seurat_v3 fits a loess per batch: a 1-cell batch crashed the process (SIGSEGV)
# and batches of 2-4 cells always stopped it with "near singularities" (probes of 200 + n
# cells x 300 genes, 2026-12-01). Smaller batches than this get genes ranked over all cells.
MIN_CELLS_PER_BATCH = 10


class HVGError(ValueError):
    """Highly variable genes cannot be selected with these settings on this data."""


def tiny_batches(batches: pd.Series, min_cells: int = MIN_CELLS_PER_BATCH) -> dict[str, int]:
    """Batches with fewer than ``min_cells`` cells, with their sizes."""
    sizes = batches.astype(str).value_counts()
    return {str(b): int(n) for b, n in sizes[sizes < min_cells].items()}


def hvg_batch_key(obs: pd.DataFrame, hvg: HvgSettings, setup: Setup) -> str | None:
    """The batch key HVG selection uses: none when not batch-aware, or (said in the log) when
    a batch is too small for a per-batch fit."""
    batch_key = hvg.batch_column(setup.batch_key)
    if batch_key is None:
        return None
    tiny = tiny_batches(obs[batch_key])
    if tiny:
        listed = ", ".join(f"{b!r} ({n} cells)" for b, n in sorted(tiny.items()))
        log.warning(
            "batch %s of obs column %r (%s) has fewer than %d cells: "
            "ranking highly variable genes over all cells, not per batch (hvg.batch_aware)",
            listed,
            batch_key,
            "hvg.batch_key" if hvg.batch_key else "model.setup.batch_key",
            MIN_CELLS_PER_BATCH,
        )
        return None
    return batch_key


def _one_hot(codes: np.ndarray, n_batches: int) -> sp.csr_matrix:
    n = codes.size
    return sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_batches, n))


def seurat_v3_statistics(
    blocks, codes: np.ndarray, n_batches: int, n_genes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-batch (n, sum, sum of squares) of each gene, float64, from (rows, CSR) blocks."""
    sums = np.zeros((n_batches, n_genes))
    squares = np.zeros((n_batches, n_genes))
    for rows, block in blocks:
        block = block.astype(np.float64)
        onehot = _one_hot(codes[rows], n_batches)
        sums += np.asarray((onehot @ block).todense())
        squares += np.asarray((onehot @ block.multiply(block)).todense())
    n = np.bincount(codes, minlength=n_batches).astype(np.float64)
    return n, sums, squares


def _mean_var(n: float, total: np.ndarray, squares: np.ndarray):
    mean = total / n
    var = squares / n - mean**2
    if n != 1:  # R's unbiased variance, as scanpy's _get_mean_var
        var *= n / (n - 1)
    return mean, var


def _clip_values(n: np.ndarray, sums: np.ndarray, squares: np.ndarray, span: float = SPAN):
    """Per batch: gene means, the regularised standard deviation and Seurat's clip value."""
    from skmisc.loess import loess

    means, reg_stds, clips = [], [], []
    for b in range(n.size):
        mean, var = _mean_var(n[b], sums[b], squares[b])
        not_const = var > 0
        estimated = np.zeros(var.size)
        model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
        model.fit()
        estimated[not_const] = model.outputs.fitted_values
        reg_std = np.sqrt(10**estimated)
        means.append(mean)
        reg_stds.append(reg_std)
        clips.append(reg_std * np.sqrt(n[b]) + mean)
    return np.array(means), np.array(reg_stds), np.array(clips)


def clipped_sums(blocks, codes: np.ndarray, clips: np.ndarray):
    """Per-batch sums and sums of squares of min(count, clip[batch, gene]) over non-zeros."""
    n_batches, n_genes = clips.shape
    total = np.zeros(n_batches * n_genes)
    squares = np.zeros(n_batches * n_genes)
    for rows, block in blocks:
        row_of = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        batch = codes[rows][row_of]
        values = np.minimum(block.data.astype(np.float64), clips[batch, block.indices])
        where = batch * n_genes + block.indices
        total += np.bincount(where, weights=values, minlength=total.size)
        squares += np.bincount(where, weights=values**2, minlength=total.size)
    return total.reshape(n_batches, n_genes), squares.reshape(n_batches, n_genes)


def seurat_v3_table(
    element,
    var_names: pd.Index,
    batches: pd.Series | None,
    n_top_genes: int,
    span: float = SPAN,
) -> pd.DataFrame:
    """scanpy's seurat_v3 table (same columns and ranking), from a counts element in blocks."""
    n_cells, n_genes = h5ad_io.element_shape(element)
    if batches is None:
        codes, n_batches = np.zeros(n_cells, dtype=np.int64), 1
    else:
        # np.unique order, as scanpy loops over batches
        _, codes = np.unique(batches.astype(str).to_numpy(), return_inverse=True)
        n_batches = int(codes.max()) + 1
    n, sums, squares = seurat_v3_statistics(h5ad_io.iter_rows(element), codes, n_batches, n_genes)
    means, reg_stds, clips = _clip_values(n, sums, squares, span)
    clip_sum, clip_squares = clipped_sums(h5ad_io.iter_rows(element), codes, clips)
    norm_vars = (1 / ((n[:, None] - 1) * np.square(reg_stds))) * (
        n[:, None] * np.square(means) + clip_squares - 2 * clip_sum * means
    )
    ranked = np.argsort(np.argsort(-norm_vars, axis=1), axis=1).astype(np.float32)
    n_batches_high = np.sum(ranked < n_top_genes, axis=0)
    ranked[ranked >= n_top_genes] = np.nan
    median_rank = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    all_mean, all_var = _mean_var(float(n_cells), sums.sum(0), squares.sum(0))
    df = pd.DataFrame(
        {
            "highly_variable_rank": median_rank,
            "highly_variable_nbatches": n_batches_high,
        },
        index=var_names,
    )
    order = df.sort_values(
        ["highly_variable_rank", "highly_variable_nbatches"],
        ascending=[True, False],
        na_position="last",
    ).index
    table = pd.DataFrame(index=var_names)
    table["highly_variable"] = False
    table.loc[order[:n_top_genes], "highly_variable"] = True
    table["highly_variable_rank"] = median_rank
    table["means"] = all_mean
    table["variances"] = all_var
    table["variances_norm"] = np.mean(norm_vars, axis=0)
    if batches is not None:
        table["highly_variable_nbatches"] = n_batches_high
    return table


def select_hvg(adata: ad.AnnData, settings: ModelSettings) -> tuple[ad.AnnData, pd.DataFrame]:
    """In memory, with scanpy: subset to the highly variable genes; return it and the table.

    `seurat_v3` and `pearson_residuals` both expect counts. With `batch_aware` and a batch
    key, genes are ranked within each batch and combined, so a gene variable only because of
    a batch effect is not preferred. With `n_top_genes` null or at least the number of genes,
    every gene is kept (the table still records the ranking when it can be computed).
    """
    import scanpy as sc

    hvg, setup = settings.hvg, settings.model.setup
    _check_cells(adata.n_obs)
    n_top = hvg.n_top_genes
    batch_key = hvg_batch_key(adata.obs, hvg, setup)
    keep_all = n_top is None or n_top >= adata.n_vars
    work = adata.copy()
    kwargs = {"n_top_genes": min(n_top or adata.n_vars, adata.n_vars), "batch_key": batch_key}
    if setup.layer:
        kwargs["layer"] = setup.layer
    if hvg.flavor == "seurat_v3":
        try:
            sc.pp.highly_variable_genes(work, flavor="seurat_v3", span=hvg.span, **kwargs)
        except ValueError as error:  # scikit-misc's loess, on too few or too sparse cells
            raise _loess_error(adata.n_obs, batch_key, error) from error
    else:
        sc.experimental.pp.highly_variable_genes(work, flavor="pearson_residuals", **kwargs)
    table = work.var.copy()
    if keep_all:
        table["highly_variable"] = True
    table.index.name = "gene"
    selected = adata[:, table["highly_variable"].to_numpy()].copy()
    selected.uns["hvg"] = _record(hvg, batch_key, int(selected.n_vars))
    return selected, table


def _check_cells(n_obs: int) -> None:
    if n_obs < 2:  # scanpy's seurat_v3 crashed the process (SIGSEGV) on one cell
        raise HVGError(
            f"{n_obs} cell left (dataset.subsample_cells?): highly variable genes need "
            "at least two cells"
        )


def _loess_error(n_obs: int, batch_key: str | None, error: Exception) -> HVGError:
    return HVGError(
        f"hvg.flavor seurat_v3 cannot rank genes on {n_obs} cells"
        f"{f' per batch ({batch_key!r})' if batch_key else ''}: loess failed ({error}); "
        "use hvg.flavor: pearson_residuals, hvg.n_top_genes: null (keep every gene) "
        "or more cells"
    )


def _record(hvg: HvgSettings, batch_key: str | None, n_selected: int) -> dict:
    return {
        "flavor": hvg.flavor,
        "n_top_genes": hvg.n_top_genes,
        "batch_key": batch_key,
        "span": hvg.span if hvg.flavor == "seurat_v3" else None,
        "n_selected": n_selected,
    }


def select_hvg_file(
    source: str | Path, settings: ModelSettings, out_path: str | Path, table_path: str | Path
) -> tuple[int, int]:
    """The hvg step on the dataset step's file: select, write the table and the gene subset.

    `seurat_v3` streams the counts (above); the subset is written block by block, so memory
    does not grow with the number of cells. Returns (genes kept, genes in the file).
    """
    hvg, setup = settings.hvg, settings.model.setup
    if hvg.flavor != "seurat_v3":
        selected, table = select_hvg(ad.read_h5ad(source), settings)
        _write_table(table, table_path)
        with atomic_path(out_path) as tmp:
            selected.write_h5ad(tmp)
        return selected.n_vars, len(table)
    with h5py.File(source, "r") as f:
        obs = h5ad_io.read_frame(f["obs"])
        var = h5ad_io.read_frame(f["var"])
        _check_cells(len(obs))
        batch_key = hvg_batch_key(obs, hvg, setup)
        n_top = hvg.n_top_genes
        keep_all = n_top is None or n_top >= len(var)
        batches = obs[batch_key] if batch_key else None
        try:
            n_kept = min(n_top or len(var), len(var))
            table = seurat_v3_table(f["X"], var.index, batches, n_kept, hvg.span)
        except ValueError as error:  # scikit-misc's loess, on too few or too sparse cells
            raise _loess_error(len(obs), batch_key, error) from error
        if keep_all:
            table["highly_variable"] = True
        full = var.copy()
        for column in table.columns:
            full[column] = table[column].to_numpy()
        full.index.name = "gene"
        genes = np.flatnonzero(full["highly_variable"].to_numpy())
        skeleton = ad.AnnData(obs=obs, var=var.iloc[genes].copy())
        if "uns" in f:
            skeleton.uns = ad.io.read_elem(f["uns"])
        skeleton.uns["hvg"] = _record(hvg, batch_key, int(genes.size))
        if "varm" in f:
            for key in f["varm"]:
                skeleton.varm[key] = ad.io.read_elem(f["varm"][key])[genes]
        # per-cell entries (CITE-seq protein counts): every one kept whole
        for key in f.get("obsm", {}):
            skeleton.obsm[key] = ad.io.read_elem(f["obsm"][key])
        _write_table(full, table_path)
        with atomic_path(out_path) as tmp:
            skeleton.write_h5ad(tmp)
            with h5py.File(tmp, "a") as out:
                keys = ["X"] + ([f"layers/{setup.layer}"] if setup.layer else [])
                bound = h5ad_io.stored_entries(f["X"])
                writers = [h5ad_io.CsrWriter(out, k, len(obs), genes.size, bound) for k in keys]
                for _, block in h5ad_io.iter_rows(f["X"]):
                    part = block[:, genes]
                    for writer in writers:
                        writer.append(part)
                for writer in writers:
                    writer.close()
    return int(genes.size), len(var)


def _write_table(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t")
