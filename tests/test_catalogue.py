"""The bad-input and fault catalogue, kept as tests: one row per bad input.

Each row says what the user did, a fragment of the message they get, and the step that must
stop it: `parse` (Snakemake reading the workflow, before any job), `dataset`, `hvg` and
`de_groups` (the cheap steps before training), `criticism`/`card` (after training, saying why
instead of failing) and `publish` (before the commit). docs/bad-inputs.md is the same list for
users.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from helpers import ROOT, TOKEN, rule_settings, run_publish, snakemake
from scvi_hub_workflow import criticism, publish
from scvi_hub_workflow.card import render_card
from scvi_hub_workflow.config import model_settings
from scvi_hub_workflow.datasets import DatasetError, prepare_dataset
from scvi_hub_workflow.hvg import HVGError, select_hvg
from scvi_hub_workflow.training import models_missing_a_gpu

SCVI = {"dataset": {"source": "builtin:synthetic-iid"}, "model": {"class": "SCVI"}}
SCANVI_SETUP = {"labels_key": "cell_type", "unlabeled_category": "Unknown"}


@dataclass(frozen=True)
class Case:
    row: int
    what: str
    given: object  # the input: config file text, obs columns, ...
    expected: str  # a fragment of the message the user gets ({file}: the config file)
    step: str  # where it must stop


# ---------------------------------------------------------------- parse time (snakemake -n)

ONE_MODEL = yaml.safe_dump({"models": {"a": SCVI}})
PARSE_CASES = [
    Case(1, "models: {}", "models: {}\n", "config key models is empty in {file}", "parse"),
    Case(
        1,
        "every model commented out",
        "models:\n#  a: {dataset: {source: 'builtin:synthetic-iid'}}\n",
        "config key models is empty in {file}",
        "parse",
    ),
    Case(1, "no models key", "defaults: {}\n", "config key models is missing in {file}", "parse"),
    Case(
        10,
        "a model key twice",
        "models:\n  a: {dataset: {source: 'builtin:synthetic-iid'}, model: {class: SCVI}}\n"
        "  a: {dataset: {source: 'builtin:simulated-atlas'}, model: {class: SCVI}}\n",
        "config file {file}, line 3, column 3: duplicate key 'a' (first set on line 2)",
        "parse",
    ),
    Case(
        8,
        "train_size 1 with early stopping",
        yaml.safe_dump({"models": {"a": SCVI | {"train": {"train_size": 1}}}}),
        "models.a.train.train_size: 1 leaves no validation cells, which "
        "models.a.train.early_stopping needs",
        "parse",
    ),
    Case(
        4,
        "every_cell_labelled on an SCVI model",
        yaml.safe_dump(
            {"models": {"a": SCVI | {"model": {"class": "SCVI", "every_cell_labelled": True}}}}
        ),
        "models.a.model.every_cell_labelled: only SCANVI uses it",
        "parse",
    ),
]


def _workdir_with_default_config(tmp_path):
    # A run folder as users have it: config/config.yaml next to the results (the fallback).
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    return tmp_path


@pytest.mark.parametrize("case", PARSE_CASES, ids=lambda c: f"row{c.row}-{c.what}")
def test_parse_time(case, tmp_path):
    workdir = _workdir_with_default_config(tmp_path)
    (workdir / "given.yaml").write_text(case.given)
    result = snakemake("-n", "--cores", "1", "--configfile", "given.yaml", workdir=workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert case.expected.format(file=workdir / "given.yaml") in output, output[-2000:]
    assert "wildcards: model=" not in output  # no job planned, default models least of all


@pytest.mark.parametrize(
    ("what", "text", "expected"),
    [
        ("YAML syntax error", "models:\n  a: [\n", "line 3, column 1: not valid YAML"),
        ("duplicate key", "models: {a: 1, a: 2}\n", "line 1, column 16: duplicate key 'a'"),
    ],
)
def test_parse_time_default_config(what, text, expected, tmp_path):
    """Row 9/10 for config/config.yaml: file and line (Snakemake's own loader names neither)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(text)
    result = snakemake("-n", "--cores", "1", workdir=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config file config/config.yaml, {expected}" in output, output[-2000:]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "config file not found: {file}"),
        ("models:\n  a: [\n", "config file {file}, line 3, column 1: not valid YAML"),
    ],
)
def test_a_given_config_file_is_checked_with_file_and_line(text, expected, tmp_path):
    """Row 9 for --configfile: Snakemake reads it before the workflow runs, so the check is a
    command to run first (docs/bad-inputs.md)."""
    import subprocess
    import sys

    path = tmp_path / "my.yaml"
    if text is not None:
        path.write_text(text)
    command = [sys.executable, "-m", "scvi_hub_workflow.config_files", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert expected.format(file=path) in result.stderr


@pytest.mark.slow
def test_gpu_required_on_a_machine_without_one_is_said_before_the_first_job(tmp_path):
    """Row 8: accelerator gpu, run locally without a GPU: said before the first job."""
    assert models_missing_a_gpu({"a": _settings(train={"accelerator": "gpu"})}, False) == ["a"]
    assert models_missing_a_gpu({"a": _settings(train={"accelerator": "gpu"})}, True) == []
    fallback = {"accelerator": "gpu", "allow_cpu_fallback": True}
    assert models_missing_a_gpu({"a": _settings(train=fallback)}, False) == []

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = {"models": {"a": SCVI | {"train": {"accelerator": "gpu"}}}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake(
        "results/a/dataset.json", "--cores", "1", "--configfile", "cfg.yaml", workdir=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    warning = output.find("models.a.train.accelerator is 'gpu' but this machine has no CUDA GPU")
    assert 0 <= warning < output.find("rule builtin_dataset")


# ---------------------------------------------------------------- the dataset step


def _settings(setup=None, step=None, **entry):
    """A model's typed settings (or those of one step), from a one-model config."""
    model = entry.pop("model", {"class": "SCVI"})
    model = model | {"setup": setup or {}}
    entry = {"dataset": {"source": "builtin:synthetic-iid"}, "model": model, **entry}
    settings = model_settings({"models": {"m": entry}}, "m")
    return settings if step is None else rule_settings(settings, step)


def _write(tmp_path, obs: dict, index=None):
    n = len(next(iter(obs.values())))
    index = index or [f"c{i}" for i in range(n)]
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(rng.poisson(2, size=(n, 20)).astype(np.float32))
    adata = ad.AnnData(X=x, obs=pd.DataFrame(obs, index=index))
    path = tmp_path / "in.h5ad"
    adata.write_h5ad(path)
    return path


SCANVI = {"class": "SCANVI"}
DATASET_CASES = [
    Case(
        3,
        "duplicate obs names",
        ({"cell_type": ["a", "b", "a", "b"]}, ["c0", "c1", "c1", "c2"], "SCVI", {}),
        "2 cells share 1 obs names ('c1'); cell names (obs_names) must be unique",
        "dataset",
    ),
    Case(
        4,
        "unlabeled_category not in the labels",
        ({"cell_type": ["a", "b", "unknown", "b"]}, None, "SCANVI", {}),
        "model.setup.unlabeled_category 'Unknown' is not a category of obs column 'cell_type' "
        "(model.setup.labels_key); categories present: 'b', 'a', 'unknown'",
        "dataset",
    ),
    Case(
        5,
        "SCANVI with one cell type",
        ({"cell_type": ["a", "a", "Unknown", "a"]}, None, "SCANVI", {}),
        "obs column 'cell_type' (model.setup.labels_key) has one annotated cell type ('a'); "
        "SCANVI's classifier needs at least two",
        "dataset",
    ),
    Case(
        5,
        "SCANVI with no annotated cell",
        ({"cell_type": ["Unknown"] * 4}, None, "SCANVI", {}),
        "every cell is labelled 'Unknown'",
        "dataset",
    ),
]


@pytest.mark.parametrize("case", DATASET_CASES, ids=lambda c: f"row{c.row}-{c.what}")
def test_dataset_step(case, tmp_path):
    obs, index, model_class, extra = case.given
    setup = SCANVI_SETUP if model_class == "SCANVI" else {}
    settings = _settings(setup, "dataset", model={"class": model_class, **extra})
    source = _write(tmp_path, obs, index)
    with pytest.raises(DatasetError) as error:
        prepare_dataset(source, settings, tmp_path / "out.h5ad")
    assert case.expected in str(error.value)
    assert f"file {source}" in str(error.value)
    assert not (tmp_path / "out.h5ad").exists()


def test_a_misnamed_protein_entry_stops_the_dataset_step(tmp_path):
    from scvi_hub_workflow.builtin_datasets import simulated_citeseq

    adata = simulated_citeseq(n_cells=200, n_genes=40, n_proteins=3)
    adata.obsm["adt"] = adata.obsm.pop("protein_expression")
    adata.write_h5ad(tmp_path / "cite.h5ad")
    setup = {"protein_expression_obsm_key": "protein_expression"}
    settings = _settings(setup, "dataset", model={"class": "TOTALVI"})
    with pytest.raises(DatasetError) as error:
        prepare_dataset(tmp_path / "cite.h5ad", settings, tmp_path / "out.h5ad")
    assert (
        "obsm entry 'protein_expression' (model.setup.protein_expression_obsm_key) not found; "
        "obsm entries: 'adt'"
    ) in str(error.value)


def test_a_mudata_modality_the_file_lacks_stops_the_dataset_step(tmp_path):
    import mudata as md
    from scvi_hub_workflow.builtin_datasets import simulated_citeseq

    adata = simulated_citeseq(n_cells=200, n_genes=40, n_proteins=3)
    proteins = ad.AnnData(adata.obsm.pop("protein_expression"))
    md.MuData({"rna": adata, "prot": proteins}).write(str(tmp_path / "cite.h5mu"))
    entry = {
        "dataset": {"source": str(tmp_path / "cite.h5mu"), "mudata": {"rna": "gex"}},
        "model": {"class": "SCVI"},
    }
    settings = rule_settings(model_settings({"models": {"m": entry}}, "m"), "dataset")
    with pytest.raises(DatasetError) as error:
        prepare_dataset(tmp_path / "cite.h5mu", settings, tmp_path / "out.h5ad")
    assert "modality 'gex' (dataset.mudata.rna) not found; modalities: 'prot', 'rna'" in str(
        error.value
    )
    assert not (tmp_path / "out.h5ad").exists()


def test_every_cell_labelled_must_be_said_explicitly(tmp_path):
    """Row 4: data without the unlabelled category train only when the user says so."""
    source = _write(tmp_path, {"cell_type": ["a", "b"] * 6})  # 12 cells: enough to train
    model = {"class": "SCANVI", "every_cell_labelled": True}
    settings = _settings(SCANVI_SETUP, "dataset", model=model)
    assert prepare_dataset(source, settings, tmp_path / "out.h5ad")["n_cells"] == 12


def _counts_file(tmp_path, n_cells: int, n_genes: int, labels=None) -> str:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(rng.poisson(2, size=(n_cells, n_genes)).astype(np.float32))
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n_cells)])
    obs["batch"] = ["b0", "b1"] * (n_cells // 2) + ["b0"] * (n_cells % 2)
    if labels is not None:
        obs["cell_type"] = labels
    path = tmp_path / "in.h5ad"
    ad.AnnData(X=x, obs=obs).write_h5ad(path)
    return str(path)


TOO_SMALL = [
    (
        "subsample_cells: 3",
        {"dataset": {"source": "builtin:synthetic-iid", "subsample_cells": 3}},
        (400, 100, None),
        "3 cells to train on (after dataset.subset and dataset.subsample_cells), but at least "
        "10 are needed: train.train_size 0.9 must leave 2 or more training cells and 1 or more "
        "validation cells (train.early_stopping); hvg.flavor seurat_v3 needs at least 5",
    ),
    (
        "seurat_v3 on 3 genes (SIGSEGV)",
        {},
        (50, 3, None),
        "3 genes, but hvg.flavor seurat_v3 needs at least 20",
    ),
    (
        "a last minibatch of one cell",
        {"train": {"batch_size": 10}},
        (12, 30, None),
        "12 cells put 11 in training (train.train_size 0.9), which leaves a last minibatch of 1 "
        "cell at train.batch_size 10: batch normalisation cannot train on it; set "
        "train.batch_size to 9 or 11",
    ),
    (
        "SCANVI with 6 annotated cells",
        {"model": {"class": "SCANVI", "setup": SCANVI_SETUP}},
        (60, 30, ["a", "b"] * 3 + ["Unknown"] * 54),
        "6 annotated cells in obs column 'cell_type' (model.setup.labels_key), but SCANVI with "
        "train.early_stopping needs at least 10",
    ),
]


@pytest.mark.parametrize("case", TOO_SMALL, ids=lambda c: c[0])
def test_data_too_small_to_train_is_refused_in_the_dataset_step(case, tmp_path):
    """Row 19c: `subsample_cells: 3` failed in the hvg step's loess, 3 genes killed it
    (SIGSEGV), a last minibatch of one cell or too few annotated cells failed in training."""
    _, entry, (n_cells, n_genes, labels), expected = case
    entry = {"dataset": {"source": "builtin:synthetic-iid"}, "model": {"class": "SCVI"}} | entry
    settings = rule_settings(model_settings({"models": {"m": entry}}, "m"), "dataset")
    source = _counts_file(tmp_path, n_cells, n_genes, labels)
    with pytest.raises(DatasetError) as error:
        prepare_dataset(source, settings, tmp_path / "out.h5ad")
    message = str(error.value)
    assert f"model 'm', file {source}: too small to train: " in message
    assert expected in message, message
    assert not (tmp_path / "out.h5ad").exists()


def test_the_smallest_data_that_trains_passes_the_dataset_step(tmp_path):
    """The minimums are not above what trains: 10 cells (the least the default split allows)
    pass the dataset step, then select genes with seurat_v3 and train with the defaults."""
    import scanpy as sc
    from scvi_hub_workflow.compat import import_scvi

    entry = {"dataset": {"source": "builtin:synthetic-iid"}, "model": {"class": "SCVI"}}
    settings = rule_settings(model_settings({"models": {"m": entry}}, "m"), "dataset")
    source = _counts_file(tmp_path, 10, 50)
    assert prepare_dataset(source, settings, tmp_path / "out.h5ad")["n_cells"] == 10
    adata = ad.read_h5ad(tmp_path / "out.h5ad")
    sc.pp.highly_variable_genes(adata.copy(), flavor="seurat_v3", n_top_genes=10)
    scvi = import_scvi()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(adata, n_hidden=8, n_latent=2)
    model.train(max_epochs=1, train_size=0.9, early_stopping=True, accelerator="cpu")


# ---------------------------------------------------------------- the hvg step


def _cells(n_per_batch: dict[str, int], n_genes=300, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    batches = [b for b, n in n_per_batch.items() for _ in range(n)]
    x = rng.poisson(rng.gamma(2.0, 1.0, size=(1, n_genes)), size=(len(batches), n_genes))
    obs = pd.DataFrame({"batch": batches}, index=[f"c{i}" for i in range(len(batches))])
    return ad.AnnData(X=sp.csr_matrix(x.astype(np.float32)), obs=obs)


def _hvg(batch_key=None, batch_aware=True):
    hvg = {"n_top_genes": 100, "flavor": "seurat_v3", "batch_aware": batch_aware}
    return _settings({"batch_key": batch_key}, "hvg", hvg=hvg)


def test_tiny_batch_falls_back_to_ranking_over_all_cells(caplog):
    """Row 6: a 1-cell batch crashed the process (SIGSEGV); now the log says what was done."""
    with caplog.at_level(logging.WARNING):
        selected, _ = select_hvg(_cells({"a": 200, "b": 1}), _hvg("batch"))
    assert selected.n_vars == 100 and selected.uns["hvg"]["batch_key"] is None
    assert "batch 'b' (1 cells) of obs column 'batch' (model.setup.batch_key)" in caplog.text
    assert "not per batch (hvg.batch_aware)" in caplog.text


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ({"a": 1}, "1 cell left (dataset.subsample_cells?)"),
        ({"a": 3}, "hvg.flavor seurat_v3 cannot rank genes on 3 cells"),
    ],
)
def test_too_few_cells_for_hvg_is_an_error_naming_the_key(cells, expected):
    """Row 6: `subsample_cells: 3` gave a loess traceback (or SIGSEGV for one cell)."""
    with pytest.raises(HVGError) as error:
        select_hvg(_cells(cells), _hvg(batch_aware=False))
    assert expected in str(error.value)


