"""The label-transfer figures: confusion matrix and calibration curve (figures.py's style)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# Fewer cells in a calibration bin: hollow, off the curve (their accuracy is a coin toss).
MIN_CALIBRATION_CELLS = 10


def confusion_matrix(confusion: pd.DataFrame) -> Figure:
    """True (rows) against predicted (columns) labels; colour: fraction of the true label's
    cells, numbers: cells."""
    counts = confusion.to_numpy()
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.5 * max(counts.shape)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(fractions, vmin=0, vmax=1, cmap="Blues")
    for (i, j), n in np.ndenumerate(counts):
        colour = "white" if fractions[i, j] > 0.5 else "black"
        ax.text(j, i, str(n), ha="center", va="center", color=colour, fontsize="small")
    ax.set_xticks(range(counts.shape[1]), confusion.columns, rotation=45, ha="right")
    ax.set_yticks(range(counts.shape[0]), confusion.index)
    ax.set(xlabel="predicted label", ylabel="true label", title="Validation cells")
    figure.colorbar(image, ax=ax, label="fraction of the true label's cells")
    return figure


def calibration_curve(table: pd.DataFrame, ece: float) -> Figure:
    """Observed accuracy against mean predicted probability per bin, each point with its
    cells; bins under ``MIN_CALIBRATION_CELLS`` hollow and off the curve; bar: cells per bin."""
    figure = Figure(figsize=(5, 5), layout="constrained")
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    filled = table[table["n_cells"] > 0]
    enough = filled[filled["n_cells"] >= MIN_CALIBRATION_CELLS]
    few = filled[filled["n_cells"] < MIN_CALIBRATION_CELLS]
    ax.plot(enough["mean_confidence"], enough["accuracy"], "o-", color="C0", label="model")
    if len(few):
        ax.plot(
            few["mean_confidence"],
            few["accuracy"],
            "o",
            markerfacecolor="none",
            color="C0",
            label=f"bins of < {MIN_CALIBRATION_CELLS} cells",
        )
    for x, y, n in zip(
        filled["mean_confidence"], filled["accuracy"], filled["n_cells"], strict=True
    ):
        ax.annotate(
            f"{int(n)}", (x, y), xytext=(4, -10), textcoords="offset points", fontsize="x-small"
        )
    share = ax.twinx()
    share.bar(
        (table["low"] + table["high"]) / 2,
        table["n_cells"],
        width=table["high"] - table["low"],
        color="C0",
        alpha=0.15,
    )
    share.set_ylabel("cells per bin")
    ax.set_zorder(share.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="mean predicted probability",
        ylabel="observed accuracy",
        title=f"Calibration (ECE {ece:.3f}, {int(table['n_cells'].sum())} cells)",
    )
    # below the axes: a legend inside could cover a bin's point
    figure.legend(loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    return figure
