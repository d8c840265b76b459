"""Rule provenance: how the model was made, as provenance.json (published with the model)."""

import json
from pathlib import Path

import pandas as pd
from scvi_hub_workflow.provenance import build_provenance
from scvi_hub_workflow.rule_io import logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    record = build_provenance(
        from_text(snakemake.params.settings),  # noqa: F821  (every section)
        json.loads(Path(inputs.dataset).read_text()),
        pd.read_csv(inputs.hvg, sep="\t", index_col=0),
        json.loads(Path(inputs.training).read_text()),
        inputs.env,
        snakemake.params.env,  # noqa: F821  (the name the record gives it)
    )
    write_json(snakemake.output[0], record)  # noqa: F821
    log.info("settings sha256 %s, workflow %s", record["settings_sha256"], record["workflow"])
