"""Rule publish: commit results/{model}/hub/ (or write its manifest), then write the receipt."""

from pathlib import Path

from scvi_hub_workflow.publish import run
from scvi_hub_workflow.rule_io import logged_to
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log.log) as log:  # noqa: F821
    receipt = run(
        Path(snakemake.input.hub[0]).parent,  # noqa: F821  (the hub folder)
        snakemake.input.model,  # noqa: F821
        from_text(snakemake.params.settings).publish,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        # a log: Snakemake keeps it when the job fails, publish.json it deletes
        snakemake.log.certification,  # noqa: F821
    )
    if receipt["published"]:
        log.info("%s at %s: %s", receipt["repo_id"], receipt["commit"], receipt["message"])
    else:
        log.info("publishing disabled; wrote the manifest of %d files", len(receipt["files"]))
