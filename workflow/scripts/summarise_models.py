"""Rule model_summary: one table, every model of the config side by side."""

import json
from pathlib import Path

from scvi_hub_workflow.model_summary import summary_row, summary_table
from scvi_hub_workflow.rule_io import atomic_path, logged_to


def read(path):
    return json.loads(Path(path).read_text())


with logged_to(snakemake.log[0]):  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    # results/{model}/<step>/<file>: the model is the folder two levels up
    transfers = {Path(p).parts[-3]: read(p) for p in inputs.label_transfer}
    integrations = {Path(p).parts[-3]: read(p) for p in inputs.integration}
    queries = {Path(p).parts[-3]: read(p) for p in inputs.query_check}
    rows = [
        summary_row(
            name := Path(t).parts[-3],
            read(t),
            read(c),
            read(d),
            transfers.get(name),
            integrations.get(name),
            queries.get(name),
        )
        for t, c, d in zip(inputs.training, inputs.cv, inputs.de, strict=True)
    ]
    with atomic_path(snakemake.output[0]) as tmp:  # noqa: F821
        summary_table(rows).to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.3f")
