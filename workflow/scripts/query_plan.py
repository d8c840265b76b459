"""Rule query_plan: before training, the batch the query check will hold out, or why not."""

import json
from pathlib import Path

from scvi_hub_workflow.layout import RAN, SKIPPED_REASON
from scvi_hub_workflow.query_check import plan_query
from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    dataset = json.loads(Path(snakemake.input.dataset).read_text())  # noqa: F821
    plan = plan_query(dataset, from_text(snakemake.params.settings))  # noqa: F821
    if plan[RAN]:
        log.info("query check: holding out batch %r", plan["query_batch"])
    else:
        log.warning("query_check will not be measured: %s", plan[SKIPPED_REASON])
    write_json(snakemake.output[0], plan)  # noqa: F821
