"""Rule hvg: select highly variable genes on counts and subset the data."""

import anndata as ad
from scvi_hub_workflow.config import from_text
from scvi_hub_workflow.hvg import select_hvg
from scvi_hub_workflow.rule_io import atomic_path, logged_to

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    selected, table = select_hvg(
        ad.read_h5ad(snakemake.input[0]),  # noqa: F821
        from_text(snakemake.params.settings),  # noqa: F821
    )
    log.info("kept %d of %d genes", selected.n_vars, len(table))
    with atomic_path(snakemake.output.table) as tmp:  # noqa: F821
        table.to_csv(tmp, sep="\t")
    with atomic_path(snakemake.output.data) as tmp:  # noqa: F821
        selected.write_h5ad(tmp)
