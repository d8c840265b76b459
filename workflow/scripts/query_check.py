"""Rule query_check: hold out a batch, map it onto a reference trained without it, compare."""

import json
from pathlib import Path

from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    import torch
    from scvi_hub_workflow.query_check import check_query_mapping

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    result = check_query_mapping(
        inputs.data,
        json.loads(Path(inputs.plan).read_text()),
        inputs.full_model,
        from_text(snakemake.params.settings),  # noqa: F821
    )
    write_json(snakemake.output[0], result)  # noqa: F821
    log.info("query mapping check: %s", result)