# ---------------------------------------------------------------- de_groups, before training

CRITICISM = _settings(
    {"labels_key": "cell_type", "unlabeled_category": "unknown"},
    "de_groups",
    model={"class": "SCANVI"},
    criticism={"min_cells": 10},
)


def _obs(**sizes: int) -> pd.DataFrame:
    labels = [name for name, n in sizes.items() for _ in range(n)]
    return pd.DataFrame({"cell_type": labels}, index=[f"c{i}" for i in range(len(labels))])


def test_min_cells_above_the_cell_types_stops_before_training():
    """Row 8: it failed after training; now the de_groups step names the key and sizes."""
    with pytest.raises(criticism.GroupsError) as error:
        criticism.plan_groups(_obs(a=30, b=8, c=5, unknown=40), CRITICISM)
    message = str(error.value)
    assert "criticism.min_cells is 10, but only 1 cell type(s) of obs column 'cell_type'" in message
    assert "'b' (8), 'c' (5)" in message


def test_one_cell_type_plans_no_de_and_says_why():
    """Row 5: one cell type is no error, but there is nothing to test it against."""
    plan = criticism.plan_groups(_obs(a=30, unknown=5), CRITICISM)
    assert plan["groups"] == ["a"] and plan["left_out"] == {}
    assert "1 of the cell types in 'cell_type' has at least 10 cells" in plan["absent_reason"]


