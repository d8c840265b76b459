"""The whole chain, end to end, on the tiny config (one Snakemake run shared by these tests)."""

from __future__ import annotations

import hashlib
import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from helpers import SHARED, TINY_CONFIG, snakemake
from scvi_hub_workflow.layout import HUB_FILES

# End to end (minutes): `make test-fast` leaves it out, `make test` runs it.
pytestmark = pytest.mark.slow

MODELS = ("tiny-scvi", "tiny-scanvi")

# Every section heading and bold label of the published scvi-hub cards.
CARD_SECTIONS = [
    "# Model Description",
    "# Metrics",
    "Coefficient of variation",
    "**Cell-wise Coefficient of Variation**",
    "**Gene-wise Coefficient of Variation**",
    "Differential expression metric",
    "**Differential expression**",
    "# Model Properties",
    "Model Parameters",
    "Setup Data Arguments",
    "Data Registry",
    "**Data is Minified**",
    "Summary Statistics",
    "Training",
    "**Training data url**",
    "**Training Code URL**",
    "# References",
]
DE_COLUMNS = ["gene_f1", "lfc_mae", "lfc_pearson", "lfc_spearman", "roc_auc", "pr_auc", "n_cells"]


def front_matter(card: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    assert match, "card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def tag_kinds(tags: list[str]) -> set[str]:
    return {tag.split(":", 1)[0] for tag in tags}


@pytest.mark.parametrize("model", MODELS)
def test_hub_folder_is_exactly_what_gets_published(tiny_run, model):
    hub = tiny_run / "results" / model / "hub"
    assert sorted(p.name for p in hub.iterdir()) == sorted(HUB_FILES)
    receipt = json.loads((tiny_run / "results" / model / "publish.json").read_text())
    assert receipt["published"] is False
    listed = {f["path"]: f for f in receipt["files"]}
    assert sorted(listed) == sorted(HUB_FILES)
    for name, entry in listed.items():
        data = (hub / name).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("model", MODELS)
def test_scvi_tools_loads_the_hub_folder(tiny_run, model):
    import scvi.hub

    hub_model = scvi.hub.HubModel(str(tiny_run / "results" / model / "hub"))
    loaded = hub_model.model
    assert type(loaded).__name__ == hub_model.metadata.model_cls_name
    assert loaded.minified_data_type is not None  # the default publishes minified data
    latent = loaded.get_latent_representation()
    assert latent.shape[0] == loaded.adata.n_obs and np.isfinite(latent).all()


def test_scanpy_computes_on_every_written_h5ad(tiny_run):
    # Other tools must be able to work on our files: scanpy's numba kernels refuse a CSR
    # matrix whose indices and indptr differ in dtype.
    import scanpy as sc

    paths = sorted((tiny_run / "results").rglob("*.h5ad")) + sorted(
        (tiny_run / "resources").rglob("*.h5ad")
    )
    assert {"hvg.h5ad", "adata.h5ad"} <= {p.name for p in paths}
    tested = []
    for path in paths:
        adata = ad.read_h5ad(path)
        if sp.issparse(adata.X):
            assert adata.X.indices.dtype == adata.X.indptr.dtype, path
        if adata.X is None or adata.X.sum() == 0:  # minified data hold no counts
            continue
        adata.obs["half"] = np.where(np.arange(adata.n_obs) % 2, "a", "b")
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
        sc.tl.rank_genes_groups(adata, "half")
        tested.append(path.relative_to(tiny_run).as_posix())
    assert "results/tiny-scanvi/hvg.h5ad" in tested
    assert "results/tiny-scanvi/model/adata.h5ad" in tested


def test_minified_scanvi_samples_like_the_full_model(tiny_run):
    # Guards the SCANVI.from_scvi_model minification bug (all-zero samples after reload).
    from scvi_hub_workflow.model_io import load_model

    minified = load_model(tiny_run / "results" / "tiny-scanvi" / "minified")
    assert minified.minified_data_type is not None
    sample = minified.posterior_predictive_sample(n_samples=1)
    observed = ad.read_h5ad(tiny_run / "results" / "tiny-scanvi" / "hvg.h5ad").X
    ratio = float(sample.sum()) / float(observed.sum())
    assert 0.5 < ratio < 2.0


@pytest.mark.parametrize("model", MODELS)
def test_card_has_every_section_and_tag_of_the_reference_cards(tiny_run, model):
    card = (tiny_run / "results" / model / "hub" / "README.md").read_text()
    for section in CARD_SECTIONS:
        assert section in card, section
    meta = front_matter(card)
    assert meta["library_name"] == "scvi-tools" and meta["license"] == "cc-by-4.0"
    kinds = tag_kinds(meta["tags"])
    assert {"biology", "genomics", "single-cell", "model_cls_name", "scvi_version"} <= kinds
    assert {"anndata_version", "modality", "annotated"} <= kinds
    header = "| Index | " + " | ".join(DE_COLUMNS)
    assert header in card
    expected_class = "SCANVI" if "scanvi" in model else "SCVI"
    assert f"model_cls_name:{expected_class}" in meta["tags"]
    if expected_class == "SCANVI":
        assert "tissue:simulated" in meta["tags"] and "annotated:True" in meta["tags"]
        assert "| latent_qzm | adata.obsm['scanvi_latent_qzm'] |" in card
        assert "**Data is Minified**: True" in card


@pytest.mark.skipif(not (SHARED / "reference-cards").is_dir(), reason="../shared is absent")
def test_card_covers_the_published_reference_cards(tiny_run):
    for reference in (SHARED / "reference-cards").glob("*.md"):
        text = reference.read_text()
        ours = (tiny_run / "results" / "tiny-scanvi" / "hub" / "README.md").read_text()
        for section in CARD_SECTIONS:
            if section in text:
                assert section in ours
        tags = re.findall(r"- ([a-z_]+:[^\s]+|biology|genomics|single-cell)", text.split("---")[1])
        ours_kinds = tag_kinds(front_matter(ours)["tags"])
        assert tag_kinds(tags) <= ours_kinds, reference.name


@pytest.mark.parametrize("model", MODELS)
def test_criticism_outputs(tiny_run, model):
    criticism = tiny_run / "results" / model / "criticism"
    cv = json.loads((criticism / "cv.json").read_text())
    for split in ("train", "validation"):
        assert {"mae", "pearson", "spearman", "r2", "n_cells"} <= set(cv["cell_wise"][split])
    assert cv["cell_wise"]["train"]["n_cells"] > cv["cell_wise"]["validation"]["n_cells"] > 0
    table = pd.read_csv(criticism / "de.tsv", sep="\t")
    assert set(DE_COLUMNS) <= set(table.columns) and len(table) >= 2
    de = json.loads((criticism / "de.json").read_text())
    assert de["test"] == "wilcoxon"
    assert de["grouping"] == ("labels" if "scanvi" in model else "clusters")


def test_training_history_and_device_are_recorded(tiny_run):
    history = pd.read_csv(tiny_run / "results/tiny-scanvi/training/history.tsv", sep="\t")
    assert {"elbo_train", "elbo_validation"} <= set(history.columns)
    summary = json.loads((tiny_run / "results/tiny-scanvi/training/summary.json").read_text())
    assert summary["device"] == "cpu" and summary["epochs"] == 2
    # both phases of SCANVI-from-SCVI (tiny config: 3 SCVI epochs, then 2 SCANVI epochs)
    assert [(p["phase"], p["epochs"]) for p in summary["phases"]] == [("scvi", 3), ("scanvi", 2)]
    assert summary["total_epochs"] == 5
    assert history.groupby("phase", sort=False)["epoch"].max().to_dict() == {"scvi": 2, "scanvi": 1}
    card = (tiny_run / "results/tiny-scanvi/card/README.md").read_text()
    assert "Trained for 3 epochs of SCVI pre-training, then 2 epochs of SCANVI" in card
    # how the final phase ended: max_epochs, and the kept epoch (early stopping and
    # train.keep_best_epoch are on by default); SCANVI's is judged with its classifier's loss
    end = summary["phases"][-1]
    measure = "validation ELBO + classification loss"
    assert end["stopped"] == "max_epochs reached" and end["kept"] == f"best {measure}"
    assert 1 <= end["kept_epoch"] <= 2 and 0 < end["final_kl_weight"] < 0.1  # 400-epoch warm-up
    assert (
        f"SCANVI training stopped after 2 epochs (max_epochs reached); the published weights "
        f"are those of epoch {end['kept_epoch']}, the best {measure}"
    ) in card
    assert "trained on device cpu" in (tiny_run / "logs/tiny-scanvi/train.log").read_text()


def test_a_second_run_has_nothing_to_do(tiny_run):
    result = snakemake("-n", "--cores", "1", "--configfile", str(TINY_CONFIG), workdir=tiny_run)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def planned_jobs(workdir, config: dict, tmp_path) -> set[tuple[str, str]]:
    """(rule, model) of every job a dry run of ``config`` plans in ``workdir``."""
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path), workdir=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs, rule = set(), None
    for line in (result.stdout + result.stderr).splitlines():
        if match := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line):
            rule = match[1]
            if rule in ("all", "model_summary"):
                jobs.add((rule, ""))
        elif match := re.search(r"wildcards: model=(\S+)", line):
            jobs.add((rule, match[1]))
    return jobs


