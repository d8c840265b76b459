"""Rule hub: collect exactly the files to publish into results/{model}/hub/."""

from pathlib import Path

from scvi_hub_workflow.hub import assemble_hub_folder, hub_sources
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    sources = hub_sources(
        snakemake.input.model,  # noqa: F821
        snakemake.input.card,  # noqa: F821
        snakemake.input.metadata,  # noqa: F821
        snakemake.input.provenance,  # noqa: F821
    )
    files = assemble_hub_folder(sources, Path(snakemake.output[0]).parent)  # noqa: F821
    log.info("hub folder holds %s", files)