def test_left_out_groups_are_recorded_with_their_sizes():
    """Row 18: a 7-cell type vanished without a trace."""
    plan = criticism.plan_groups(_obs(a=30, b=20, rare=7, unknown=5), CRITICISM)
    assert plan["groups"] == ["a", "b"] and plan["left_out"] == {"rare": 7}
    assert plan["absent_reason"] is None


# ---------------------------------------------------------------- criticism and card

SETTINGS = {"n_samples": 2, "batch_size": 64, "seed": 0, "alpha": 0.05, "top_n": 5, "layer": None}


def test_one_group_gives_no_de_numbers_and_the_card_says_why(minified_model, card_inputs):
    """Row 5: DE ran against an empty rest and the card showed gene_f1 1.00."""
    model = criticism.load_minified_model(minified_model / "minified")
    grouping = criticism.label_groups(
        pd.Series(["one"] * model.adata.n_obs), unlabeled_category=None, min_cells=10, key="ct"
    )
    cv, table, de, _ = criticism.criticise(model, minified_model / "hvg.h5ad", grouping, **SETTINGS)
    assert cv["cell_wise"]["train"]["n_cells"] > 0  # the CV check still runs
    assert table.empty and de["groups"] == []
    assert "testing one group against the rest needs at least 2" in de["absent_reason"]
    card = render_card(card_inputs(de))
    assert "Not computed: 1 of the cell types in 'ct' has at least 10 cells" in card
    assert "gene_f1 |" not in card.split("**Differential expression**")[1].split("#")[0]


