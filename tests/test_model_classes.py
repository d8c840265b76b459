"""Every model class end to end: to hub folders that scvi-tools loads (CondSCVI, RNAStereoscope
and TOTALVI from tests/configs/spatial.yaml; SCVI and SCANVI from the tiny config's run, which
the session shares with tests/test_workflow.py), and the downstream use of each from its hub
folder (DestVI and SpatialStereoscope from CondSCVI and RNAStereoscope, scArches query mapping
onto TOTALVI), in a process that cannot import this package, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap

import pytest
from helpers import SPATIAL_CONFIG, snakemake

pytestmark = pytest.mark.slow

# What a user runs on a pulled repo: HubModel, then the class's documented downstream use with
# its default arguments, on pseudo-spots of the same genes (sums of 5 to 15 reference cells).
USER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    try:
        import scvi_hub_workflow
    except ImportError:
        pass
    else:
        raise SystemExit("this process can import the workflow's package")
    import numpy as np, scipy.sparse as sp, anndata as ad, scvi
    from scvi.hub import HubModel
    from scvi.model import DestVI
    from scvi.external import SpatialStereoscope

    hub = HubModel(sys.argv[1])
    model = hub.model
    ref = model.adata
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(ref.X)
    members = [rng.choice(ref.n_obs, size=rng.integers(5, 16), replace=False) for _ in range(40)]
    spots = np.vstack([np.asarray(counts[m].sum(0)) for m in members])
    st = ad.AnnData(spots.astype(np.float32))
    st.var_names = ref.var_names
    st.obs_names = [f"spot_{i}" for i in range(len(spots))]
    if type(model).__name__ == "CondSCVI":
        DestVI.setup_anndata(st)
        spatial = DestVI.from_rna_model(st, model)
    else:
        SpatialStereoscope.setup_anndata(st)
        spatial = SpatialStereoscope.from_rna_model(st, model)
    spatial.train(max_epochs=3)
    proportions = spatial.get_proportions()
    print(json.dumps({
        "class": type(model).__name__,
        "parent_module": hub.metadata.model_parent_module,
        "spatial_class": type(spatial).__name__,
        "shape": list(proportions.shape),
        "columns": [str(c) for c in proportions.columns],
        "labels": [str(c) for c in ref.obs["cell_type"].cat.categories],
        "row_sums": np.asarray(proportions.sum(1)).tolist(),
        "finite": bool(np.isfinite(proportions.to_numpy()).all()),
        "epochs": len(spatial.history["elbo_train"]),
    }))
    """
)


