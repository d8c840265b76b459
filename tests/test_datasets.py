"""Built-in data and validation of what was read (downloads: tests/test_downloads.py)."""

from __future__ import annotations

from types import SimpleNamespace

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import rule_settings
from scvi_hub_workflow import builtin_datasets, datasets, h5ad_io
from scvi_hub_workflow.config import model_settings
from scvi_hub_workflow.datasets import DatasetError, prepare_dataset
from scvi_hub_workflow.downloads import DownloadError


def settings_for(counts: str = "X", **setup):
    cfg = {
        "models": {
            "m": {
                "dataset": {"source": "builtin:synthetic-iid", "counts": counts},
                "model": {"class": "SCVI", "setup": setup},
                # 3 cells x 3 genes can train with these (trainable.py); the defaults need more
                "hvg": {"flavor": "pearson_residuals"},
                "train": {"early_stopping": False},
            }
        }
    }
    return rule_settings(model_settings(cfg, "m"), "dataset")


def small_adata(x=None) -> ad.AnnData:
    x = np.array([[0, 1, 2], [3, 0, 1], [1, 1, 0]], dtype=np.float32) if x is None else x
    obs = pd.DataFrame({"batch": ["a", "b", "a"], "size": [1.0, 2.0, 0.5]}, index=list("xyz"))
    return ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=["g1", "g2", "g3"]))


def test_synthetic_iid_has_the_reference_card_shape():
    adata = builtin_datasets.synthetic_iid()
    assert adata.shape == (400, 100)
    assert sp.issparse(adata.X) and np.all(adata.X.data == np.round(adata.X.data))
    assert not adata.obsm


def test_simulated_atlas_keeps_its_truth_and_the_markers_are_real():
    adata = builtin_datasets.simulated_atlas(n_cells=600, n_genes=200, seed=1)
    truth = adata.obs["true_cell_type"]
    assert set(adata.obs["cell_type"].cat.categories) == set(truth.cat.categories) | {"unknown"}
    assert 0 < (adata.obs["cell_type"] == "unknown").mean() < 0.25
    assert adata.obs["batch"].nunique() == 3
    x = adata.X.toarray()
    norm = x / x.sum(1, keepdims=True)
    for cell_type in adata.uns["simulation"]["cell_types"]:
        up = adata.var[f"de_up_{cell_type}"].to_numpy()
        inside = norm[(truth == cell_type).to_numpy()][:, up].mean(0)
        outside = norm[(truth != cell_type).to_numpy()][:, up].mean(0)
        assert np.median(inside / outside) > 2
    assert adata.varm["true_log2fc"].shape == (200, 6)


def test_prepare_dataset_writes_counts_in_x(tmp_path):
    source = tmp_path / "in.h5ad"
    small_adata().write_h5ad(source)
    summary = prepare_dataset(source, settings_for(batch_key="batch"), tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert summary["n_cells"] == 3 and summary["n_genes"] == 3
    assert out.obs["batch"].dtype.name == "category"
    np.testing.assert_array_equal(out.X.toarray(), small_adata().X.toarray())


def test_counts_from_raw_as_cellxgene_files_have_them(tmp_path):
    adata = small_adata()
    adata.raw = adata.copy()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()))  # normalised X, counts in raw
    source = tmp_path / "in.h5ad"
    adata.write_h5ad(source)
    settings = settings_for()
    with pytest.raises(DatasetError, match="counts are not integers"):
        prepare_dataset(source, settings, tmp_path / "out.h5ad")
    prepare_dataset(source, settings_for(counts="raw.X"), tmp_path / "out.h5ad")
    assert ad.read_h5ad(tmp_path / "out.h5ad").X.sum() == small_adata().X.sum()


