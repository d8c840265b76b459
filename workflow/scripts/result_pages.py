"""Rule result_pages: every TSV/JSON result of a model as an HTML page the report shows."""

from scvi_hub_workflow.report_pages import write_result_pages
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    write_result_pages(list(snakemake.input), snakemake.output[0], snakemake.wildcards.model)  # noqa: F821
    log.info("%d result pages", len(snakemake.input))  # noqa: F821
