"""The report's figures: pure functions from the workflow's tables to a matplotlib Figure.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no display needed) and
saved as PNG by ``save_png``.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .label_figures import (  # noqa: F401  (the label_transfer rule)
    MIN_CALIBRATION_CELLS,
    calibration_curve,
    confusion_matrix,
)
from .layout import (
    CELL_WISE,
    GENE_WISE,
    PHASE_COLUMN,
    PROTEIN_CV,
    RAN,
    SKIPPED_REASON,
    SPLIT_COLUMN,
)

DPI = 110
# The UMAP runs on at most this many cells (a seeded subsample above it): the embedding of a
# million cells takes tens of minutes and shows no more than 50,000 points can.
MAX_UMAP_CELLS = 50_000
# Scatter plots draw at most this many points (seeded subsample), so a PNG stays small.
MAX_SCATTER_POINTS = 50_000
# Columns of the history plotted, each as (title, stem): stem_train and stem_validation.
# scvi-tools logs the ELBO as a loss to minimise (reconstruction loss + KL): the negative ELBO.
CURVES = (
    ("Negative ELBO (loss)", "elbo"),
    ("Reconstruction loss", "reconstruction_loss"),
)
DE_METRICS = ("gene_f1", "roc_auc", "pr_auc", "lfc_pearson")
UNLABELLED_COLOUR = "#d0d0d0"  # unlabelled cells: light grey, drawn beneath the labelled ones


def save_png(figure: Figure, path: str | os.PathLike) -> None:
    """Write the figure as PNG (matplotlib's Agg canvas)."""
    figure.savefig(path, format="png", dpi=DPI, bbox_inches="tight")


def subsample(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` items (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def training_curves(history: pd.DataFrame) -> Figure:
    """ELBO and reconstruction loss per epoch, training and validation, every phase one after
    the other on one epoch axis (a dotted line where SCANVI takes over from its SCVI)."""
    history = history.reset_index()
    if PHASE_COLUMN not in history:
        history[PHASE_COLUMN] = "training"
    figure = Figure(figsize=(10, 3.8), layout="constrained")
    axes = figure.subplots(1, len(CURVES))
    epoch = np.arange(len(history))  # phases one after the other
    phases = history[PHASE_COLUMN].astype(str).to_numpy()
    starts = [i for i in range(len(phases)) if i == 0 or phases[i] != phases[i - 1]]
    for ax, (title, stem) in zip(axes, CURVES, strict=True):
        for split, style in (("train", "-"), ("validation", "--")):
            column = f"{stem}_{split}"
            colour = "C0" if split == "train" else "C1"
            if column in history:
                ax.plot(epoch, history[column], style, label=split, color=colour)
        for start in starts:
            if start:
                ax.axvline(start - 0.5, color="grey", linestyle=":")
            ax.annotate(
                phases[start].upper(),
                (start, 0.0),
                xycoords=("data", "axes fraction"),
                xytext=(3, 4),
                textcoords="offset points",
                color="grey",
            )
        ax.set(title=title, xlabel="epoch (all phases)", ylabel=f"{title}, lower is better")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="upper right")
    return figure


def umap_coordinates(latent: np.ndarray, seed: int) -> np.ndarray:
    """2-D UMAP (scanpy) of the kNN graph of the latent means; scikit-learn's exact kNN, which
    skips pynndescent's JIT compile (several seconds per process)."""
    import anndata
    import scanpy as sc

    adata = anndata.AnnData(X=np.asarray(latent, dtype=np.float32))
    sc.pp.neighbors(adata, use_rep="X", transformer="sklearn", random_state=seed)
    sc.tl.umap(adata, random_state=seed)
    return np.asarray(adata.obsm["X_umap"])


def _categorical_scatter(
    ax, coordinates: np.ndarray, values: pd.Series, title: str, beneath: str | None = None
) -> None:
    """One colour per category, the legend outside the axes (never over the points); the
    ``beneath`` category (the unlabelled cells) grey and drawn first, under the others."""
    values = values.astype(str)
    categories = sorted(values.unique())
    if beneath is not None and str(beneath) in categories:
        categories.remove(str(beneath))
        categories.insert(0, str(beneath))
    else:
        beneath = None
    coloured = len(categories) - (beneath is not None)
    palette = matplotlib.colormaps["tab10" if coloured <= 10 else "tab20"]
    size = max(1.0, min(12.0, 20_000 / max(len(values), 1)))
    for i, category in enumerate(categories):
        inside = (values == category).to_numpy()
        grey = beneath is not None and category == str(beneath)
        colour = UNLABELLED_COLOUR if grey else palette((i - (beneath is not None)) % palette.N)
        ax.scatter(
            coordinates[inside, 0],
            coordinates[inside, 1],
            s=size,
            color=colour,
            label=category,
            linewidths=0,
            rasterized=True,
            zorder=1 if grey else 2,
        )
    ax.set(title=title, xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    if len(categories) <= 25:
        ax.legend(
            markerscale=max(1.0, 6 / size),
            fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
        )


def latent_umap(
    coordinates: np.ndarray,
    obs: pd.DataFrame,
    colour_by: dict[str, str],
    beneath: dict[str, str] | None = None,
) -> Figure:
    """The UMAP, one panel per obs column in ``colour_by`` ({title: column}); ``beneath``
    ({column: category}) draws that category grey under the others."""
    beneath = beneath or {}
    figure = Figure(figsize=(6.5 * len(colour_by), 4.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(colour_by)))
    for ax, (title, column) in zip(axes, colour_by.items(), strict=True):
        _categorical_scatter(ax, coordinates, obs[column], title, beneath.get(column))
    return figure


def _identity_scatter(ax, observed, model, colours, title: str) -> None:
    ax.scatter(observed, model, s=4, c=colours, linewidths=0, alpha=0.6, rasterized=True)
    low = float(min(np.min(observed), np.min(model), 0))
    high = float(max(np.max(observed), np.max(model)))
    ax.plot([low, high], [low, high], color="grey", linestyle=":", label="model = observed")
    ax.set(title=title, xlabel="observed CV", ylabel="model CV")


def _pearson(table: dict, split: str) -> str:
    value = (table.get(split) or {}).get("pearson")
    return "n/a" if value is None or value != value else f"{value:.2f}"


def cv_scatter(
    cells: pd.DataFrame,
    genes: pd.DataFrame,
    seed: int,
    cv: dict,
    proteins: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> Figure:
    """Model against observed coefficient of variation: per cell (training and validation cells,
    coloured by split) and per gene (all cells). The Pearson correlations in the titles are
    cv.json's (the card's), per split. ``proteins``: a CITE-seq model's per-cell and
    per-protein CVs, a row of their own beneath the RNA's."""
    if proteins is None:
        figure = Figure(figsize=(10, 4.4), layout="constrained")
        _cv_row(figure.subplots(1, 2), cells, genes, seed, cv, "")
        return figure
    figure = Figure(figsize=(10, 8.6), layout="constrained")
    rna, protein = figure.subplots(2, 2)
    _cv_row(rna, cells, genes, seed, cv, "RNA, ")
    _cv_row(protein, *proteins, seed, cv.get(PROTEIN_CV, {}), "proteins, ", feature="protein")
    return figure


def _cv_row(axes, cells, genes, seed: int, cv: dict, modality: str, feature: str = "gene"):
    """One modality's two scatters: per cell by split, and per gene (or protein)."""
    left, right = axes
    cells = cells[cells[SPLIT_COLUMN].isin(["train", "validation"])]
    cells = cells.iloc[subsample(len(cells), MAX_SCATTER_POINTS, seed)]
    colours = np.where(cells[SPLIT_COLUMN] == "train", "C0", "C1")
    cell_wise, gene_wise = cv.get(CELL_WISE, {}), cv.get(GENE_WISE, {})
    cell_title = (
        f"{modality}per cell (Pearson: train {_pearson(cell_wise, 'train')}, "
        f"validation {_pearson(cell_wise, 'validation')})"
    )
    _identity_scatter(left, cells["observed_cv"], cells["model_cv"], colours, cell_title)
    for split, colour in (("train", "C0"), ("validation", "C1")):
        left.scatter([], [], color=colour, label=split)
    left.legend(loc="upper left", frameon=False)
    gene_title = f"{modality}per {feature} (Pearson, all cells: {_pearson(gene_wise, 'all')})"
    _identity_scatter(right, genes["observed_cv"], genes["model_cv"], "C2", gene_title)
    right.legend(loc="upper left", frameon=False)


def de_benchmark(table: pd.DataFrame, n_genes: int | None = None) -> Figure:
    """The DE benchmark per group: one panel per metric, one bar per group (largest first),
    each group with its cells and true (observed up-regulated) genes; chance levels dotted:
    ROC-AUC 0.5, PR-AUC the fraction of the ``n_genes`` tested genes that are true."""
    metrics = [m for m in DE_METRICS if m in table]
    height = 1.3 + 0.35 * len(table)
    figure = Figure(figsize=(3.2 * len(metrics), height), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(metrics), sharey=True))
    true_genes = table["n_true_up"] if "n_true_up" in table else [None] * len(table)
    labels = [
        f"{g} ({n} cells" + ("" if t is None or pd.isna(t) else f", {int(t)} true genes") + ")"
        for g, n, t in zip(table["group"], table["n_cells"], true_genes, strict=True)
    ]
    positions = np.arange(len(table))
    for ax, metric in zip(axes, metrics, strict=True):
        values = table[metric].to_numpy(dtype=float)
        ax.barh(positions, np.nan_to_num(values), color="C0")
        for y, v in zip(positions, values, strict=True):
            if np.isnan(v):
                ax.text(0.02, y, "n/a", va="center", fontsize="small", color="grey")
        ax.set(title=metric, xlim=(min(0.0, np.nanmin(values, initial=0.0)), 1.0))
        ax.axvline(0, color="black", linewidth=0.5)
        chance = _chance_levels(table, metric, n_genes)
        if chance is not None:
            ax.vlines(chance, positions - 0.45, positions + 0.45, color="C3", linestyle="--")
    axes[0].set_yticks(positions, labels)
    axes[0].invert_yaxis()
    axes[0].set_ylabel("group")
    if any(_chance_levels(table, m, n_genes) is not None for m in metrics):
        figure.legend(
            handles=[Line2D([], [], color="C3", linestyle="--")],
            labels=["chance: ROC-AUC 0.5, PR-AUC the group's true genes / genes tested"],
            loc="outside lower center",
            fontsize="small",
            frameon=False,
        )
    return figure


def _chance_levels(table: pd.DataFrame, metric: str, n_genes: int | None) -> np.ndarray | None:
    """Per group, what a model that ranks genes at random scores on ``metric`` (None: not
    drawn). ROC-AUC: 0.5; PR-AUC (average precision): the fraction of genes that are true."""
    if metric == "roc_auc":
        return np.full(len(table), 0.5)
    if metric == "pr_auc" and n_genes and "n_true_up" in table:
        return table["n_true_up"].to_numpy(dtype=float) / n_genes
    return None


def model_figures(
    history: pd.DataFrame,
    obs: pd.DataFrame,
    latent: np.ndarray | None,
    cv_cells: pd.DataFrame | None,
    cv_genes: pd.DataFrame | None,
    de_table: pd.DataFrame | None,
    cv: dict | None,
    *,
    batch_key: str | None,
    labels_key: str | None,
    seed: int,
    absent_reason: str = "",
    unlabeled_category: str | None = None,
    proteins: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> dict[str, Figure]:
    """Every per-model figure of the report: training, latent UMAP, PPC scatter, DE benchmark.

    The UMAP is coloured by what the model was set up with (batch, labels; the unlabelled
    cells grey, beneath) and by its split.
    A class without a latent space (`latent` None) or whose counts cannot be sampled (the
    tables None) gets a figure saying so, with `absent_reason`.
    """
    figures = {"training": training_curves(history)}
    if latent is None:
        figures["latent"] = not_shown("Latent UMAP", absent_reason)
    else:
        cells = subsample(len(obs), MAX_UMAP_CELLS, seed)
        colour_by = {f"batch ({batch_key})": batch_key} if batch_key else {}
        if labels_key:
            colour_by[f"label ({labels_key})"] = labels_key
        colour_by["split"] = SPLIT_COLUMN
        beneath = {labels_key: unlabeled_category} if labels_key and unlabeled_category else {}
        coordinates = umap_coordinates(latent[cells], seed)
        umap = latent_umap(coordinates, obs.iloc[cells], colour_by, beneath)
        shown = "all" if len(cells) == len(obs) else f"a random {len(cells):,} (seed {seed}) of"
        umap.suptitle(f"Latent means, UMAP of {shown} {len(obs):,} cells")
        figures["latent"] = umap
    if cv_cells is None or cv_genes is None or de_table is None:
        figures["ppc"] = not_shown("Posterior predictive check", absent_reason)
        figures["de"] = not_shown("DE benchmark", absent_reason)
    else:
        figures["ppc"] = cv_scatter(cv_cells, cv_genes, seed, cv, proteins)
        figures["de"] = de_benchmark(de_table, n_genes=len(cv_genes))
    return figures


def not_shown(title: str, reason: str) -> Figure:
    """A figure that says why there is nothing to plot for this model."""
    figure = Figure(figsize=(6, 1.6), layout="constrained")
    ax = figure.subplots()
    ax.axis("off")
    ax.set_title(f"{title}: not applicable", fontsize="medium")
    ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True, fontsize="small")
    return figure


def integration_scores(table: pd.DataFrame, summary: dict) -> Figure:
    """scib-metrics scores, model against the PCA baseline: one pair of bars per metric, the
    aggregates first, then bio conservation, then batch correction."""
    if not summary.get(RAN, True):
        return not_computed("Integration", summary[SKIPPED_REASON])
    order = {"Aggregate score": 0, "Bio conservation": 1, "Batch correction": 2}
    aggregates = {
        "total_without_pcr": (0, "Total without PCR comparison"),
        "total": (1, "Total"),
        "bio_conservation": (2, "Bio conservation"),
        "batch_correction_without_pcr": (3, "Batch correction without PCR comparison"),
        "batch_correction": (4, "Batch correction"),
    }
    table = table.assign(
        _order=table["type"].map(order),
        _within=[aggregates.get(m, (9,))[0] for m in table["metric"]],
    ).sort_values(["_order", "_within"], kind="stable")
    positions = np.arange(len(table))
    figure = Figure(figsize=(7.5, 1.2 + 0.42 * len(table)), layout="constrained")
    ax = figure.subplots()
    for offset, column, label, colour in (
        (-0.2, "model", "model (latent means)", "C0"),
        (0.2, "pca", "PCA of log-normalised counts", "C7"),
    ):
        values = table[column].to_numpy(dtype=float)
        ax.barh(positions + offset, np.nan_to_num(values), height=0.4, color=colour, label=label)
        for y, v in zip(positions + offset, values, strict=True):
            ax.text(max(v, 0) + 0.01, y, f"{v:.2f}", va="center", fontsize="x-small")
    names = [
        f"{aggregates[m][1]} (aggregate)" if m in aggregates else f"{m} ({t.split()[0].lower()})"
        for m, t in zip(table["metric"], table["type"], strict=True)
    ]
    # relative to the PCA baseline: the baseline's 0 there is its definition, not a score
    names = [n + "\nPCA: 0 by definition" if n.startswith("PCR comparison") else n for n in names]
    ax.set_yticks(positions, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.12), xlabel="score (higher is better)")
    n_aggregates = int((table["type"] == "Aggregate score").sum())
    ax.axhline(n_aggregates - 0.5, color="grey", linewidth=0.8)
    figure.legend(loc="outside lower center", ncol=2, fontsize="small", frameon=False)
    labels = "labels" if summary["label_source"] == "labels" else "Leiden clusters"
    ax.set_title(
        f"Integration: {summary['n_cells']:,} cells, {summary['n_batches']} batches "
        f"({summary['batch_key']}), {summary['n_labels']} {labels} ({summary['labels_key']})",
        fontsize="medium",
    )
    return figure


def not_computed(title: str, reason: str) -> Figure:
    """The figure of a check that did not run: its title and why, for the report."""
    import textwrap

    figure = Figure(figsize=(7.5, 2.0), layout="constrained")
    ax = figure.subplots()
    ax.axis("off")
    ax.set_title(title, fontsize="medium")
    text = textwrap.fill(f"Not computed: {reason}.", 90)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize="small", wrap=True)
    return figure
