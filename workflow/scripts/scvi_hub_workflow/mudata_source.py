"""A MuData source (`dataset.mudata`): one modality read as the `.h5ad` it is stored as.

A `.h5mu` file keeps each modality under `mod/<name>` in the layout of an `.h5ad` (obs, var,
X, layers), and a global obs at its root. The dataset step reads the RNA modality as it reads
an `.h5ad` and a CITE-seq modality's X as the proteins of the same cells, with h5py alone:
no MuData object, so only the kept rows are ever read.
"""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from . import h5ad_io


class ModalityError(ValueError):
    """A modality that the config names and the file lacks, or that does not fit the RNA's."""


def modality(f: h5py.File, name: str, key: str) -> h5py.Group:
    """The group of modality `name` (config key `key`), or an error listing the modalities."""
    found = list(f["mod"]) if "mod" in f else []
    if name not in found:
        listed = ", ".join(repr(m) for m in sorted(found)) or "none (not a MuData file)"
        raise ModalityError(f"modality {name!r} ({key}) not found; modalities: {listed}")
    return f["mod"][name]


def with_global_obs(f: h5py.File, obs: pd.DataFrame) -> pd.DataFrame:
    """The modality's obs with the columns of the file's global obs that it lacks (muon keeps
    shared annotations there), matched by cell name; `<modality>:` copies are left out."""
    if "obs" not in f:
        return obs
    shared = h5ad_io.read_frame(f["obs"])
    columns = [c for c in shared.columns if ":" not in str(c) and c not in obs.columns]
    if not columns:
        return obs
    missing = obs.index.difference(shared.index)
    if len(missing):
        raise ModalityError(f"the global obs lacks {len(missing)} of the modality's cells")
    return obs.join(shared[columns])


def modality_rows(group: h5py.Group, rows: np.ndarray, obs_names: pd.Index, key: str):
    """The `rows` of a modality's X as a cells x features table (columns: its var names), after
    checking that it holds the RNA's cells (`obs_names`, the kept rows) in the same order."""
    names = h5ad_io.read_frame(group["obs"]).index
    if len(names) <= (rows[-1] if len(rows) else -1) or not names[rows].equals(obs_names):
        raise ModalityError(
            f"the modality ({key}) does not hold the RNA modality's cells in the same order"
        )
    values = h5ad_io.read_obsm_rows(group["X"], rows, obs_names)
    features = [str(n) for n in h5ad_io.read_frame(group["var"]).index]
    return pd.DataFrame(np.asarray(values), index=obs_names, columns=features)
