"""Rule deconvolution: pseudo-spots of held-out cells deconvolved from the published model."""

import torch
from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.deconvolution import deconvolution_check
    from scvi_hub_workflow.model_io import spatial_class

    torch.set_num_threads(snakemake.threads)  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    setup, criticism = settings.model.setup, settings.criticism
    result = deconvolution_check(
        snakemake.input.model,  # noqa: F821
        spatial_class(settings.model.kind),
        labels_key=setup.labels_key,
        layer=setup.layer,
        n_spots=criticism.deconvolution_spots,
        max_epochs=criticism.deconvolution_epochs,
        seed=settings.train.seed,
    )
    write_json(snakemake.output[0], result)  # noqa: F821
    log.info("deconvolution check: %s", result)
