"""The report's figures: each renders a non-blank PNG from the workflow's tables."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scvi_hub_workflow import figures
from scvi_hub_workflow.model_summary import COLUMNS, summary_row, summary_table


def png_pixels(figure) -> np.ndarray:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(buffer).convert("L"))


def assert_not_blank(figure) -> None:
    pixels = png_pixels(figure)
    assert pixels.size > 0 and pixels.std() > 5  # more than a flat background


def history(phases=(("scvi", 4), ("scanvi", 3))) -> pd.DataFrame:
    frames = []
    for phase, n in phases:
        loss = np.linspace(500, 400, n)
        frames.append(
            pd.DataFrame(
                {
                    "phase": phase,
                    "elbo_train": loss,
                    "elbo_validation": loss + 5,
                    "reconstruction_loss_train": loss - 3,
                    "reconstruction_loss_validation": loss + 2,
                },
                index=pd.RangeIndex(n, name="epoch"),
            )
        )
    return pd.concat(frames)


def test_training_curves_show_every_phase_on_one_axis():
    figure = figures.training_curves(history())
    elbo = figure.axes[0]
    # scvi-tools' `elbo` is the loss it minimises: the negative ELBO
    assert elbo.get_title() == "Negative ELBO (loss)"
    assert elbo.get_ylabel() == "Negative ELBO (loss), lower is better"
    train_line = elbo.get_lines()[0]
    assert len(train_line.get_xdata()) == 7  # 4 SCVI epochs, then 3 SCANVI epochs
    texts = {t.get_text() for t in elbo.texts}
    assert texts == {"SCVI", "SCANVI"}
    assert_not_blank(figure)


def test_training_curves_without_validation_or_phase():
    table = history((("scvi", 3),)).drop(columns=["phase", "elbo_validation"])
    figure = figures.training_curves(table)
    assert len(figure.axes[0].get_lines()) == 1  # training only
    assert_not_blank(figure)


def test_latent_umap_cv_scatter_and_de_figures():
    rng = np.random.default_rng(0)
    n = 300
    labels = rng.choice(["a", "b", "c"], n)
    latent = rng.normal(size=(n, 5)) + (labels[:, None] == "a") * 4
    obs = pd.DataFrame(
        {"batch": rng.choice(["b0", "b1"], n), "cell_type": labels, "split": "train"}
    )
    obs.loc[obs.index[:60], "split"] = "validation"
    cells = pd.DataFrame(
        {"split": obs["split"], "observed_cv": rng.gamma(2, 1, n), "model_cv": rng.gamma(2, 1, n)}
    )
    genes = pd.DataFrame({"observed_cv": rng.gamma(2, 1, 50), "model_cv": rng.gamma(2, 1, 50)})
    de = pd.DataFrame(
        {
            "group": ["a", "b", "c"],
            "n_cells": [120, 100, 80],
            "gene_f1": [0.8, 0.5, np.nan],
            "roc_auc": [0.9, 0.7, np.nan],
            "pr_auc": [0.6, 0.4, np.nan],
            "lfc_pearson": [0.9, -0.2, 0.1],
        }
    )
    cv = {
        "cell_wise": {"train": {"pearson": 0.91}, "validation": {"pearson": 0.87}},
        "gene_wise": {"all": {"pearson": 0.99}},
    }
    made = figures.model_figures(
        history(),
        obs,
        latent,
        cells,
        genes,
        de,
        cv,
        batch_key="batch",
        labels_key="cell_type",
        seed=0,
    )
    assert sorted(made) == ["de", "latent", "ppc", "training"]
    umap_axes = [ax for ax in made["latent"].axes if ax.get_title()]
    assert [ax.get_title() for ax in umap_axes] == ["batch (batch)", "label (cell_type)", "split"]
    assert "all 300 cells" in made["latent"]._suptitle.get_text()
    # the numbers of cv.json (and the card), not a correlation of the pooled points
    assert made["ppc"].axes[0].get_title() == "per cell (Pearson: train 0.91, validation 0.87)"
    assert made["ppc"].axes[1].get_title() == "per gene (Pearson, all cells: 0.99)"
    assert "n/a" in {t.get_text() for t in made["de"].axes[0].texts}
    for figure in made.values():
        assert_not_blank(figure)
    # a CITE-seq model: the proteins in a row of their own, with cv.json's protein numbers
    proteins = genes.head(12).rename_axis("protein")
    protein_cv = {
        "cell_wise": {"train": {"pearson": 0.47}, "validation": {"pearson": 0.53}},
        "gene_wise": {"all": {"pearson": 0.98}},
    }
    ppc = figures.cv_scatter(cells, genes, 0, cv | {"protein": protein_cv}, (cells, proteins))
    titles = [ax.get_title() for ax in ppc.axes]
    assert titles == [
        "RNA, per cell (Pearson: train 0.91, validation 0.87)",
        "RNA, per gene (Pearson, all cells: 0.99)",
        "proteins, per cell (Pearson: train 0.47, validation 0.53)",
        "proteins, per protein (Pearson, all cells: 0.98)",
    ]
    assert len(ppc.axes[3].collections[0].get_offsets()) == 12
    assert_not_blank(ppc)


def test_label_transfer_figures():
    confusion = pd.DataFrame([[8, 2], [1, 9]], index=["a", "b"], columns=["a", "b"])
    assert_not_blank(figures.confusion_matrix(confusion))
    table = pd.DataFrame(
        {
            "low": [0.0, 0.5],
            "high": [0.5, 1.0],
            "n_cells": [0, 20],
            "mean_confidence": [np.nan, 0.8],
            "accuracy": [np.nan, 0.7],
        }
    )
    figure = figures.calibration_curve(table, ece=0.1)
    assert "ECE 0.100" in figure.axes[0].get_title()
    assert_not_blank(figure)


def test_subsample_is_seeded_and_bounded():
    assert list(figures.subsample(5, 10, seed=0)) == [0, 1, 2, 3, 4]
    picked = figures.subsample(1000, 100, seed=3)
    assert len(picked) == 100 and len(set(picked)) == 100
    assert np.array_equal(picked, figures.subsample(1000, 100, seed=3))
    assert not np.array_equal(picked, figures.subsample(1000, 100, seed=4))


def test_summary_row_has_the_headline_metrics():
    training = {
        "model_class": "SCANVI",
        "n_cells": {"train": 90, "validation": 10, "test": 0},
        "epochs": 2,
        "total_epochs": 5,
    }
    cv = {"cell_wise": {"validation": {"pearson": 0.7}}, "gene_wise": {"all": {"pearson": 0.9}}}
    de = {"groups": [{"roc_auc": 0.8}, {"roc_auc": 0.6}, {"roc_auc": None}]}
    transfer = {"accuracy": 0.95, "macro_f1": 0.9, "ece": 0.02}
    row = summary_row("m", training, cv, de, {"label_transfer": transfer})
    assert row["cells"] == 100 and row["epochs"] == 5
    assert row["mean_de_roc_auc"] == pytest.approx(0.7)
    assert row["label_accuracy_validation"] == 0.95
    scvi = summary_row("s", training | {"model_class": "SCVI"}, cv, de)
    assert scvi["label_accuracy_validation"] is None
    assert row["protein_cv_pearson_all"] is None  # no proteins: n/a
    part = {"cell_wise": {"validation": {"pearson": 0.5}}, "gene_wise": {"all": {"pearson": 0.8}}}
    totalvi = summary_row("t", training | {"model_class": "TOTALVI"}, cv | {"protein": part}, de)
    assert totalvi["protein_cell_cv_pearson_validation"] == 0.5
    assert totalvi["protein_cv_pearson_all"] == 0.8 and totalvi["gene_cv_pearson_all"] == 0.9
    assert list(summary_table([row, scvi, totalvi]).columns) == list(COLUMNS)


def test_umap_legend_is_outside_and_unlabelled_cells_lie_beneath():
    rng = np.random.default_rng(0)
    n = 200
    labels = rng.choice(["a", "b", "unknown"], n)
    obs = pd.DataFrame({"cell_type": labels})
    figure = figures.latent_umap(
        rng.normal(size=(n, 2)), obs, {"label": "cell_type"}, {"cell_type": "unknown"}
    )
    figure.canvas.draw()
    ax = figure.axes[0]
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # right of the points
    unknown = next(c for c in ax.collections if c.get_label() == "unknown")
    others = [c for c in ax.collections if c.get_label() != "unknown"]
    assert ax.collections[0] is unknown  # drawn first
    assert all(unknown.get_zorder() < c.get_zorder() for c in others)
    assert [t.get_text() for t in legend.get_texts()] == ["unknown", "a", "b"]


def test_de_bars_carry_their_true_genes_and_chance():
    de = pd.DataFrame(
        {
            "group": ["a", "b"],
            "n_cells": [120, 30],
            "gene_f1": [0.8, 0.5],
            "roc_auc": [0.9, 0.7],
            "pr_auc": [0.6, 0.4],
            "n_true_up": [20, 5],
            "lfc_pearson": [0.9, -0.2],
        }
    )
    figure = figures.de_benchmark(de, n_genes=200)
    ticks = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert ticks == ["a (120 cells, 20 true genes)", "b (30 cells, 5 true genes)"]
    by_title = {ax.get_title(): ax for ax in figure.axes}
    roc_chance = by_title["roc_auc"].collections[-1].get_segments()
    assert [segment[0][0] for segment in roc_chance] == [0.5, 0.5]
    pr_chance = by_title["pr_auc"].collections[-1].get_segments()
    assert [segment[0][0] for segment in pr_chance] == pytest.approx([0.1, 0.025])
    assert "chance" in figure.legends[0].get_texts()[0].get_text()
    assert_not_blank(figure)


def test_calibration_bins_of_few_cells_stay_off_the_curve():
    table = pd.DataFrame(
        {
            "low": [0.0, 0.5],
            "high": [0.5, 1.0],
            "n_cells": [3, 200],
            "mean_confidence": [0.4, 0.9],
            "accuracy": [1.0, 0.85],
        }
    )
    figure = figures.calibration_curve(table, ece=0.1)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert list(lines["model"].get_xdata()) == [0.9]
    assert list(lines[f"bins of < {figures.MIN_CALIBRATION_CELLS} cells"].get_xdata()) == [0.4]
    assert {"3", "200"} <= {t.get_text() for t in figure.axes[0].texts}


def test_models_tsv_lists_a_failed_model_with_its_state(tmp_path):
    from scvi_hub_workflow.model_summary import model_state, write_states

    def made(model, *paths, logs=()):
        for path in paths:
            (tmp_path / "results" / model / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "results" / model / path).write_text("{}")
        for step in logs:
            (tmp_path / "logs" / model).mkdir(parents=True, exist_ok=True)
            (tmp_path / "logs" / model / f"{step}.log").write_text("")

    made("good", "dataset.json", "publish.json", logs=("dataset", "publish"))
    made("bad", "dataset.json", "hvg.h5ad", logs=("dataset", "hvg", "de_groups", "train"))
    made("waiting", "dataset.json", logs=("dataset",))
    assert model_state("good", tmp_path) == "complete"
    assert model_state("bad", tmp_path) == "failed in de_groups (logs/bad/de_groups.log)"
    assert model_state("waiting", tmp_path) == "stopped after dataset"
    assert model_state("absent", tmp_path) == "not started"
    previous = summary_table([{"model": "good", "state": "complete", "class": "SCVI", "cells": 9}])
    (tmp_path / "results" / "models.tsv").write_text(previous.to_csv(sep="\t", index=False))
    write_states(["good", "bad", "waiting"], workdir=tmp_path)
    table = pd.read_csv(tmp_path / "results" / "models.tsv", sep="\t").set_index("model")
    assert list(table.columns) == list(COLUMNS[1:])
    assert table.loc["good", "cells"] == 9 and table.loc["good", "state"] == "complete"
    assert table.loc["bad", "state"].startswith("failed in de_groups")
    assert pd.isna(table.loc["waiting", "class"])  # n/a
