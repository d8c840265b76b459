"""Rule de_groups: the label groups of the DE benchmark, checked against criticism.min_cells."""

import json
from pathlib import Path

from scvi_hub_workflow.checks import skip_reason
from scvi_hub_workflow.criticism import plan_groups, read_obs
from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    plan = plan_groups(read_obs(snakemake.input.data), settings)  # noqa: F821
    log.info("DE groups: %s", plan)
    # whether integration can measure anything on these batches and labels, said before
    # training (only its keys are declared here: see the rule)
    dataset = json.loads(Path(snakemake.input.dataset).read_text())  # noqa: F821
    plan["optional_checks"] = (
        {"integration": skip_reason("integration", dataset, settings)}
        if settings.model.setup.batch_key
        else {}
    )
    for check, reason in plan["optional_checks"].items():
        if reason:
            log.warning("%s will not be measured: %s", check, reason)
    write_json(snakemake.output[0], plan)  # noqa: F821