AFTER_THE_CHECK = {"figures", "card", "hub", "publish"}
AFTER_THE_CARD = {"card", "hub", "publish"}


@pytest.mark.parametrize(
    ("changes", "expected", "model"),
    [
        # the posterior predictive check's keys
        ({"criticism.top_n": 11}, {"posterior_predictive_check"} | AFTER_THE_CHECK, "tiny-scvi"),
        # the DE groups planned before training
        ({"criticism.min_cells": 6}, {"de_groups", "posterior_predictive_check"}, "tiny-scanvi"),
        ({"criticism.integration_max_cells": 300}, {"integration", "card"}, "tiny-scanvi"),
        ({"criticism.query_epochs": 3}, {"query_check"} | AFTER_THE_CARD, "tiny-scanvi"),
        ({"card.references": "Our paper."}, AFTER_THE_CARD, "tiny-scvi"),
        # a key planned before training together with keys of checks after it, in one edit
        (
            {"criticism.min_cells": 6, "criticism.integration_max_cells": 300},
            {"de_groups", "posterior_predictive_check", "integration"} | AFTER_THE_CARD,
            "tiny-scanvi",
        ),
        (
            {"criticism.min_cells": 6, "criticism.query_epochs": 3, "card.references": "Ours."},
            {"de_groups", "posterior_predictive_check", "query_check"} | AFTER_THE_CARD,
            "tiny-scanvi",
        ),
    ],
)
def test_one_invocation_after_a_settings_change_leaves_nothing_stale(
    tiny_run, tmp_path, changes, expected, model
):
    # Snakemake 9 skips the params check of every job downstream of a re-run job joined by
    # an ancient() edge (snakemake#4166): a first run re-ran de_groups alone and exited 0, and
    # with min_cells and another check's key changed together, that check stayed stale.
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        cfg["defaults"].setdefault(section, {})[key] = value
    jobs = planned_jobs(tiny_run, cfg, tmp_path)
    assert {(rule, model) for rule in expected} <= jobs, sorted(jobs)
    assert ("train", model) not in jobs  # nothing retrains
    if "criticism.min_cells" not in changes:
        assert ("de_groups", model) not in jobs
    if not {"criticism.query_epochs", "criticism.query_batch"} & set(changes):
        assert ("query_check", model) not in jobs


