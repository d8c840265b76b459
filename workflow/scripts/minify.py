"""Rule minify: store the latent posterior and save the model with a minified AnnData."""

from scvi_hub_workflow.rule_io import logged_to
from scvi_hub_workflow.training import minify_model

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    log.info("minified: %s", minify_model(snakemake.input[0], snakemake.output[0]))  # noqa: F821
