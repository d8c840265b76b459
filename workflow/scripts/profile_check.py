"""Rule profile_check: a model's cell-type profiles against held-out cells of each type."""

from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.profile_check import profile_check

    settings = from_text(snakemake.params.settings)  # noqa: F821
    setup = settings.model.setup
    result = profile_check(
        snakemake.input.model,  # noqa: F821
        labels_key=setup.labels_key,
        layer=setup.layer,
        seed=settings.train.seed,
    )
    write_json(snakemake.output[0], result)  # noqa: F821
    log.info("profile check: %s", {k: v for k, v in result.items() if k != "per_label"})
