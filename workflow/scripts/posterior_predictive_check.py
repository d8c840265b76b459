"""Rule posterior_predictive_check: CV metrics and the DE benchmark from one sampling pass."""

from scvi_hub_workflow.rule_io import atomic_path, logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow.criticism import not_applicable, posterior_predictive_check, read_obs

    settings = from_text(snakemake.params.settings)  # noqa: F821
    if not settings.model.kind.samples_counts:
        # A class that cannot sample counts: the results say why, the tables stay empty.
        result = not_applicable(settings)
        log.info("not applicable to %s: %s", settings.model.model_class, result)
        write_json(snakemake.output.cv, result)  # noqa: F821
        write_json(snakemake.output.de_summary, result)  # noqa: F821
        for name in (
            "de_table",
            "cells",
            "cv_cells",
            "cv_genes",
            "cv_protein_cells",
            "cv_proteins",
        ):
            with atomic_path(snakemake.output[name]) as tmp:  # noqa: F821
                tmp.write_text("")
    else:
        grouping, cv, table, summary, values = posterior_predictive_check(
            snakemake.input.model,  # noqa: F821
            snakemake.input.data,  # noqa: F821
            settings,
            # the rule's threads: sampling and bookkeeping of minibatches run in parallel threads
            n_workers=snakemake.threads,  # noqa: F821
        )
        log.info(
            "DE groups from %s %r: %d groups; left out (under criticism.min_cells): %s",
            grouping.grouping,
            grouping.key,
            len(grouping.names),
            grouping.left_out or "none",
        )
        write_json(snakemake.output.cv, cv)  # noqa: F821
        with atomic_path(snakemake.output.de_table) as tmp:  # noqa: F821
            table.to_csv(tmp, sep="\t", index=False, na_rep="NaN")
        write_json(snakemake.output.de_summary, summary)  # noqa: F821
        with atomic_path(snakemake.output.cells) as tmp:  # noqa: F821
            # the model's cells are those of its data file, in the same order
            cells = grouping.cells(read_obs(snakemake.input.data).index)  # noqa: F821
            cells.to_csv(tmp, sep="\t", index=False)
        with atomic_path(snakemake.output.cv_cells) as tmp:  # noqa: F821
            values.cells.to_csv(tmp, sep="\t")
        with atomic_path(snakemake.output.cv_genes) as tmp:  # noqa: F821
            values.genes.to_csv(tmp, sep="\t")
        for name, table in (
            ("cv_protein_cells", values.protein_cells),
            ("cv_proteins", values.proteins),
        ):
            with atomic_path(snakemake.output[name]) as tmp:  # noqa: F821
                if table is None:  # a model without proteins
                    tmp.write_text("")
                else:
                    table.to_csv(tmp, sep="\t")
        log.info("cell-wise CV: %s", cv["cell_wise"])
