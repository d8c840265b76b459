"""Rule query_check: hold out a batch, map it onto a reference trained without it, compare."""

import json
from pathlib import Path

from scvi_hub_workflow.config import from_text
from scvi_hub_workflow.rule_io import logged_to, write_json

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.query_check import full_model_latent, should_run, skipped

    inputs = snakemake.input  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    n_cells = json.loads(Path(inputs.dataset).read_text())["n_cells"]
    run, reason = should_run(settings.query_check, n_cells, settings.query_check_max_cells)
    if run:
        import torch
        from scvi_hub_workflow.query_check import run_query_check

        torch.set_num_threads(snakemake.threads)  # noqa: F821
        full = full_model_latent(inputs.full_model, settings.model.model_class)
        result = run_query_check(inputs.data, full, settings)
    else:
        result = skipped(reason)
    write_json(snakemake.output[0], result)  # noqa: F821
    log.info("query mapping check: %s", result)