def test_left_out_groups_are_in_de_json_and_on_the_card(minified_model, card_inputs):
    """Row 18: groups under min_cells are listed with their sizes, in de.json and on the card."""
    model = criticism.load_minified_model(minified_model / "minified")
    labels = model.adata.obs["cell_type"].astype(str).to_numpy().copy()
    labels[:7] = "rare"
    grouping = criticism.label_groups(
        pd.Series(labels), unlabeled_category=None, min_cells=10, key="cell_type"
    )
    _, table, de, _ = criticism.criticise(model, minified_model / "hvg.h5ad", grouping, **SETTINGS)
    assert de["left_out"] == [{"group": "rare", "n_cells": 7}] and de["min_cells"] == 10
    assert "rare" not in set(table["group"])
    card = render_card(card_inputs(de))
    assert "Left out, with fewer than 10 cells (criticism.min_cells): rare (7 cells)." in card


def test_every_cells_cluster_is_saved_for_unlabelled_models(minified_model):
    """Row 18: a DE row of a Leiden cluster can be traced to its cells."""
    model = criticism.load_minified_model(minified_model / "minified")
    grouping = criticism.resolve_groups(
        model, labels_key=None, unlabeled_category=None, min_cells=10, cluster_resolution=1.0
    )
    cells = grouping.cells(model.adata.obs_names)
    assert list(cells.columns) == ["cell", "leiden", "in_de"]
    assert list(cells["cell"]) == list(model.adata.obs_names)
    tested = cells[cells["in_de"]]
    assert set(tested["leiden"]) == set(grouping.names)
    assert (cells["leiden"].value_counts()[list(grouping.left_out)] < 10).all()


