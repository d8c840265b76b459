"""Rule download: fetch a dataset URL into resources/downloads/, checksum-verified."""

from scvi_hub_workflow.downloads import download
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    download(
        snakemake.params.url,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        snakemake.params.sha256,  # noqa: F821
        checksum=snakemake.params.checksum,  # noqa: F821
    )
