"""Rule integration: scib-metrics of the model's latent means beside the PCA baseline."""

import json
from pathlib import Path

import pandas as pd
from scvi_hub_workflow.rule_io import atomic_path, logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow import figures
    from scvi_hub_workflow.checks import skip_reason
    from scvi_hub_workflow.integration import integrate, skipped
    from scvi_hub_workflow.layout import CLUSTER_COLUMN, DATA_FILE, RAN, SKIPPED_REASON

    inputs, output = snakemake.input, snakemake.output  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    # Data that allow no measurement (one batch): the reason, at once, instead of the metrics.
    reason = skip_reason("integration", json.loads(Path(inputs.dataset).read_text()), settings)
    if reason:
        summary, table = skipped(reason, settings)
        write_json(output.summary, summary)
        with atomic_path(output.table) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
        with atomic_path(output.figure) as tmp:
            figures.save_png(figures.not_computed("Integration", reason), tmp)
        log.info("integration not computed: %s", reason)
    else:
        # Without labels: the Leiden clusters the posterior predictive check wrote, per cell.
        clusters = (
            pd.read_csv(inputs.cells, sep="\t", dtype=str)[CLUSTER_COLUMN]
            if hasattr(inputs, "cells")
            else None
        )
        summary, table = integrate(
            f"{inputs.model}/{DATA_FILE}",
            inputs.data,
            settings,
            labels=clusters,
            n_jobs=snakemake.threads,  # noqa: F821
        )
        write_json(output.summary, summary)
        with atomic_path(output.table) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
        with atomic_path(output.figure) as tmp:
            figures.save_png(figures.integration_scores(table, summary), tmp)
        if not summary[RAN]:  # e.g. every scored (labelled) cell in one batch
            log.warning("integration not computed: %s", summary[SKIPPED_REASON])
        else:
            log.info(
                "integration on %d cells (%s): %s",
                summary["n_cells"],
                summary["label_source"],
                {"model": summary["total"], "pca": summary["total_pca"]},
            )