@pytest.fixture
def card_inputs():
    from test_card import inputs

    def make(de: dict):
        return dataclasses.replace(inputs(), de=de)

    return make


# ---------------------------------------------------------------- publish


def test_token_echoed_in_a_500_body_reaches_no_log(hub, tiny, tmp_path):
    """Row 2: the retry warning logged the raw error, whose body echoed the Authorization header.

    run_publish greps its output, the receipt and every file it wrote for the token.
    """
    hub.fail_commits = [500, 500]
    hub.echo_authorization = True
    settings = {"repo_id": "alice/tiny", "verify": False}
    done = run_publish(hub, tiny, tmp_path / "run", settings, "lfs")
    assert done.returncode == 0, done.output
    assert "attempt 1 of 4 failed" in done.output and "Authorization: Bearer <token>" in done.output
    assert TOKEN not in done.output


def test_token_redaction_covers_warnings_prints_and_tracebacks(tmp_path, caplog):
    """Row 2, in the job's own logging: every record and stream write while publishing."""
    import sys

    from scvi_hub_workflow.rule_io import logged_to

    log_path = tmp_path / "publish.log"
    with logged_to(log_path) as log, publish.token_redacted(TOKEN):
        log.warning("retrying: %s", f"Bearer {TOKEN}")
        print(f"printed {TOKEN}")
        sys.stderr.write(f"warned {TOKEN}\n")
        try:
            raise RuntimeError(f"body {TOKEN}")
        except RuntimeError:
            log.exception("failed")
    text = log_path.read_text()
    assert TOKEN not in text
    assert text.count("<token>") == 4


def test_duplicate_obs_names_stop_publishing_before_the_commit(hub, tiny, tmp_path):
    """Row 3: the commit landed and verification (by obs name) failed, on every re-run."""
    with h5py.File(tiny.hub_dir / "adata.h5ad", "r+") as f:
        index = f["obs"][f["obs"].attrs["_index"]]
        index[1] = index[0]
    done = run_publish(hub, tiny, tmp_path / "run", {"repo_id": "alice/tiny"}, "lfs")
    assert done.returncode == 1
    assert "obs names are not unique" in done.output and "Nothing was published" in done.output
    assert hub.repo("alice/tiny") is None  # not even created
    assert hub.count("POST", r"/commit/") == 0


# ---------------------------------------------------------------- downloads (row 7)


