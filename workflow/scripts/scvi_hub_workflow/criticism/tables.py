"""The result tables: de.tsv rows (one per group) and the de.json summary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import metrics
from ..layout import DE_COLUMNS
from ..wilcoxon import DEResult
from .grouping import Grouping


def de_summary(grouping: Grouping, table: pd.DataFrame, **settings) -> dict:
    return {
        "test": "wilcoxon",
        "grouping": grouping.grouping,
        "groups_key": grouping.key,
        "alpha": settings["alpha"],
        "top_n": settings["top_n"],
        "n_samples": settings["n_samples"],
        "normalisation": metrics.NORMALISATION,
        "min_cells": grouping.min_cells,
        # No numbers when there is nothing to compare: the reason instead.
        "absent_reason": grouping.absent_reason,
        "groups": table.to_dict(orient="records"),
        "left_out": [
            {"group": group, "n_cells": n}
            for group, n in sorted(grouping.left_out.items(), key=lambda item: -item[1])
        ],
    }


def de_table(
    grouping: Grouping,
    observed: DEResult,
    samples: Sequence[DEResult],
    *,
    alpha: float,
    top_n: int,
) -> pd.DataFrame:
    """One row of DE metrics per group, columns as in ``DE_COLUMNS``."""
    rows = []
    for k, name in enumerate(grouping.names):
        row = metrics.group_de_metrics(
            _group_stats(observed, k, with_pvals=True),
            [_group_stats(s, k) for s in samples],
            alpha=alpha,
            top_n=top_n,
        )
        rows.append(row | {"group": name, "n_cells": int(observed.n_cells[k])})
    table = pd.DataFrame(rows, columns=list(DE_COLUMNS))
    return table.sort_values("n_cells", ascending=False, kind="stable").reset_index(drop=True)


def _group_stats(result: DEResult, k: int, with_pvals: bool = False) -> dict[str, np.ndarray]:
    stats = {"scores": result.scores[k], "logfoldchanges": result.logfoldchanges[k]}
    if with_pvals:
        stats["pvals_adj"] = result.pvals_adj[k]
    return stats
