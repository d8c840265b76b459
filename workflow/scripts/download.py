"""Rule download: fetch a dataset URL into resources/downloads/, checksum-verified."""

from scvi_hub_workflow.config import resolve
from scvi_hub_workflow.downloads import DownloadError, download, models_reading
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    try:
        download(
            snakemake.params.url,  # noqa: F821
            snakemake.output[0],  # noqa: F821
            snakemake.params.sha256,  # noqa: F821
            checksum=snakemake.params.checksum,  # noqa: F821
        )
    except DownloadError as error:
        models = models_reading(resolve(snakemake.config), snakemake.output[0])  # noqa: F821
        log.error("%s", error.for_models(models, f"dataset.source {snakemake.params.url}"))  # noqa: F821
        raise SystemExit(1) from None
