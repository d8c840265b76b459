"""Rule de_groups: the label groups of the DE benchmark, checked against criticism.min_cells."""

from scvi_hub_workflow.criticism import plan_groups, read_obs
from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    plan = plan_groups(read_obs(snakemake.input[0]), settings)  # noqa: F821
    log.info("DE groups: %s", plan)
    write_json(snakemake.output[0], plan)  # noqa: F821