@pytest.mark.parametrize("server_supports_range", [True, False])
def test_dropped_connection_mid_download_is_detected_retried_and_resumed(
    tmp_path, server_supports_range
):
    """Row 7: Python 3.11's read() returns b"" at an early end of stream, and the short file
    was reported as a checksum mismatch. Bytes received are compared with Content-Length; the
    transfer resumes with a Range request (from the start where the server ignores ranges)."""
    import hashlib

    from cellxgene_server import CellxgeneServer, Version
    from scvi_hub_workflow.downloads import download

    payload = bytes(range(256)) * 2048
    server = CellxgeneServer([Version("d", "v", payload)], drop_after=100_000)
    server.ignore_range = not server_supports_range
    try:
        target = tmp_path / "x.h5ad"
        sha = hashlib.sha256(payload).hexdigest()
        download(f"{server.base}/files/v.h5ad", target, sha, backoff_s=0)
        assert target.read_bytes() == payload
        assert server.file_requests() == [None, "bytes=100000-"]
    finally:
        server.close()


# ---------------------------------------------------------------- CELLxGENE answers

CXG_VERSION = "5e1d2c3b-0000-4000-8000-00000000c0de"
CXG_DATASET = "9f8e7d6c-0000-4000-8000-00000000c0de"
CXG_PAYLOAD = b"h5ad bytes, as far as the download can tell" * 100


@pytest.fixture
def cxg():
    from cellxgene_server import CellxgeneServer, Version

    server = CellxgeneServer([Version(CXG_DATASET, CXG_VERSION, CXG_PAYLOAD, cell_count=9)])
    yield server
    server.close()


def _shapes():
    """Answers the curation API's OpenAPI description allows, which the client must accept:
    (what, server settings, Version fields, Version assets, what the record then holds)."""
    from cellxgene_server import OMIT

    h5ad = {"filetype": "H5AD", "filesize": len(CXG_PAYLOAD), "url": "{url}"}
    return [
        ("dataset_versions answering a list", {"version_as_list": True}, {}, None, {}),
        ("versions wrapped in datasets", {"versions_wrapped": True}, {}, None, {}),
        (
            "nullable title and cell_count",
            {},
            {"title": None, "cell_count": None},
            None,
            {"title": None, "cell_count": None},
        ),
        (
            "no optional field but assets",
            {},
            {k: OMIT for k in ("dataset_id", "title", "cell_count", "collection_id")},
            None,
            {"dataset_id": None, "title": None, "cell_count": None},
        ),
        ("filesize as a JSON float", {}, {}, [h5ad | {"filesize": float(len(CXG_PAYLOAD))}], {}),
        (
            "no filesize",
            {},
            {},
            [{k: v for k, v in h5ad.items() if k != "filesize"}],
            {"filesize": None},
        ),
        (
            "assets of other and unknown types first",
            {},
            {},
            [
                {"filetype": "RDS", "filesize": 1, "url": "http://127.0.0.1:9/x.rds"},
                {"filetype": "ATAC_FRAGMENT", "url": "http://127.0.0.1:9/x.tsv.bgz"},
                {"filesize": 3},
                {"filetype": "H5AD", "filesize": None},  # listed, no URL yet
                h5ad,
            ],
            {},
        ),
        ("lower-case filetype", {}, {}, [h5ad | {"filetype": "h5ad"}], {}),
    ]


@pytest.mark.parametrize("identifier", [CXG_VERSION, CXG_DATASET])
@pytest.mark.parametrize("shape", _shapes(), ids=lambda s: s[0])
def test_every_answer_shape_the_api_describes_is_read(cxg, tmp_path, shape, identifier):
    """Row 19a: answers the OpenAPI description allows (a list from dataset_versions, optional
    and null fields, float or absent filesize, other asset types) ended in AttributeError,
    KeyError or a wrong record."""
    from cellxgene_server import Version
    from scvi_hub_workflow import cellxgene

    _, server_settings, fields, assets, expected = shape
    for key, value in server_settings.items():
        setattr(cxg, key, value)
    version = Version(CXG_DATASET, CXG_VERSION, CXG_PAYLOAD, cell_count=9, assets=assets)
    cxg.versions = [dataclasses.replace(version, fields=fields)]
    record = cellxgene.fetch_dataset(
        identifier, tmp_path / "x.h5ad", base=cxg.base, backoff_s=0, models=["m"]
    )
    assert (tmp_path / "x.h5ad").read_bytes() == CXG_PAYLOAD
    assert record["url"] == f"{cxg.base}/files/{CXG_VERSION}.h5ad"
    assert record["size"] == len(CXG_PAYLOAD)
    defaults = {"dataset_version_id": CXG_VERSION, "dataset_id": CXG_DATASET}
    defaults |= {"filesize": len(CXG_PAYLOAD), "title": cxg.versions[0].title, "cell_count": 9}
    for key, value in (defaults | expected).items():
        assert record[key] == value, key


