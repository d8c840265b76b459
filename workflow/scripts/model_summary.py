"""Rule model_summary: one table, every model of the config side by side."""

import json
from pathlib import Path

from scvi_hub_workflow.checks import CHECKS
from scvi_hub_workflow.model_summary import summary_row, summary_table
from scvi_hub_workflow.report_pages import table_page
from scvi_hub_workflow.rule_io import atomic_path, logged_to


def read(path):
    return json.loads(Path(path).read_text())


def by_model(paths):
    # results/{model}/<step>/<file>: the model is the folder two levels up
    return {Path(p).parts[-3]: read(p) for p in paths}


with logged_to(snakemake.log[0]):  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    # each optional check's results are an input named after it, for the models it applies to
    results = {check.name: by_model(getattr(inputs, check.name, [])) for check in CHECKS}
    rows = [
        summary_row(
            name := Path(t).parts[-3],
            read(t),
            read(c),
            read(d),
            {check: found[name] for check, found in results.items() if name in found},
        )
        for t, c, d in zip(inputs.training, inputs.cv, inputs.de, strict=True)
    ]
    table = summary_table(rows)
    with atomic_path(snakemake.output.table) as tmp:  # noqa: F821
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.3f")
    with atomic_path(snakemake.output.page) as tmp:  # noqa: F821
        tmp.write_text(table_page(table, "Every model of the config"))
