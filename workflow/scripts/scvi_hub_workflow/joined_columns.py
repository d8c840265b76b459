"""`dataset.join_columns`: obs columns made by joining others' values with "_".

The Tabula Sapiens notebook ranks genes and corrects batches per `donor_assay`, the donor and
the assay of each cell together ("TSP14" and "10x 3' v3" make "TSP14_10x 3' v3"). The dataset
step makes such columns from obs alone, before `dataset.subset`, so the rest of the workflow
reads them as if the file had them.
"""

from __future__ import annotations

import pandas as pd

SEPARATOR = "_"


def joined(obs: pd.DataFrame, columns: list[str] | tuple[str, ...]) -> pd.Series:
    """The values of `columns` joined with "_", cell by cell, as a categorical column."""
    parts = [obs[column].astype(str) for column in columns]
    values = parts[0].str.cat(parts[1:], sep=SEPARATOR)
    return values.astype("category")


def same_groups(a: pd.Series, b: pd.Series) -> bool:
    """Whether two columns put the cells into the same groups (whatever the groups' names)."""
    a, b = a.astype(str).to_numpy(), b.astype(str).to_numpy()
    pairs = pd.MultiIndex.from_arrays([a, b]).nunique()
    return pairs == pd.unique(a).size == pd.unique(b).size


def join_columns(obs: pd.DataFrame, joins: dict | None) -> pd.DataFrame:
    """obs with each column of `dataset.join_columns` (new name -> the file's columns joined).

    Raises ValueError naming the config key and the column when a joined column is missing,
    has cells without a value, or a file column of the new name groups the cells differently.
    """
    if not joins:
        return obs
    obs = obs.copy()
    for name, columns in joins.items():
        key = f"dataset.join_columns.{name}"
        missing = [c for c in columns if c not in obs.columns]
        if missing:
            raise ValueError(
                f"obs column {', '.join(map(repr, missing))} ({key}) not found; "
                f"columns: {', '.join(map(str, obs.columns)) or 'none'}"
            )
        for column in columns:
            n_missing = int(obs[column].isna().sum())
            if n_missing:
                raise ValueError(
                    f"obs column {column!r} ({key}) has {n_missing} cells without a value"
                )
        values = joined(obs, columns)
        if name in obs.columns and not same_groups(obs[name], values):
            raise ValueError(
                f"obs column {name!r} ({key}) is already in the file and groups the cells "
                f"differently from {' + '.join(columns)}; name the joined column otherwise"
            )
        obs[name] = values
    return obs
