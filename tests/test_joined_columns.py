"""`dataset.join_columns` and `hvg.batch_key`: the Tabula Sapiens recipe's donor_assay batch."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import rule_settings
from scvi_hub_workflow.builtin_datasets import simulated_atlas
from scvi_hub_workflow.config import ConfigError, model_settings, resolve
from scvi_hub_workflow.datasets import DatasetError, prepare_dataset
from scvi_hub_workflow.hvg import select_hvg_file
from scvi_hub_workflow.joined_columns import join_columns

JOIN = {"donor_assay": ["donor_id", "assay"]}


def atlas(n_cells: int = 240, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = sp.random(n_cells, 30, density=0.4, random_state=seed, format="csr") * 20
    counts.data = np.ceil(counts.data).astype(np.float32)
    obs = pd.DataFrame(
        {
            "donor_id": pd.Categorical(rng.choice(["TSP14", "TSP2"], size=n_cells)),
            "assay": pd.Categorical(rng.choice(["10x 3' v3", "Smart-seq2"], size=n_cells)),
            "tissue": pd.Categorical(rng.choice(["Lung", "Liver"], size=n_cells)),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"g{i}" for i in range(30)]))


def entry(dataset=None, hvg=None, **setup) -> dict:
    return {
        "dataset": {"source": "builtin:synthetic-iid", "join_columns": JOIN, **(dataset or {})},
        "model": {"class": "SCVI", "setup": setup or {"batch_key": "donor_assay"}},
        "hvg": {"flavor": "pearson_residuals", **(hvg or {})},
        "train": {"early_stopping": False},
    }


def dataset_settings(**kwargs):
    return rule_settings(model_settings({"models": {"m": entry(**kwargs)}}, "m"), "dataset")


def test_the_joined_column_is_the_values_joined_with_underscore():
    obs = atlas().obs
    out = join_columns(obs, JOIN)
    expected = obs["donor_id"].astype(str) + "_" + obs["assay"].astype(str)
    assert list(out["donor_assay"]) == list(expected)
    assert "TSP14_10x 3' v3" in set(out["donor_assay"])
    assert "donor_assay" not in obs.columns  # the caller's frame is left as it was


def test_the_dataset_step_makes_the_batch_before_the_subset(tmp_path):
    adata = atlas()
    source = tmp_path / "atlas.h5ad"
    adata.write_h5ad(source)
    settings = dataset_settings(dataset={"subset": {"donor_assay": ["TSP14_10x 3' v3"]}})
    summary = prepare_dataset(source, settings, tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    keep = ((adata.obs["donor_id"] == "TSP14") & (adata.obs["assay"] == "10x 3' v3")).to_numpy()
    assert list(out.obs_names) == list(adata.obs_names[keep])
    assert set(out.obs["donor_assay"]) == {"TSP14_10x 3' v3"}
    assert summary["batches"] == {"TSP14_10x 3' v3": int(keep.sum())}


def test_a_missing_column_is_named_with_its_key(tmp_path):
    adata = atlas()
    del adata.obs["assay"]
    source = tmp_path / "atlas.h5ad"
    adata.write_h5ad(source)
    with pytest.raises(DatasetError, match=r"'assay' \(dataset.join_columns.donor_assay\)"):
        prepare_dataset(source, dataset_settings(), tmp_path / "out.h5ad")
    # the HVG batch column is checked there too, before any count is read
    with pytest.raises(DatasetError, match=r"'plate' \(hvg.batch_key\) not found"):
        prepare_dataset(
            source,
            dataset_settings(
                dataset={"join_columns": None}, hvg={"batch_key": "plate"}, batch_key="donor_id"
            ),
            tmp_path / "out.h5ad",
        )


def test_a_file_column_of_the_same_name_must_group_the_cells_alike(tmp_path):
    adata = atlas()
    # the same groups under other names: the joined values replace them
    adata.obs["donor_assay"] = (
        adata.obs["donor_id"].astype(str) + "/" + adata.obs["assay"].astype(str)
    ).astype("category")
    assert set(join_columns(adata.obs, JOIN)["donor_assay"]) >= {"TSP14_10x 3' v3"}
    adata.obs["donor_assay"] = adata.obs["donor_id"]
    with pytest.raises(ValueError, match="groups the cells differently from donor_id \\+ assay"):
        join_columns(adata.obs, JOIN)


def test_hvg_batch_key_ranks_a_class_without_a_batch_per_batch(tmp_path):
    """A deconvolution reference takes no batch key; with hvg.batch_key it gets the genes its
    SCVI sibling gets."""
    data = simulated_atlas(n_cells=500, n_genes=150, seed=3)
    data.obs["cell_type"] = data.obs["true_cell_type"]
    path = tmp_path / "dataset.h5ad"
    data.write_h5ad(path)
    hvg = {"flavor": "seurat_v3", "n_top_genes": 40}
    base = {"dataset": {"source": "builtin:simulated-atlas"}}
    scvi = base | {"model": {"class": "SCVI", "setup": {"batch_key": "batch"}}, "hvg": hvg}
    stereo = base | {
        "model": {"class": "RNAStereoscope", "setup": {"labels_key": "cell_type"}},
        "hvg": hvg | {"batch_key": "batch"},
    }
    tables = {}
    for name, model in (("scvi", scvi), ("stereo", stereo)):
        settings = rule_settings(model_settings({"models": {name: model}}, name), "hvg")
        select_hvg_file(path, settings, tmp_path / f"{name}.h5ad", tmp_path / f"{name}.tsv")
        assert ad.read_h5ad(tmp_path / f"{name}.h5ad").uns["hvg"]["batch_key"] == "batch"
        tables[name] = pd.read_csv(tmp_path / f"{name}.tsv", sep="\t", index_col=0)
    pd.testing.assert_series_equal(
        tables["scvi"]["highly_variable"], tables["stereo"]["highly_variable"]
    )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (entry(dataset={"join_columns": {"assay": ["donor_id", "assay"]}}),
         "dataset.join_columns.assay: the new column cannot be one it joins"),
        (entry(hvg={"batch_key": "donor_assay", "batch_aware": False}),
         "hvg.batch_key: genes are ranked per batch only with hvg.batch_aware: true"),
        (entry(dataset={"join_columns": {"donor_assay": ["donor_id"]}}),
         "join_columns.donor_assay: ['donor_id'] is too short"),
    ],
)  # fmt: skip
def test_config_errors_name_the_key_before_any_job(model, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve({"models": {"m": model}})
