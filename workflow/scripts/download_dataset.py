"""Rule download: fetch a dataset URL into resources/downloads/, checksum-verified."""

from scvi_hub_workflow.datasets import download
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    download(snakemake.params.url, snakemake.output[0], snakemake.wildcards.sha256)  # noqa: F821