# What a user runs on a pulled repo of any class: HubModel, the latent space; and on a TOTALVI
# (CITE-seq) model, scArches query mapping of new cells with their proteins, from a batch the
# model has not seen, with scvi-tools' default arguments but a short fine-tune.
QUERY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    try:
        import scvi_hub_workflow
    except ImportError:
        pass
    else:
        raise SystemExit("this process can import the workflow's package")
    import numpy as np
    from scvi.hub import HubModel

    hub = HubModel(sys.argv[1])
    model = hub.model
    found = {
        "class": type(model).__name__,
        "parent_module": hub.metadata.model_parent_module,
        "minified": getattr(model, "minified_data_type", None) is not None,
        "latent_shape": list(model.get_latent_representation().shape),
        "n_cells": int(model.adata.n_obs),
    }
    if found["class"] == "TOTALVI":
        from scvi.model import TOTALVI

        query = model.adata[:80].copy()
        query.obs_names = [f"query_{i}" for i in range(query.n_obs)]
        query.obs["batch"] = "new_batch"
        TOTALVI.prepare_query_anndata(query, model)
        mapped = TOTALVI.load_query_data(query, model)
        mapped.train(max_epochs=3)
        latent = mapped.get_latent_representation()
        found |= {
            "query_latent_shape": list(latent.shape),
            "query_finite": bool(np.isfinite(latent).all()),
            "n_latent": int(model.module.n_latent),
            "query_epochs": len(mapped.history["elbo_train"]),
            "batches": [int(model.summary_stats.n_batch), int(mapped.summary_stats.n_batch)],
            "proteins": [
                list(map(str, m.protein_state_registry.column_names)) for m in (model, mapped)
            ],
            "query_batch_code": sorted(set(mapped.adata.obs["_scvi_batch"].tolist())),
        }
    print(json.dumps(found))
    """
)


@pytest.fixture(scope="module")
def spatial_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("spatial-run")
    result = snakemake("--cores", "2", "--configfile", str(SPATIAL_CONFIG), workdir=workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


def run_as_a_user(hub_folder, tmp_path, script: str = USER_SCRIPT) -> dict:
    """USER_SCRIPT in a fresh interpreter whose path holds the installed packages only: no
    site .pth files (the editable install of this package is one), no PYTHONPATH, cwd outside
    the repository."""
    site_packages = sysconfig.get_paths()["purelib"]
    bootstrap = (
        f"import sys; sys.path.append({site_packages!r}); sys.argv[1:] = [{str(hub_folder)!r}]"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", bootstrap + "\n" + script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("model", "model_class", "parent_module", "spatial_class"),
    [
        ("tiny-condscvi", "CondSCVI", "scvi.model", "DestVI"),
        ("tiny-stereoscope", "RNAStereoscope", "scvi.external", "SpatialStereoscope"),
    ],
)
def test_hub_folder_deconvolves_spatial_data_without_the_workflow(
    spatial_run, tmp_path, model, model_class, parent_module, spatial_class
):
    found = run_as_a_user(spatial_run / "results" / model / "hub", tmp_path)
    assert found["class"] == model_class and found["parent_module"] == parent_module
    assert found["spatial_class"] == spatial_class and found["epochs"] == 3
    # one proportion per pseudo-spot and cell type of the reference, summing to one
    assert found["shape"] == [40, len(found["labels"])]
    assert sorted(found["columns"]) == sorted(found["labels"])
    assert found["finite"]
    assert all(abs(total - 1) < 1e-4 for total in found["row_sums"])


def test_each_class_publishes_its_training_data_and_says_what_applies(spatial_run):
    import anndata as ad

    results = spatial_run / "results"
    for model, n_vars in (("tiny-condscvi", 150), ("tiny-stereoscope", 150)):
        data = ad.read_h5ad(results / model / "hub" / "adata.h5ad")
        # the training data, not a minified AnnData: DestVI computes its prior from them
        assert data.n_vars == n_vars and data.X.sum() > 0
        assert "_scvi_adata_minify_type" not in data.uns
    condscvi = (results / "tiny-condscvi" / "card" / "README.md").read_text()
    assert "**Cell-wise Coefficient of Variation**" in condscvi
    assert "DestVI.from_rna_model(st_adata, model)" in condscvi
    assert "Query mapping" not in condscvi
    stereoscope = (results / "tiny-stereoscope" / "card" / "README.md").read_text()
    assert "cannot sample counts" in stereoscope
    assert "Coefficient of Variation**" not in stereoscope
    assert "SpatialStereoscope.from_rna_model(st_adata, model)" in stereoscope
    training = json.loads((results / "tiny-stereoscope" / "training" / "summary.json").read_text())
    assert "final_kl_weight" not in training["phases"][-1]  # no latent space, no KL term
    training = json.loads((results / "tiny-condscvi" / "training" / "summary.json").read_text())
    assert 0 < training["phases"][-1]["final_kl_weight"] < 1  # 3 epochs of a 400-epoch warm-up
    cv = json.loads((results / "tiny-stereoscope" / "criticism" / "cv.json").read_text())
    assert cv["ran"] is False and "cannot sample counts" in cv["skipped_reason"]
    profiles = json.loads(
        (results / "tiny-stereoscope" / "criticism" / "profile_check.json").read_text()
    )
    assert profiles["ran"] and len(profiles["per_label"]) == 6
    assert 0 <= profiles["match_accuracy"] <= 1 and profiles["chance"] == pytest.approx(1 / 6)
    assert "Cell-type profiles" in stereoscope and "Cell-type profiles" not in condscvi
    for model, spatial_model in (
        ("tiny-condscvi", "DestVI"),
        ("tiny-stereoscope", "SpatialStereoscope"),
    ):
        found = json.loads((results / model / "criticism" / "deconvolution.json").read_text())
        assert found["ran"] and found["spatial_model"] == spatial_model
        assert 0 <= found["rmse"] < 1 and found["n_spots"] == 40
        card = (results / model / "card" / "README.md").read_text()
        assert f"deconvolved by {spatial_model}.from_rna_model(st_adata, model)" in card
    summary = (results / "models.tsv").read_text().splitlines()
    header = summary[0].split("\t")
    row = next(line.split("\t") for line in summary if line.startswith("tiny-stereoscope"))
    row = dict(zip(header, row, strict=True))
    assert row["class"] == "RNAStereoscope" and row["cell_cv_pearson_validation"] == "n/a"


@pytest.mark.parametrize(
    ("run", "model", "model_class", "minified"),
    [
        ("tiny_run", "tiny-scvi", "SCVI", True),
        ("tiny_run", "tiny-scanvi", "SCANVI", True),
        ("spatial_run", "tiny-condscvi", "CondSCVI", False),
        ("spatial_run", "tiny-totalvi", "TOTALVI", False),
    ],
)
def test_every_class_loads_from_its_hub_folder_without_the_workflow(
    request, tmp_path, run, model, model_class, minified
):
    """(RNAStereoscope, which has no latent space, loads in the deconvolution test above.)"""
    workdir = request.getfixturevalue(run)
    found = run_as_a_user(workdir / "results" / model / "hub", tmp_path, QUERY_SCRIPT)
    assert found["class"] == model_class and found["parent_module"] == "scvi.model"
    assert found["minified"] is minified
    assert found["latent_shape"][0] == found["n_cells"]
    if model_class == "TOTALVI":
        # the mapped cells, each with a finite latent of the reference's size, in a new batch
        assert found["query_latent_shape"] == [80, found["n_latent"]] == [80, 4]
        assert found["query_finite"] and found["query_epochs"] == 3
        assert found["batches"] == [2, 3] and found["query_batch_code"] == [2]
        assert found["proteins"][0] == found["proteins"][1] == [f"protein_{i}" for i in range(24)]


def test_totalvi_carries_its_proteins_and_is_criticised_per_modality(spatial_run, tmp_path):
    import anndata as ad
    from scvi_hub_workflow.publish.certify import _run_child, write_query

    results = spatial_run / "results" / "tiny-totalvi"
    data = ad.read_h5ad(results / "hub" / "adata.h5ad")
    # its HVG data: not minified (scvi-tools 1.4.2 cannot reload a minified TOTALVI AnnData)
    assert data.n_vars == 150 and data.X.sum() > 0 and "_scvi_adata_minify_type" not in data.uns
    assert data.obsm["protein_expression"].shape == (400, 24)
    dataset = json.loads((results / "dataset.json").read_text())
    assert dataset["proteins"]["n_proteins"] == 24
    cv = json.loads((results / "criticism" / "cv.json").read_text())
    for part in (cv, cv["protein"]):
        assert part["cell_wise"]["validation"]["n_cells"] > 0
        assert -1 <= part["cell_wise"]["validation"]["ceiling"]["pearson"] <= 1
    assert cv["gene_wise"]["all"]["n_genes"] == 150 and cv["protein"]["n_proteins"] == 24
    assert cv["protein"]["gene_wise"]["all"]["n_genes"] == 24
    # the values behind them, for the PPC figure's protein row
    proteins = (results / "criticism" / "cv_proteins.tsv").read_text().splitlines()
    assert proteins[0] == "protein\tobserved_cv\tmodel_cv" and len(proteins) == 1 + 24
    de = json.loads((results / "criticism" / "de.json").read_text())
    assert de["groups"]  # the DE benchmark on the RNA (Leiden clusters: no labels)
    card = (results / "card" / "README.md").read_text()
    assert "**Cell-wise Coefficient of Variation (proteins)**" in card
    assert "**Protein-wise Coefficient of Variation**" in card
    assert "| Proteins | " in card and "(perfect model " in card
    assert "totalVI manuscript" in card and "TOTALVI.load_query_data" in card
    assert "modality:protein" in card and "Query mapping" in card
    query = json.loads((results / "criticism" / "query_check.json").read_text())
    assert query["ran"] and query["n_query_cells"] > 0 and 0 <= query["knn_overlap"] <= 1
    # publishing certifies the pulled folder with held-out cells, their proteins with them
    assert write_query(results / "model", tmp_path / "query.h5ad") > 0
    certified = _run_child(
        results / "hub",
        str(tmp_path / "query.h5ad"),
        2,
        tmp_path / "latent.npz",
        results / "model",
        600,
    )
    assert certified["model_class"] == "TOTALVI"
    assert certified["ran"].startswith("scArches query mapping")