def test_a_reordered_config_reruns_nothing(tiny_run, tmp_path):
    # Snakemake compares each rule's params as text; the settings text must not follow the
    # order of keys in the config file.
    def reversed_keys(value):
        if isinstance(value, dict):
            return {k: reversed_keys(value[k]) for k in reversed(list(value))}
        return value

    path = tmp_path / "reordered.yaml"
    cfg = reversed_keys(yaml.safe_load(TINY_CONFIG.read_text()))
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path), workdir=tiny_run)
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


def test_adding_a_model_runs_only_the_new_models_jobs(tiny_run, tmp_path):
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["models"]["another-tissue"] = cfg["models"]["tiny-scvi"]
    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = snakemake(
        "-n", "--cores", "1", "--configfile", str(path), "--quiet", "rules", workdir=tiny_run
    )
    assert result.returncode == 0, result.stderr
    dry = snakemake("-n", "--cores", "1", "--configfile", str(path), workdir=tiny_run)
    jobs = re.findall(r"wildcards: model=(\S+)", dry.stdout + dry.stderr)
    assert jobs and set(jobs) == {"another-tissue"}


def test_non_integer_counts_stop_the_run_before_training(tmp_path):
    adata = ad.AnnData(
        # 20 genes: fewer are too few to train on (trainable.py), refused before the counts
        X=sp.csr_matrix(np.full((30, 20), 0.5, dtype=np.float32)),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(30)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(20)]),
    )
    adata.write_h5ad(tmp_path / "normalised.h5ad")
    cfg = {
        "models": {
            "bad": {
                "dataset": {"source": "normalised.h5ad"},
                "model": {"class": "SCVI"},
                "hvg": {"n_top_genes": None},
            }
        }
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake("--cores", "1", "--configfile", str(tmp_path / "cfg.yaml"), workdir=tmp_path)
    assert result.returncode != 0
    log = (tmp_path / "logs" / "bad" / "dataset.log").read_text()
    assert "model 'bad', file normalised.h5ad" in log and "counts are not integers" in log
    assert not (tmp_path / "results" / "bad" / "model").exists()
    assert not (tmp_path / "results" / "bad" / "hvg.h5ad").exists()
    # models.tsv lists the failed model with its state
    table = pd.read_csv(tmp_path / "results" / "models.tsv", sep="\t")
    assert (
        table.set_index("model").loc["bad", "state"] == "failed in dataset (logs/bad/dataset.log)"
    )


def test_report_bundles_the_results(tiny_run):
    result = snakemake(
        "--cores", "1", "--configfile", str(TINY_CONFIG), "--report", "report.zip", workdir=tiny_run
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import zipfile

    names = zipfile.ZipFile(tiny_run / "report.zip").namelist()
    assert any(name.endswith("README.html") for name in names)  # the card, as a page
    # every TSV/JSON result, as a page
    assert any(name.endswith("provenance.json.html") for name in names)
    assert any(name.endswith("de.tsv.html") for name in names)


def test_minify_false_publishes_the_full_training_data(tiny_run, tmp_path):
    import shutil

    import scvi.hub

    workdir = tmp_path / "run"
    shutil.copytree(tiny_run, workdir, symlinks=True)  # with .snakemake/: only what changed runs
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["models"] = {"tiny-scvi": cfg["models"]["tiny-scvi"] | {"minify": False}}
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = snakemake("--cores", "2", "--configfile", str(path), workdir=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = set(re.findall(r"rule (\w+):", result.stdout + result.stderr))
    assert "train" not in ran and "hub" in ran
    hub = workdir / "results" / "tiny-scvi" / "hub"
    model = scvi.hub.HubModel(str(hub)).model
    assert model.minified_data_type is None
    assert model.adata.X.sum() > 0 and "split" in model.adata.obs
    assert "**Data is Minified**: False" in (hub / "README.md").read_text()


def test_a_url_source_is_downloaded_checked_and_validated(tmp_path):
    import hashlib
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from scvi_hub_workflow.builtin_datasets import simulated_atlas

    served = tmp_path / "served"
    served.mkdir()
    simulated_atlas(n_cells=200, n_genes=50).write_h5ad(served / "atlas.h5ad")
    sha256 = hashlib.sha256((served / "atlas.h5ad").read_bytes()).hexdigest()
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/atlas.h5ad"
    cfg = {
        "models": {
            "downloaded": {
                "dataset": {"source": url, "sha256": sha256},
                "model": {"class": "SCVI", "setup": {"batch_key": "batch"}},
            }
        }
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    try:
        result = snakemake(
            "results/downloaded/dataset.json",
            "--cores",
            "1",
            "--configfile",
            str(tmp_path / "cfg.yaml"),
            workdir=tmp_path,
            env={"NO_PROXY": "127.0.0.1,localhost"},
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr[-3000:]
    downloaded = tmp_path / "resources" / "downloads" / f"{sha256}.h5ad"
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == sha256
    summary = json.loads((tmp_path / "results" / "downloaded" / "dataset.json").read_text())
    assert (summary["n_cells"], summary["n_genes"]) == (200, 50)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_has_its_provenance_in_the_hub_folder_and_on_the_card(tiny_run, model):
    import subprocess

    from helpers import ROOT
    from scvi_hub_workflow.config import resolve
    from scvi_hub_workflow.provenance import settings_record

    results = tiny_run / "results" / model
    record = json.loads((results / "hub" / "provenance.json").read_text())
    assert record == json.loads((results / "provenance.json").read_text())
    settings = resolve(yaml.safe_load(TINY_CONFIG.read_text()))[model]
    assert record["settings_sha256"] == settings_record(settings)[1]
    dataset = json.loads((results / "dataset.json").read_text())
    assert (record["input"]["n_cells"], record["input"]["n_genes"]) == (
        dataset["n_cells"],
        dataset["n_genes"],
    )
    assert re.fullmatch(r"[0-9a-f]{64}", record["input"]["sha256"])
    hvg = pd.read_csv(results / "hvg.tsv", sep="\t", index_col=0)
    assert record["genes"]["n_genes"] == int(hvg["highly_variable"].sum())
    assert {"python", "torch", "lightning", "scvi-tools", "anndata", "scanpy"} <= set(
        record["software"]
    )
    assert "unknown" not in record["software"].values()
    assert record["environment_file"]["path"] == "envs/scvi.yaml"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True)
    assert record["workflow"]["commit"] == head.stdout.decode().strip()
    assert record["hardware"]["device"] == "cpu" and record["hardware"]["cpu_threads"] >= 1
    assert record["training"]["seed"] == settings.train.seed
    assert record["training"]["cells_per_second"] > 0
    assert all(p["stopped"] for p in record["training"]["phases"])
    card = (results / "hub" / "README.md").read_text()
    assert "# Provenance" in card and record["settings_sha256"] in card
    assert f"commit {record['workflow']['commit']}" in card  # Training Code URL, no remote here
    assert "**Training Code URL**: Not provided by uploader" not in card


@pytest.mark.parametrize(
    "args",
    [
        ("results/tiny-scvi/publish.json", "--configfile", str(TINY_CONFIG)),
        ("--configfile", str(TINY_CONFIG), "--", "results/tiny-scvi/publish.json"),
    ],
    ids=["target first", "configfile then --"],
)
def test_one_models_results_build_alone_in_the_documented_forms(tmp_path, args):
    dry = snakemake("-n", "--cores", "1", *args, workdir=tmp_path)
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = set(re.findall(r"wildcards: model=(\S+)", dry.stdout + dry.stderr))
    assert jobs == {"tiny-scvi"}
    assert "rule publish:" in dry.stdout + dry.stderr


def test_a_config_with_other_models_remakes_the_summary_and_says_so(tiny_run, tmp_path):
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    del cfg["models"]["tiny-scanvi"]
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(cfg))
    dry = snakemake("-n", "--cores", "1", "--configfile", str(path), workdir=tiny_run)
    output = dry.stdout + dry.stderr
    assert dry.returncode == 0, output[-3000:]
    assert "results/models.tsv lists the models ['tiny-scanvi', 'tiny-scvi']" in output
    assert "rule model_summary:" in output
    # with its own config, the table is current: no warning
    again = snakemake("-n", "--cores", "1", "--configfile", str(TINY_CONFIG), workdir=tiny_run)
    assert "lists the models" not in again.stdout + again.stderr


def test_training_progress_reaches_the_console_without_flooding_it(tiny_run):
    console = (tiny_run / "logs" / "console.txt").read_text()
    lines = [line for line in console.splitlines() if "train.log: " in line]
    # the first and the last epoch of each phase (tiny epochs are seconds apart)
    assert "logs/tiny-scvi/train.log: SCVI: epoch 1/3, elapsed" in console
    assert "logs/tiny-scvi/train.log: SCVI: epoch 3/3, elapsed" in console
    assert "logs/tiny-scanvi/train.log: SCANVI: epoch 2/2, elapsed" in console
    assert len(lines) <= 6, lines
    assert "\x1b[" not in (tiny_run / "logs/tiny-scanvi/train.log").read_text()