def _api_fault(cxg, fault):
    """Set up one fault; return (models, id, the URL named, status, retryable, fragment)."""
    v_url = f"{cxg.base}/curation/v1/dataset_versions/{CXG_VERSION}"
    file_url = f"{cxg.base}/files/{CXG_VERSION}.h5ad"
    if fault == "unknown id":
        url = f"{cxg.base}/curation/v1/datasets/0000-nope/versions"
        return ["a", "b"], "0000-nope", url, "HTTP 404", False, "knows no dataset version"
    if fault == "server error":
        cxg.statuses = {"/curation/": 503}
        return ["a"], CXG_VERSION, v_url, "HTTP 503", True, "failed 2 times"
    if fault == "withdrawn":
        cxg.statuses = {"/curation/": 410}
        return ["a"], CXG_VERSION, v_url, "HTTP 410", False, "withdrawn"
    if fault == "not JSON":
        cxg.not_json = ("/curation/",)
        return ["a"], CXG_VERSION, v_url, "HTTP 200", True, "not JSON"
    if fault == "no H5AD":
        cxg.versions[0].assets = [{"filetype": "RDS", "filesize": 1, "url": "{url}"}]
        return ["a"], CXG_VERSION, v_url, "HTTP 200", False, "no H5AD asset"
    if fault == "file gone":
        cxg.statuses = {"/files/": 404}
        return ["a"], CXG_VERSION, file_url, "HTTP 404", False, "answered HTTP 404"
    if fault == "unreachable":
        cxg.close()
        return ["a"], CXG_VERSION, v_url, "no HTTP answer", True, "could not reach"
    raise AssertionError(fault)


API_FAULTS = ["unknown id", "server error", "withdrawn", "not JSON", "no H5AD", "file gone"]


@pytest.mark.parametrize("fault", [*API_FAULTS, "unreachable"])
def test_every_api_or_network_error_names_model_id_url_status_and_retry(cxg, tmp_path, fault):
    """Row 19b: an unknown id ended in a raw urllib HTTPError traceback; a network error in a
    raw URLError; others named neither the model, the URL nor whether a retry could help."""
    from scvi_hub_workflow import cellxgene

    models, identifier, url, status, retryable, fragment = _api_fault(cxg, fault)
    with pytest.raises(cellxgene.CellxgeneError) as caught:
        cellxgene.fetch_dataset(
            identifier, tmp_path / "x.h5ad", base=cxg.base, models=models, attempts=2,
            backoff_s=0,
        )  # fmt: skip
    message = str(caught.value)
    noun = "models a, b" if len(models) == 2 else "model a"
    assert f"cellxgene:{identifier} ({noun})" in message
    assert url in message and status in message and fragment in message, message
    assert ("a retry may help" if retryable else "a retry will not help") in message
    assert caught.value.retryable is retryable
    error = caught.value  # no urllib traceback chained to it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_unknown_cellxgene_id_in_a_run_logs_one_clear_line_no_traceback(cxg, tmp_path):
    """Row 19b, as users see it: the job's log ended in urllib's HTTPError traceback."""
    source = {"source": "cellxgene:0000-nope", "counts": "raw.X"}
    models = {name: {"dataset": source, "model": {"class": "SCVI"}} for name in ("b", "a")}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"models": models}))
    env = {"CELLXGENE_API_URL": cxg.base, "NO_PROXY": "127.0.0.1,localhost"}
    target = "resources/cellxgene/0000-nope.h5ad"
    result = snakemake(
        target, "--cores", "1", "--configfile", "cfg.yaml", workdir=tmp_path, env=env
    )
    assert result.returncode != 0
    log = (tmp_path / "logs/cellxgene/0000-nope.log").read_text()
    assert "cellxgene:0000-nope (models a, b): CELLxGENE Discover knows no dataset" in log, log
    assert f"{cxg.base}/curation/v1/datasets/0000-nope/versions" in log
    assert "HTTP 404" in log and "a retry will not help" in log
    assert "Traceback" not in log and "urllib.error" not in log
    assert not (tmp_path / target).exists()


# ---------------------------------------------------------------- one batch after the subset

ONE_BATCH = {"n_cells": 300, "batch_key": "batch", "batches": {"batch_0": 300}}
BATCHED_SCANVI = {
    "dataset": {"source": "builtin:simulated-atlas", "subset": {"batch": "batch_0"}},
    "model": {
        "class": "SCANVI",
        "setup": {"batch_key": "batch", "labels_key": "cell_type", "unlabeled_category": "unknown"},
    },
}


def test_what_a_one_batch_model_can_measure_is_decided_from_dataset_json():
    """Row 19e: a batch key with one value after the subset trained, then the integration and
    query-check jobs failed; now each check's job reads the reason at once."""
    from scvi_hub_workflow.checks import measurable, skip_reason

    settings = model_settings({"models": {"m": BATCHED_SCANVI}}, "m")
    reasons = measurable(ONE_BATCH, settings)
    assert reasons.keys() == {"integration", "label_transfer", "query_check"}
    assert reasons["label_transfer"] is None  # the classifier needs no batches
    expected = (
        "the batch column 'batch' (model.setup.batch_key) has one batch in the data the model "
        "trained on ('batch_0' (300 cells)); "
    )
    assert reasons["integration"] == expected + "measuring how well batches mix needs two or more"
    assert reasons["query_check"].startswith(expected + "holding one out")
    two = {**ONE_BATCH, "batches": {"batch_0": 150, "batch_1": 150}}
    assert set(measurable(two, settings).values()) == {None}
    assert set(measurable({"n_cells": 300}, settings).values()) == {None}  # older dataset.json
    # In the job, with only the keys its rule declares.
    job = rule_settings(settings, "integration")
    assert skip_reason("integration", ONE_BATCH, job) == reasons["integration"]