def test_counts_from_a_layer_and_setup_layer_kept(tmp_path):
    adata = small_adata()
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(adata.X.toarray() / 3)
    source = tmp_path / "in.h5ad"
    adata.write_h5ad(source)
    settings = settings_for(counts="layers/counts", layer="counts")
    prepare_dataset(source, settings, tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.layers["counts"].sum() == small_adata().X.sum()
    with pytest.raises(DatasetError, match="layer 'missing'"):
        missing = settings_for(counts="layers/missing", layer="counts")
        prepare_dataset(source, missing, tmp_path / "out2.h5ad")


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[0, 1.5, 2], [3, 0, 1], [1, 1, 0]]), "counts are not integers"),
        (np.array([[0, -1, 2], [3, 0, 1], [1, 1, 0]]), "negative values"),
        (np.array([[0, np.nan, 2], [3, 0, 1], [1, 1, 0]]), "NaN"),
    ],
)
def test_bad_counts_are_refused_with_model_and_file(tmp_path, x, message):
    source = tmp_path / "in.h5ad"
    small_adata(x.astype(np.float32)).write_h5ad(source)
    with pytest.raises(DatasetError, match=message) as error:
        prepare_dataset(source, settings_for(), tmp_path / "out.h5ad")
    assert "model 'm'" in str(error.value) and str(source) in str(error.value)
    assert not (tmp_path / "out.h5ad").exists()


def test_missing_or_bad_columns_name_column_and_key(tmp_path):
    source = tmp_path / "in.h5ad"
    small_adata().write_h5ad(source)
    with pytest.raises(DatasetError, match=r"'cell_type' \(model.setup.labels_key\) not found"):
        prepare_dataset(source, settings_for(labels_key="cell_type"), tmp_path / "o.h5ad")
    with pytest.raises(DatasetError, match=r"'batch' \(model.setup.continuous_covariate_keys\)"):
        prepare_dataset(
            source, settings_for(continuous_covariate_keys=["batch"]), tmp_path / "o.h5ad"
        )
    prepare_dataset(source, settings_for(size_factor_key="size"), tmp_path / "o.h5ad")


def test_not_an_h5ad_file(tmp_path):
    source = tmp_path / "in.h5ad"
    source.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .h5ad"):
        prepare_dataset(source, settings_for(), tmp_path / "out.h5ad")


# ---------------------------------------------------------------------------- atlas-shaped files


