"""The Snakemake report of the tiny run: every figure of every model, and a browser shows it."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import zipfile

import numpy as np
import pandas as pd
import pytest
from helpers import TINY_CONFIG, snakemake
from PIL import Image

pytestmark = pytest.mark.slow

FIGURES = {
    "training curves": "training.png",
    "latent UMAP": "latent.png",
    "posterior predictive check": "ppc.png",
    "DE benchmark": "de.png",
}
LABEL_FIGURES = {"label confusion matrix": "confusion.png", "label calibration": "calibration.png"}
# Models with a batch key (tiny-scanvi): scib-metrics of the latent space beside the PCA.
INTEGRATION_FIGURES = {"integration metrics": "integration.png"}
EXPECTED = {"tiny-scvi": FIGURES, "tiny-scanvi": FIGURES | LABEL_FIGURES | INTEGRATION_FIGURES}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def report_results(html: str) -> dict:
    """The report's table of results (`var results = {...}` in report.html), by path."""
    start = html.index("var results = {") + len("var results = ")
    return json.JSONDecoder().raw_decode(html, start)[0]


def assert_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    image = Image.open(io.BytesIO(data))
    image.verify()
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert min(pixels.shape) > 100 and pixels.std() > 5, "a blank or tiny image"


@pytest.fixture(scope="module")
def report_zip(tiny_run):
    result = snakemake(
        "--cores", "1", "--configfile", str(TINY_CONFIG), "--report", "report.zip", workdir=tiny_run
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return zipfile.ZipFile(tiny_run / "report.zip")


def test_every_model_has_every_figure_in_the_report(report_zip):
    html = report_zip.read("report/report.html").decode()
    results = report_results(html)
    found = {}
    for path, entry in results.items():
        if entry["mime_type"] == "image/png":
            found[(entry["labels"]["model"], entry["labels"]["figure"])] = (path, entry)
    expected = {(model, figure) for model, figs in EXPECTED.items() for figure in figs}
    assert set(found) == expected
    for (model, figure), (path, entry) in found.items():
        assert path == f"results/{model}/report/{EXPECTED[model][figure]}"
        assert entry["caption"].strip() and model in entry["caption"]
        assert_png(report_zip.read("report/" + entry["data_uri"]))


def test_the_summary_table_lists_every_model(tiny_run, report_zip):
    table = pd.read_csv(tiny_run / "results/models.tsv", sep="\t", na_values="n/a")
    assert list(table["model"]) == ["tiny-scanvi", "tiny-scvi"]  # sorted by name
    assert table.set_index("model").loc["tiny-scanvi", "epochs"] == 5  # both phases
    assert table["label_accuracy_validation"].isna().tolist() == [False, True]
    # integration: tiny-scanvi has a batch key, tiny-scvi none
    for column in ("integration_total", "integration_total_pca"):
        assert table[column].isna().tolist() == [False, True]
        assert 0 < table[column].iloc[0] < 1
    # the query check runs for the model with a batch key only
    assert table["query_knn_overlap"].isna().tolist() == [False, True]
    assert table["query_label_accuracy"].isna().tolist() == [False, True]
    results = report_results(report_zip.read("report/report.html").decode())
    # shown in the page (HTML), not only offered as a download
    page = results["results/models.html"]
    assert page["mime_type"] == "text/html"
    assert "<table" in (tiny_run / "results/models.html").read_text()


@pytest.mark.parametrize("model", ["tiny-scvi", "tiny-scanvi"])
def test_the_report_shows_every_card_per_model(tiny_run, report_zip, model):
    results = report_results(report_zip.read("report/report.html").decode())
    card = results[f"results/{model}/card/README.html"]
    assert card["mime_type"] == "text/html" and card["labels"]["model"] == model
    page = (tiny_run / f"results/{model}/card/README.html").read_text()
    assert "<h1>Provenance</h1>" in page and page.count("<table>") >= 4


# every TSV/JSON result a model has, shown in the page (a TSV or JSON would be a download only)
RESULT_PAGES = {
    "dataset.json",
    "hvg.tsv",
    "history.tsv",
    "summary.json",
    "cv.json",
    "de.tsv",
    "de.json",
    "provenance.json",
}
CHECK_PAGES = {
    "tiny-scvi": set(),
    "tiny-scanvi": {
        "integration.json",
        "integration.tsv",
        "label_transfer.json",
        "label_transfer.tsv",
        "calibration.tsv",
        "query_check.json",
    },
}


@pytest.mark.parametrize("model", ["tiny-scvi", "tiny-scanvi"])
def test_the_report_shows_every_result_of_a_model_as_a_page(tiny_run, report_zip, model):
    results = report_results(report_zip.read("report/report.html").decode())
    pages = {
        entry["labels"]["result"]: (path, entry)
        for path, entry in results.items()
        if entry["labels"].get("result") and entry["labels"]["model"] == model
    }
    assert set(pages) == RESULT_PAGES | CHECK_PAGES[model]
    # no result is left a download only
    downloads = [p for p, e in results.items() if p.endswith((".tsv", ".json"))]
    assert not downloads, downloads
    for name, (path, entry) in pages.items():
        assert path == f"results/{model}/report/results/{name}.html"
        assert entry["mime_type"] == "text/html"
        assert name in entry["caption"] and model in entry["caption"]
        page = (tiny_run / path).read_text()
        assert page.startswith("<!DOCTYPE html>") and "<table" in page
    provenance = (tiny_run / f"results/{model}/report/results/provenance.json.html").read_text()
    assert "<th>workflow</th>" in provenance and "<th>software</th>" in provenance
    assert "Provenance, as published next to the model" in pages["provenance.json"][1]["caption"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's chromium, installed when missing (as root, with apt-get), else a skip."""
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=900, env=env
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("no chromium, and it could not be installed (apt-get as root)")
    return found


def test_a_browser_shows_the_html_report(tiny_run, chromium, tmp_path):
    report = ("--report", "report.html")
    result = snakemake("--cores", "1", "--configfile", str(TINY_CONFIG), *report, workdir=tiny_run)
    assert result.returncode == 0, result.stderr[-3000:]
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,900",
            "--virtual-time-budget=10000",
            f"--screenshot={shot}",
            (tiny_run / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (900, 1280)
    # the rendered app (menu, text, workflow graph), not an empty page
    assert pixels.std() > 20 and len(np.unique(pixels)) > 50


def test_label_transfer_from_the_published_model(tiny_run):
    import scvi.hub
    from scvi_hub_workflow.label_transfer import predict_probabilities
    from scvi_hub_workflow.model_io import load_model

    hub = tiny_run / "results/tiny-scanvi/hub"
    model = scvi.hub.HubModel(str(hub)).model
    # the scvi-tools 1.4.2 bug the helper and the card's recipe work around
    with pytest.raises(TypeError, match="qzm"):
        model.predict()
    full = load_model(tiny_run / "results/tiny-scanvi/model").predict(soft=True)
    pd.testing.assert_frame_equal(predict_probabilities(model), full, check_names=False)
    # the recipe on the card, run as a user would (from the local hub folder)
    card = (hub / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", card, re.S)
    pull = 'HubModel.pull_from_huggingface_hub("<repo_id>")'
    assert pull in code
    code = code.replace(pull, f"HubModel({str(hub)!r})")
    namespace: dict = {}
    exec(code, namespace)
    np.testing.assert_allclose(namespace["probabilities"].to_numpy(), full.to_numpy(), atol=1e-6)
    assert (namespace["predicted"] == full.idxmax(axis=1)).all()
    transfer = tiny_run / "results/tiny-scanvi/criticism/label_transfer.json"
    summary = json.loads(transfer.read_text())
    assert summary["cells"] == "validation" and summary["n_cells"] > 0
    assert 0 <= summary["accuracy"] <= 1 and summary["unlabelled_vs_truth"]["n_cells"] > 0


def test_the_query_check_maps_a_held_out_batch_and_the_cards_say_so(tiny_run):
    result = json.loads((tiny_run / "results/tiny-scanvi/criticism/query_check.json").read_text())
    assert result["ran"] and result["query_batch"].startswith("batch_")
    assert result["n_query_cells"] + result["n_reference_cells"] == 600
    assert result["knn_overlap_chance"] < result["knn_overlap"] <= 1
    assert 0 <= result["classifier"]["accuracy"] <= 1
    assert not (tiny_run / "results/tiny-scvi/criticism/query_check.json").exists()
    scanvi = (tiny_run / "results/tiny-scanvi/card/README.md").read_text()
    assert f"batch {result['query_batch']} of batch ({result['n_query_cells']} cells)" in scanvi
    scvi = (tiny_run / "results/tiny-scvi/card/README.md").read_text()
    assert "Query mapping\nNot computed: the model has no batch key" in scvi