def test_a_one_batch_query_check_and_card_say_why_without_training(tmp_path):
    """Row 19e: the query check trained a reference (1 min 28 s on a small model) before
    failing on the one batch; now it reads nothing but dataset.json, and the card says why."""
    from scvi_hub_workflow.checks import checks_for
    from scvi_hub_workflow.layout import RAN, SKIPPED_REASON
    from scvi_hub_workflow.query_check import check_query_mapping, plan_query

    settings = model_settings({"models": {"m": BATCHED_SCANVI}}, "m")
    missing = str(tmp_path / "never-read")  # no data, no model: nothing is read or trained
    plan = plan_query(ONE_BATCH, rule_settings(settings, "query_plan"))  # before training
    result = check_query_mapping(missing, plan, missing, rule_settings(settings, "query_check"))
    assert result[RAN] is False and "has one batch" in result[SKIPPED_REASON]
    from scvi_hub_workflow.integration import skipped

    integration, table = skipped("one batch", rule_settings(settings, "integration"))
    results = {"query_check": result, "integration": integration}
    for check in checks_for(settings):
        if check.name in results:
            section = "\n".join(check.card_section(results[check.name], settings))
            assert f"Not computed: {results[check.name][SKIPPED_REASON]}." in section
            assert set(check.summary_row(results[check.name]).values()) == {None}
    assert table.empty


@pytest.mark.slow
def test_a_one_batch_model_runs_to_its_card_and_says_what_it_skipped(tmp_path):
    """Row 19e, end to end: the tissue of one donor trains, and the card says why there are no
    integration metrics and no query mapping check."""
    entry = {
        **BATCHED_SCANVI,
        "model": {**BATCHED_SCANVI["model"], "class": "SCVI", "params": {"n_hidden": 16}},
        "hvg": {"n_top_genes": 100},
        "train": {"max_epochs": 2, "accelerator": "cpu"},
        "criticism": {"n_samples": 1, "min_cells": 5, "query_check": True},
    }
    entry["model"]["setup"] = {"batch_key": "batch", "labels_key": "cell_type"}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"models": {"m": entry}}))
    result = snakemake(
        "results/m/card/README.md", "--cores", "2", "--configfile", "cfg.yaml", workdir=tmp_path
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import json

    criticism_dir = tmp_path / "results" / "m" / "criticism"
    for name in ("integration", "query_check"):
        found = json.loads((criticism_dir / f"{name}.json").read_text())
        assert found["ran"] is False and "has one batch" in found["skipped_reason"], found
    card = (tmp_path / "results" / "m" / "card" / "README.md").read_text()
    assert card.count("Not computed: the batch column 'batch' (model.setup.batch_key) has one") == 2
    assert "training" not in (tmp_path / "logs" / "m" / "query_check.log").read_text().lower()


# ---------------------------------------------------------------- a run killed hard


@pytest.mark.slow
def test_a_run_killed_hard_starts_again_with_the_same_command(tmp_path):
    """Row 19d: after SIGKILL to Snakemake and its jobs, the same command stopped at once with
    LockException ("Directory cannot be locked ... --unlock"). The whole story (kills during
    download, training, criticism and publishing) is tests/test_interruptions.py."""
    import os
    import signal
    import subprocess
    import time

    from helpers import SNAKEMAKE

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"models": {"a": SCVI}}))
    target = "resources/builtin/synthetic-iid.h5ad"
    command = [
        *SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", "cfg.yaml", "--cores", "1", target,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        job_log = tmp_path / "logs" / "builtin" / "synthetic-iid.log"
        while not job_log.exists():  # the job runs: Snakemake holds its locks
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list((tmp_path / ".snakemake" / "locks").glob("*.lock"))
    assert not (tmp_path / target).exists()

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = again.stdout + again.stderr
    assert again.returncode == 0, output[-3000:]
    assert "removed the locks of a killed run" in output
    assert "LockException" not in output
    assert anndata_n_obs(tmp_path / target) > 0
    assert not list(tmp_path.rglob(".*.tmp"))


def anndata_n_obs(path) -> int:
    return ad.read_h5ad(path).n_obs


# ---------------------------------------------------------------- operations (rows 11-16)
# Kept apart: the operations rows (file modes, imports, SLURM GPU requests, threads, stopping,
# progress) are added here by their own change.
