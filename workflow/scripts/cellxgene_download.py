"""Rule cellxgene_download: resolve a CELLxGENE Discover id, download its H5AD, record it."""

from scvi_hub_workflow.cellxgene import fetch_dataset
from scvi_hub_workflow.config import resolve
from scvi_hub_workflow.downloads import DownloadError, models_reading
from scvi_hub_workflow.rule_io import logged_to, write_json

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    try:
        record = fetch_dataset(
            snakemake.wildcards.cellxgene_id,  # noqa: F821
            snakemake.output.data,  # noqa: F821
            models=models_reading(resolve(snakemake.config), snakemake.output.data),  # noqa: F821
            sha256=snakemake.params.sha256,  # noqa: F821
            checksum=snakemake.params.checksum,  # noqa: F821
        )
    except DownloadError as error:
        log.error("%s", error)  # the message says it all; a traceback would only bury it
        raise SystemExit(1) from None
    write_json(snakemake.output.record, record)  # noqa: F821
