"""Rule posterior_predictive_check: CV metrics and the DE benchmark from one sampling pass."""

from scvi_hub_workflow.rule_io import atomic_path, logged_to, write_json

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.criticism import criticise, load_minified_model, resolve_groups

    settings = snakemake.params.settings  # noqa: F821
    model = load_minified_model(snakemake.input.model)  # noqa: F821
    grouping = resolve_groups(
        model,
        labels_key=settings["labels_key"],
        unlabeled_category=settings["unlabeled_category"],
        min_cells=settings["min_cells"],
        cluster_resolution=settings["cluster_resolution"],
        seed=settings["seed"],
    )
    log.info(
        "DE groups from %s %r: %d groups", grouping.grouping, grouping.key, len(grouping.names)
    )
    cv, table, summary = criticise(
        model,
        snakemake.input.data,  # noqa: F821
        grouping,
        layer=settings["layer"],
        n_samples=settings["n_samples"],
        batch_size=settings["batch_size"],
        seed=settings["seed"],
        alpha=settings["alpha"],
        top_n=settings["top_n"],
        # the rule's threads: sampling and bookkeeping of minibatches run in parallel threads
        n_workers=snakemake.threads,  # noqa: F821
    )
    write_json(snakemake.output.cv, cv)  # noqa: F821
    with atomic_path(snakemake.output.de_table) as tmp:  # noqa: F821
        table.to_csv(tmp, sep="\t", index=False, na_rep="NaN")
    write_json(snakemake.output.de_summary, summary)  # noqa: F821
    log.info("cell-wise CV: %s", cv["cell_wise"])
