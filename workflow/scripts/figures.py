"""Rule figures: the report's figures of one model (training, latent UMAP, PPC, DE)."""

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scvi_hub_workflow.figures import model_figures, save_png
from scvi_hub_workflow.layout import DATA_FILE, latent_keys
from scvi_hub_workflow.rule_io import atomic_path, logged_to
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    kind = settings.model.kind
    # The minified data hold no counts: only obs and the latent posterior are read.
    adata = ad.read_h5ad(Path(inputs.model) / DATA_FILE)
    qzm_key, _ = latent_keys(settings.model.model_class)
    # a class that cannot sample counts has empty criticism tables (model_kinds.samples_counts)
    tables = {
        name: pd.read_csv(inputs[name], sep="\t", **index) if kind.samples_counts else None
        for name, index in (
            ("cv_cells", {"index_col": "cell"}),
            ("cv_genes", {"index_col": "gene"}),
            ("de", {}),
        )
    }
    # a CITE-seq model's protein CVs, beneath the RNA's
    proteins = (
        (
            pd.read_csv(inputs.cv_protein_cells, sep="\t", index_col="cell"),
            pd.read_csv(inputs.cv_proteins, sep="\t", index_col="protein"),
        )
        if "protein" in kind.modalities and kind.samples_counts
        else None
    )
    figures = model_figures(
        pd.read_csv(inputs.history, sep="\t", index_col="epoch"),
        adata.obs,
        np.asarray(adata.obsm[qzm_key]) if kind.has_latent else None,
        tables["cv_cells"],
        tables["cv_genes"],
        tables["de"],
        json.loads(Path(inputs.cv).read_text()) if kind.samples_counts else None,
        batch_key=settings.model.setup.batch_key,
        labels_key=settings.model.setup.labels_key,
        seed=settings.train.seed,
        absent_reason=kind.not_sampling,
        unlabeled_category=settings.model.setup.unlabeled_category,
        proteins=proteins,
    )
    for name, figure in figures.items():
        with atomic_path(snakemake.output[name]) as tmp:  # noqa: F821
            save_png(figure, tmp)
        log.info("wrote the %s figure: %s", name, snakemake.output[name])  # noqa: F821
