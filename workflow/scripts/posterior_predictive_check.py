"""Rule posterior_predictive_check: coefficient-of-variation agreement -> criticism/cv.json."""

from scvi_hub_workflow.rule_io import logged_to, write_json

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.criticism import coefficient_of_variation_check, load_minified_model

    settings = snakemake.params.settings  # noqa: F821
    model = load_minified_model(snakemake.input.model)  # noqa: F821
    result = coefficient_of_variation_check(
        model,
        snakemake.input.data,  # noqa: F821
        layer=settings.get("layer"),
        n_samples=int(settings["n_samples"]),
        batch_size=int(settings["batch_size"]),
        seed=int(settings["seed"]),
    )
    write_json(snakemake.output[0], result)  # noqa: F821
    log.info("wrote %s", snakemake.output[0])  # noqa: F821
