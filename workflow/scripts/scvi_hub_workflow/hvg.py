"""Highly variable gene selection with scanpy, on raw counts."""

from __future__ import annotations

import logging

import anndata as ad
import pandas as pd
import scanpy as sc

from .config import HvgSettings, HvgStep, Setup

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
    batch_key = setup.batch_key if hvg.batch_aware else None
    if batch_key is None:
        return None
    tiny = tiny_batches(obs[batch_key])
    if tiny:
        listed = ", ".join(f"{b!r} ({n} cells)" for b, n in sorted(tiny.items()))
        log.warning(
            "batch %s of obs column %r (model.setup.batch_key) has fewer than %d cells: "
            "ranking highly variable genes over all cells, not per batch (hvg.batch_aware)",
            listed,
            batch_key,
            MIN_CELLS_PER_BATCH,
        )
        return None
    return batch_key


def select_hvg(adata: ad.AnnData, settings: HvgStep) -> tuple[ad.AnnData, pd.DataFrame]:
    """Subset to the highly variable genes; return the subset and the per-gene table.

    `seurat_v3` and `pearson_residuals` both expect counts. With `batch_aware` and a batch
    key, genes are ranked within each batch and combined, so a gene variable only because of
    a batch effect is not preferred. With `n_top_genes` null or at least the number of genes,
    every gene is kept (the table still records the ranking when it can be computed).
    """
    hvg, setup = settings.hvg, settings.setup
    if adata.n_obs < 2:  # scanpy's seurat_v3 crashed the process (SIGSEGV) on one cell
        raise HVGError(
            f"{adata.n_obs} cell left (dataset.subsample_cells?): highly variable genes need "
            "at least two cells"
        )
    n_top = hvg.n_top_genes
    batch_key = hvg_batch_key(adata.obs, hvg, setup)
    keep_all = n_top is None or n_top >= adata.n_vars
    work = adata.copy()
    kwargs = {"n_top_genes": min(n_top or adata.n_vars, adata.n_vars), "batch_key": batch_key}
    if setup.layer:
        kwargs["layer"] = setup.layer
    if hvg.flavor == "seurat_v3":
        try:
            sc.pp.highly_variable_genes(work, flavor="seurat_v3", **kwargs)
        except ValueError as error:  # scikit-misc's loess, on too few or too sparse cells
            raise HVGError(
                f"hvg.flavor seurat_v3 cannot rank genes on {adata.n_obs} cells"
                f"{f' per batch ({batch_key!r})' if batch_key else ''}: loess failed ({error}); "
                "use hvg.flavor: pearson_residuals, hvg.n_top_genes: null (keep every gene) "
                "or more cells"
            ) from error
    else:
        sc.experimental.pp.highly_variable_genes(work, flavor="pearson_residuals", **kwargs)
    table = work.var.copy()
    if keep_all:
        table["highly_variable"] = True
    table.index.name = "gene"
    selected = adata[:, table["highly_variable"].to_numpy()].copy()
    selected.uns["hvg"] = {
        "flavor": hvg.flavor,
        "n_top_genes": n_top,
        "batch_key": batch_key,
        "n_selected": int(selected.n_vars),
    }
    return selected, table
