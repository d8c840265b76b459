"""Highly variable gene selection with scanpy, on raw counts."""

from __future__ import annotations

import anndata as ad
import pandas as pd
import scanpy as sc

from .config import HvgStep


def select_hvg(adata: ad.AnnData, settings: HvgStep) -> tuple[ad.AnnData, pd.DataFrame]:
    """Subset to the highly variable genes; return the subset and the per-gene table.

    `seurat_v3` and `pearson_residuals` both expect counts. With `batch_aware` and a batch
    key, genes are ranked within each batch and combined, so a gene variable only because of
    a batch effect is not preferred. With `n_top_genes` null or at least the number of genes,
    every gene is kept (the table still records the ranking when it can be computed).
    """
    hvg, setup = settings.hvg, settings.setup
    n_top = hvg.n_top_genes
    batch_key = setup.batch_key if hvg.batch_aware else None
    keep_all = n_top is None or n_top >= adata.n_vars
    work = adata.copy()
    kwargs = {"n_top_genes": min(n_top or adata.n_vars, adata.n_vars), "batch_key": batch_key}
    if setup.layer:
        kwargs["layer"] = setup.layer
    if hvg.flavor == "seurat_v3":
        sc.pp.highly_variable_genes(work, flavor="seurat_v3", **kwargs)
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
