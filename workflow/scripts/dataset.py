"""Rule dataset: read the model's data, validate it against the config, write the clean copy."""

import json
from functools import partial
from pathlib import Path

from scvi_hub_workflow.cellxgene import newest_version
from scvi_hub_workflow.datasets import newer_version, prepare_dataset
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
    # a bare dataset id: is the version downloaded first still the newest?
    check = partial(newest_version, timeout_s=20.0)
    if (note := newer_version(record, check)) is not None:
        summary["cellxgene_version_check"] = note
    log.info("dataset: %s", summary)
    write_json(snakemake.output.summary, summary)  # noqa: F821
