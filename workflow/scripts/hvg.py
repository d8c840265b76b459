"""Rule hvg: select highly variable genes on counts and subset the data."""

from scvi_hub_workflow.hvg import select_hvg_file
from scvi_hub_workflow.rule_io import logged_to
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    kept, total = select_hvg_file(
        snakemake.input[0],  # noqa: F821
        from_text(snakemake.params.settings),  # noqa: F821
        snakemake.output.data,  # noqa: F821
        snakemake.output.table,  # noqa: F821
    )
    log.info("kept %d of %d genes", kept, total)
