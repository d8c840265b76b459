"""Rule dataset: read the model's data, validate it against the config, write the clean copy."""

import json
from pathlib import Path

from scvi_hub_workflow.datasets import prepare_dataset
from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    record = json.loads(Path(inputs.record).read_text()) if hasattr(inputs, "record") else None
    summary = prepare_dataset(
        inputs.data,
        from_text(snakemake.params.settings),  # noqa: F821
        snakemake.output.data,  # noqa: F821
        record,
    )
    log.info("dataset: %s", summary)
    write_json(snakemake.output.summary, summary)  # noqa: F821
