"""Rule hub: collect exactly the files to publish into results/{model}/hub/."""

from scvi_hub_workflow.hub import assemble_hub_folder
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    files = assemble_hub_folder(
        snakemake.input.model,  # noqa: F821
        snakemake.input.card,  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
    log.info("hub folder holds %s", files)
