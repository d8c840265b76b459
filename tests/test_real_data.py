"""The workflow on real counts: CellBench (five cell lines, five batches) from ../shared/data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import scvi.hub
from helpers import ROOT, SHARED, snakemake

# End to end (minutes): `make test-fast` leaves it out, `make test` runs it.
pytestmark = pytest.mark.slow

DATA = SHARED / "data" / "cellbench_5batch.h5ad"


@pytest.mark.skipif(not DATA.is_file(), reason=f"real data not present at {DATA}")
def test_scanvi_on_cellbench(tmp_path):
    (tmp_path / DATA.name).symlink_to(DATA)
    config = ROOT / "tests" / "configs" / "cellbench.yaml"
    result = snakemake("--cores", "2", "--configfile", str(config), workdir=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    results = tmp_path / "results" / "cellbench-scanvi"
    model = scvi.hub.HubModel(str(results / "hub")).model
    assert model.adata.n_vars == 1000
    de = pd.read_csv(results / "criticism" / "de.tsv", sep="\t")
    assert len(de) == 5  # the five cell lines
    # Cell lines differ strongly: a trained model recovers their markers far above chance.
    assert de["roc_auc"].mean() > 0.7
    # ...and its samples keep the ranking of genes by variability (chance would be ~0).
    cv = json.loads((results / "criticism" / "cv.json").read_text())
    assert cv["gene_wise"]["all"]["spearman"] > 0.3
