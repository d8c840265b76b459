"""Rule de_benchmark: per-group differential-expression agreement -> de.tsv and de.json."""

from scvi_hub_workflow.rule_io import atomic_path, logged_to, write_json

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.criticism import (
        differential_expression_check,
        load_minified_model,
        resolve_groups,
    )

    settings = snakemake.params.settings  # noqa: F821
    model = load_minified_model(snakemake.input.model)  # noqa: F821
    grouping = resolve_groups(
        model,
        labels_key=settings.get("labels_key"),
        unlabeled_category=settings.get("unlabeled_category"),
        min_cells=int(settings["min_cells"]),
        cluster_resolution=float(settings["cluster_resolution"]),
        seed=int(settings["seed"]),
    )
    log.info(
        "DE groups from %s %r: %d groups", grouping.grouping, grouping.key, len(grouping.names)
    )
    table, summary = differential_expression_check(
        model,
        snakemake.input.data,  # noqa: F821
        grouping,
        layer=settings.get("layer"),
        n_samples=int(settings["n_samples"]),
        batch_size=int(settings["batch_size"]),
        seed=int(settings["seed"]),
        alpha=float(settings["alpha"]),
        top_n=int(settings["top_n"]),
    )
    with atomic_path(snakemake.output.table) as tmp:  # noqa: F821
        table.to_csv(tmp, sep="\t", index=False, na_rep="NaN")
    write_json(snakemake.output.summary, summary)  # noqa: F821
    log.info("wrote %s and %s", snakemake.output.table, snakemake.output.summary)  # noqa: F821