def cellxgene_like(n_cells: int = 300, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    """Counts in raw.X, log-normalised X, Ensembl ids as var_names, symbols in feature_name."""
    rng = np.random.default_rng(seed)
    counts = sp.random(n_cells, n_genes, density=0.3, random_state=seed, format="csr") * 20
    counts.data = np.ceil(counts.data).astype(np.float32)
    tissues = np.array(["lung", "liver", "salivary gland"])[rng.integers(3, size=n_cells)]
    obs = pd.DataFrame(
        {
            "tissue": pd.Categorical(tissues),
            "donor_id": pd.Categorical(rng.choice(["d1", "d2"], size=n_cells)),
            "is_primary_data": rng.random(n_cells) < 0.8,
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {"feature_name": [f"GENE{i % (n_genes - 2)}" for i in range(n_genes)]},
        index=[f"ENSG{i:011d}" for i in range(n_genes)],
    )
    raw = ad.AnnData(X=counts.astype(np.float32), obs=obs, var=pd.DataFrame(index=var.index))
    adata = ad.AnnData(X=sp.csr_matrix(np.log1p(counts.toarray())), obs=obs, var=var)
    adata.raw = raw
    return adata


def atlas_settings(**dataset):
    entry = {
        "dataset": {"source": "builtin:synthetic-iid", "counts": "raw.X", **dataset},
        "model": {"class": "SCVI", "setup": {"batch_key": "donor_id"}},
    }
    return rule_settings(model_settings({"models": {"m": entry}}, "m"), "dataset")


def test_tissue_subset_reads_only_the_kept_rows_of_raw_counts(tmp_path, monkeypatch):
    adata = cellxgene_like()
    source = tmp_path / "atlas.h5ad"
    adata.write_h5ad(source)
    blocks = []
    original = h5ad_io._csr_block
    monkeypatch.setattr(h5ad_io, "BLOCK_BYTES", 2000)  # many small blocks
    monkeypatch.setattr(
        h5ad_io, "_csr_block", lambda e, p, a, b: blocks.append(b - a) or original(e, p, a, b)
    )
    subset = {"tissue": "salivary gland", "is_primary_data": True}
    summary = prepare_dataset(source, atlas_settings(subset=subset), tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    keep = ((adata.obs["tissue"] == "salivary gland") & adata.obs["is_primary_data"]).to_numpy()
    assert list(out.obs_names) == list(adata.obs_names[keep])
    np.testing.assert_array_equal(out.X.toarray(), adata.raw.X[keep].toarray())
    assert list(out.var_names) == list(adata.var_names)  # Ensembl ids kept
    assert list(out.var["feature_name"]) == list(adata.var["feature_name"])  # symbols carried
    assert summary["n_cells"] == keep.sum() and summary["n_cells_in_file"] == adata.n_obs
    assert max(blocks) < adata.n_obs / 4 and sum(blocks) <= adata.n_obs


def test_gene_symbols_instead_of_ids(tmp_path):
    adata = cellxgene_like()
    source = tmp_path / "atlas.h5ad"
    adata.write_h5ad(source)
    prepare_dataset(source, atlas_settings(gene_names="feature_name"), tmp_path / "out.h5ad")
    out = ad.read_h5ad(tmp_path / "out.h5ad")
    assert out.var_names.is_unique and out.var_names[0] == "GENE0"
    assert list(out.var["gene_ids"]) == list(adata.var_names)
    with pytest.raises(DatasetError, match=r"'symbol' \(dataset.gene_names\) not found"):
        prepare_dataset(source, atlas_settings(gene_names="symbol"), tmp_path / "o.h5ad")


def test_subset_errors_name_model_column_and_values(tmp_path):
    source = tmp_path / "atlas.h5ad"
    cellxgene_like().write_h5ad(source)
    with pytest.raises(
        DatasetError, match=r"model 'm'.*'organ' \(dataset.subset.organ\) not found"
    ):
        prepare_dataset(source, atlas_settings(subset={"organ": "lung"}), tmp_path / "o.h5ad")
    with pytest.raises(DatasetError) as error:
        prepare_dataset(source, atlas_settings(subset={"tissue": ["lung", "Lung"]}), tmp_path / "o")
    message = str(error.value)
    assert "model 'm'" in message and "no cell has tissue = 'Lung'" in message
    assert "'liver', 'lung', 'salivary gland'" in message
    assert not (tmp_path / "o").exists()


def test_bad_counts_are_caught_in_a_later_block(tmp_path, monkeypatch):
    adata = cellxgene_like()
    adata.raw.X.data[-1] = 0.5  # the last stored value: only the last block sees it
    source = tmp_path / "atlas.h5ad"
    adata.write_h5ad(source)
    monkeypatch.setattr(h5ad_io, "BLOCK_BYTES", 2000)
    with pytest.raises(DatasetError, match="counts are not integers"):
        prepare_dataset(source, atlas_settings(), tmp_path / "out.h5ad")
    assert list(tmp_path.iterdir()) == [source]


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("pick", ["all", "few", "many"])
def test_iter_rows_matches_in_memory_rows(tmp_path, dense, pick):
    adata = cellxgene_like(n_cells=500)
    matrix = adata.raw.X.toarray() if dense else adata.raw.X
    ad.AnnData(X=matrix).write_h5ad(tmp_path / "m.h5ad")
    rng = np.random.default_rng(1)
    rows = {
        "all": None,
        "few": np.sort(rng.choice(500, size=20, replace=False)),
        "many": np.sort(rng.choice(500, size=400, replace=False)),
    }[pick]
    with h5py.File(tmp_path / "m.h5ad") as f:
        got = list(h5ad_io.iter_rows(f["X"], rows, budget=1000))
    assert len(got) > 1
    expected = adata.raw.X.toarray()[np.arange(500) if rows is None else rows]
    np.testing.assert_array_equal(
        np.concatenate([r for r, _ in got]), rows if rows is not None else np.arange(500)
    )
    np.testing.assert_array_equal(sp.vstack([b for _, b in got]).toarray(), expected)


@pytest.mark.parametrize("model_class", ["CondSCVI", "RNAStereoscope"])
def test_a_deconvolution_reference_needs_every_cell_labelled(model_class):
    from scvi_hub_workflow.datasets import check_cells

    cfg = {
        "models": {
            "m": {
                "dataset": {"source": "builtin:simulated-atlas"},
                "model": {"class": model_class, "setup": {"labels_key": "cell_type"}},
            }
        }
    }
    settings = rule_settings(model_settings(cfg, "m"), "dataset")
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical(["a", "b", None, "a"])}, index=[f"c{i}" for i in range(4)]
    )
    with pytest.raises(DatasetError, match=rf"1 cells have no label .*{model_class} needs every"):
        check_cells(obs, settings, "models.m")
    obs["cell_type"] = pd.Categorical(["a"] * 4)
    with pytest.raises(DatasetError, match="has one cell type"):
        check_cells(obs, settings, "models.m")
    obs["cell_type"] = pd.Categorical(["a", "b", "b", "a"])
    check_cells(obs, settings, "models.m")


def test_the_prepared_counts_are_a_matrix_scanpy_computes_on(tmp_path):
    # int32 indices beside int64 indptr read back fine but fail in scanpy's numba kernels
    import scanpy as sc

    source = tmp_path / "atlas.h5ad"
    cellxgene_like().write_h5ad(source)
    prepare_dataset(source, atlas_settings(), tmp_path / "out.h5ad")
    with h5py.File(tmp_path / "out.h5ad") as f:
        assert f["X/indices"].dtype == f["X/indptr"].dtype == np.int32
    adata = ad.read_h5ad(tmp_path / "out.h5ad")
    adata.obs["half"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.tl.rank_genes_groups(adata, "half")
    assert adata.uns["rank_genes_groups"]["names"].shape[0] == adata.n_vars


@pytest.mark.parametrize(("max_nnz", "dtype"), [(None, np.int32), (2**31, np.int64)])
def test_csr_writer_keeps_one_index_dtype(tmp_path, max_nnz, dtype):
    matrix = sp.random(40, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    with h5py.File(tmp_path / "m.h5", "w") as f:
        writer = h5ad_io.CsrWriter(f, "X", 40, 30, max_nnz)
        writer.append(matrix[:25])
        writer.append(matrix[25:])
        writer.close()
        assert f["X/indices"].dtype == f["X/indptr"].dtype == dtype
        back = ad.io.read_elem(f["X"])
    assert back.indices.dtype == back.indptr.dtype
    np.testing.assert_array_equal(back.toarray(), matrix.toarray())


def test_csr_writer_refuses_more_non_zeros_than_announced(tmp_path):
    with h5py.File(tmp_path / "m.h5", "w") as f:
        writer = h5ad_io.CsrWriter(f, "X", 2, 3, max_nnz=2)
        with pytest.raises(ValueError, match="non-zeros announced"):
            writer.append(sp.csr_matrix(np.ones((2, 3), dtype=np.float32)))


def test_a_local_file_is_recorded_with_the_checksums_it_was_verified_against(tmp_path):
    import hashlib

    source = tmp_path / "in.h5ad"
    small_adata().write_h5ad(source)
    data = source.read_bytes()
    sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()
    entry = {
        "dataset": {"source": str(source), "sha256": sha.upper(), "checksum": f"MD5:{md5}"},
        "model": {"class": "SCVI"},
        "hvg": {"flavor": "pearson_residuals"},
        "train": {"early_stopping": False},
    }
    settings = rule_settings(model_settings({"models": {"m": entry}}, "m"), "dataset")
    summary = prepare_dataset(source, settings, tmp_path / "out.h5ad")
    assert summary["verified"] == {"sha256": sha, "checksum": f"md5:{md5}"}
    unchecked = rule_settings(
        model_settings({"models": {"m": entry | {"dataset": {"source": str(source)}}}}, "m"),
        "dataset",
    )
    assert "verified" not in prepare_dataset(source, unchecked, tmp_path / "out2.h5ad")


def _resolved(version_id):
    return SimpleNamespace(dataset_version_id=version_id)


def test_a_newer_version_of_a_dataset_id_is_named_with_how_to_move(caplog):
    record = {
        "requested_id": "ds-1",
        "dataset_id": "ds-1",
        "dataset_version_id": "v1",
        "newest_of_dataset": True,
    }
    asked = []

    def resolve(identifier):
        asked.append(identifier)
        return _resolved("v2")

    note = datasets.newer_version(record, resolve)
    assert asked == ["ds-1"]
    assert note["checked"] and not note["is_newest"] and note["newest_version_id"] == "v2"
    assert "delete resources/cellxgene/ds-1.h5ad" in note["how_to_move"]
    assert "dataset.source: cellxgene:v2" in note["how_to_move"]
    assert "newer version v2" in caplog.text
    assert datasets.newer_version(record, lambda _: _resolved("v1"))["is_newest"]
    # a version id was asked for, or another source: nothing to check
    assert datasets.newer_version(record | {"newest_of_dataset": False}, resolve) is None
    assert datasets.newer_version(None, resolve) is None


def test_an_unreachable_api_leaves_the_check_undone_not_the_step():
    def offline(_):
        raise DownloadError("GET https://api.example: connection refused")

    record = {"requested_id": "d", "dataset_id": "d", "dataset_version_id": "v1"}
    note = datasets.newer_version(record | {"newest_of_dataset": True}, offline)
    assert note["checked"] is False and "connection refused" in note["reason"]


def test_dataset_json_holds_the_cells_per_batch_and_the_labelled_ones(tmp_path):
    source = tmp_path / "in.h5ad"
    adata = small_adata()
    adata.obs["cell_type"] = ["t1", "unknown", "t2"]
    adata.write_h5ad(source)
    settings = settings_for(batch_key="batch", labels_key="cell_type", unlabeled_category="unknown")
    summary = prepare_dataset(source, settings, tmp_path / "out.h5ad")
    assert summary["n_cells_labelled"] == 2 and summary["labels"] == {"t1": 1, "t2": 1}
    assert summary["batches"] == {"a": 2, "b": 1}
    assert summary["labelled_per_batch"] == {"a": 2, "b": 0}
    unbatched = prepare_dataset(source, settings_for(), tmp_path / "out2.h5ad")
    assert unbatched["batches"] is None and "labels" not in unbatched


# --- CITE-seq: the protein counts of a TOTALVI model travel with their cells ----------------


def citeseq_settings(step: str = "dataset", **setup):
    entry = {
        "dataset": {
            "source": "builtin:simulated-citeseq",
            "subset": {"batch": "batch_1"},
            "subsample_cells": 120,
        },
        "model": {
            "class": "TOTALVI",
            "setup": {"protein_expression_obsm_key": "protein_expression", **setup},
        },
        "hvg": {"n_top_genes": 50},
    }
    return rule_settings(model_settings({"models": {"m": entry}}, "m"), step)


def test_simulated_citeseq_plants_proteins_per_cell_type():
    adata = builtin_datasets.simulated_citeseq(n_cells=600, n_genes=100, n_proteins=12, seed=1)
    proteins = adata.obsm["protein_expression"]
    assert list(proteins.columns) == adata.uns["simulation"]["protein_names"]
    assert (proteins.index == adata.obs_names).all() and (adata.obs["cell_type"] != "unknown").all()
    values = proteins.to_numpy()
    assert np.all(values >= 0) and np.all(values == np.round(values))
    # a protein is higher in the types that express it than in those that do not
    expressed = adata.uns["simulation"]["protein_expressed"]
    types = adata.obs["true_cell_type"].cat.codes.to_numpy()
    means = np.vstack([values[types == t].mean(0) for t in range(expressed.shape[0])])
    for p in range(values.shape[1]):
        if expressed[:, p].any() and not expressed[:, p].all():
            assert means[expressed[:, p], p].min() > 2 * means[~expressed[:, p], p].max()


@pytest.mark.parametrize("form", ["dataframe", "array"])
def test_the_dataset_and_hvg_steps_carry_the_kept_cells_proteins(tmp_path, monkeypatch, form):
    from scvi_hub_workflow.hvg import select_hvg_file

    adata = builtin_datasets.simulated_citeseq(n_cells=500, n_genes=120, n_proteins=10, seed=2)
    setup = {}
    if form == "array":
        names = list(adata.obsm["protein_expression"].columns)
        adata.obsm["protein_expression"] = adata.obsm["protein_expression"].to_numpy()
        adata.uns["antibodies"] = np.array(names)
        setup = {"protein_names_uns_key": "antibodies"}
    adata.obsm["X_umap"] = np.zeros((adata.n_obs, 2))  # not the model's: left behind
    source = tmp_path / "cite.h5ad"
    adata.write_h5ad(source)
    reads = []
    original = h5ad_io.read_dense_rows
    monkeypatch.setattr(h5ad_io, "BLOCK_BYTES", 400)  # many small blocks
    monkeypatch.setattr(
        h5ad_io,
        "read_dense_rows",
        lambda d, rows, **kw: reads.append(len(rows)) or original(d, rows, **kw),
    )
    summary = prepare_dataset(source, citeseq_settings(**setup), tmp_path / "dataset.h5ad")
    out = ad.read_h5ad(tmp_path / "dataset.h5ad")
    assert list(out.obsm) == ["protein_expression"] and out.n_obs == 120
    expected = pd.DataFrame(adata.obsm["protein_expression"], index=adata.obs_names)
    np.testing.assert_array_equal(
        np.asarray(out.obsm["protein_expression"]), expected.loc[out.obs_names].to_numpy()
    )
    assert max(reads) == 120  # the kept rows only
    assert summary["proteins"]["n_proteins"] == 10
    assert summary["proteins"]["names"][:2] == ["protein_0", "protein_1"]
    # HVG on the RNA only; every protein kept, in the cells' order
    select_hvg_file(
        tmp_path / "dataset.h5ad",
        citeseq_settings("hvg", **setup),
        tmp_path / "hvg.h5ad",
        tmp_path / "hvg.tsv",
    )
    hvg = ad.read_h5ad(tmp_path / "hvg.h5ad")
    assert hvg.n_vars == 50 and hvg.obsm["protein_expression"].shape == (120, 10)
    np.testing.assert_array_equal(
        np.asarray(hvg.obsm["protein_expression"]), np.asarray(out.obsm["protein_expression"])
    )
    if form == "array":
        assert list(hvg.uns["antibodies"]) == names


def test_a_missing_protein_entry_names_the_key_and_the_entries_present(tmp_path):
    adata = builtin_datasets.simulated_citeseq(n_cells=300, n_genes=60, n_proteins=4, seed=0)
    adata.obsm["adt"] = adata.obsm.pop("protein_expression")
    adata.write_h5ad(tmp_path / "cite.h5ad")
    with pytest.raises(DatasetError) as error:
        prepare_dataset(tmp_path / "cite.h5ad", citeseq_settings(), tmp_path / "out.h5ad")
    message = str(error.value)
    assert "obsm entry 'protein_expression' (model.setup.protein_expression_obsm_key)" in message
    assert "obsm entries: 'adt'" in message and not (tmp_path / "out.h5ad").exists()
    adata.obsm["protein_expression"] = adata.obsm["adt"].to_numpy()
    adata.write_h5ad(tmp_path / "cite.h5ad")
    settings = citeseq_settings(protein_names_uns_key="adt_names")
    with pytest.raises(DatasetError, match=r"uns entry 'adt_names' .*uns entries: 'simulation'"):
        prepare_dataset(tmp_path / "cite.h5ad", settings, tmp_path / "out.h5ad")
    adata.obsm["protein_expression"] = adata.obsm["adt"] / 3.0  # normalised, not counts
    adata.write_h5ad(tmp_path / "cite.h5ad")
    with pytest.raises(DatasetError, match=r"obsm entry 'protein_expression'.*is not counts"):
        prepare_dataset(tmp_path / "cite.h5ad", citeseq_settings(), tmp_path / "out.h5ad")


# --- MuData: a CITE-seq file of two modalities, read as AnnData + obsm ----------------------


def write_h5mu(adata: ad.AnnData, path, *, protein_order=None) -> None:
    """`adata`'s RNA and proteins as the modalities `rna` and `prot` of a .h5mu file, the batch
    in the global obs only (where muon keeps shared annotations)."""
    import mudata as md

    proteins = adata.obsm["protein_expression"]
    rna = ad.AnnData(X=adata.X, obs=adata.obs.drop(columns="batch"), var=adata.var[[]])
    prot = ad.AnnData(X=proteins.to_numpy(), var=pd.DataFrame(index=proteins.columns))
    prot.obs_names = adata.obs_names
    if protein_order is not None:
        prot = prot[protein_order].copy()
    mdata = md.MuData({"rna": rna, "prot": prot}, axis=0)
    mdata.obs["batch"] = adata.obs["batch"].reindex(mdata.obs_names).to_numpy()
    mdata.write(str(path))


def mudata_settings(source, mudata, **setup):
    entry = {
        "dataset": {
            "source": str(source),
            "subset": {"batch": "batch_1"},
            "subsample_cells": 120,
            "mudata": mudata,
        },
        "model": {"class": "TOTALVI", "setup": setup},
    }
    return rule_settings(model_settings({"models": {"m": entry}}, "m"), "dataset")


def test_a_mudata_file_gives_the_same_cells_and_proteins_as_anndata_with_obsm(tmp_path):
    adata = builtin_datasets.simulated_citeseq(n_cells=400, n_genes=80, n_proteins=6, seed=4)
    write_h5mu(adata, tmp_path / "cite.h5mu")
    adata.write_h5ad(tmp_path / "cite.h5ad")
    setup = {"protein_expression_obsm_key": "protein_expression", "batch_key": "batch"}
    modalities = {"rna": "rna", "protein": "prot"}
    settings = mudata_settings(tmp_path / "cite.h5mu", modalities, **setup)
    summary = prepare_dataset(tmp_path / "cite.h5mu", settings, tmp_path / "from_mudata.h5ad")
    plain = citeseq_settings(batch_key="batch")
    prepare_dataset(tmp_path / "cite.h5ad", plain, tmp_path / "from_anndata.h5ad")
    got, expected = (ad.read_h5ad(tmp_path / f"from_{k}.h5ad") for k in ("mudata", "anndata"))
    assert list(got.obs_names) == list(expected.obs_names) and got.n_obs == 120
    assert (got.obs["batch"] == "batch_1").all()  # from the global obs, subset on it
    assert (got.X != expected.X).nnz == 0
    proteins = got.obsm["protein_expression"]
    assert list(proteins.columns) == [f"protein_{i}" for i in range(6)]
    np.testing.assert_array_equal(proteins.to_numpy(), expected.obsm["protein_expression"])
    assert summary["mudata"] == modalities and summary["proteins"]["n_proteins"] == 6


def test_mudata_modalities_that_do_not_fit_name_the_key(tmp_path):
    adata = builtin_datasets.simulated_citeseq(n_cells=200, n_genes=40, n_proteins=3, seed=0)
    source = tmp_path / "cite.h5mu"
    write_h5mu(adata, source)
    setup = {"protein_expression_obsm_key": "protein_expression"}
    for mudata, message in (
        (
            {"rna": "gex"},
            "modality 'gex' (dataset.mudata.rna) not found; modalities: 'prot', 'rna'",
        ),
        ({"rna": "rna", "protein": "adt"}, "modality 'adt' (dataset.mudata.protein) not found"),
    ):
        with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
            prepare_dataset(source, mudata_settings(source, mudata, **setup), tmp_path / "o.h5ad")
    # proteins of other cells (here: the same cells in reverse order) are refused
    write_h5mu(adata, source, protein_order=np.arange(adata.n_obs)[::-1])
    with pytest.raises(DatasetError, match="does not hold the RNA modality's cells"):
        settings = mudata_settings(source, {"rna": "rna", "protein": "prot"}, **setup)
        prepare_dataset(source, settings, tmp_path / "o.h5ad")
    assert not (tmp_path / "o.h5ad").exists()
