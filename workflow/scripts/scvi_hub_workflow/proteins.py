"""CITE-seq protein counts: the obsm entry a TOTALVI model reads, carried through the dataset step.

The proteins travel with the cells they were measured in: only the kept rows of the obsm entry
are read (an atlas's entry is never loaded whole), checked as counts, and written beside the
RNA; the HVG step keeps every protein. Their names come from a DataFrame's columns or from the
uns entry `setup.protein_names_uns_key`, as scvi-tools' `TOTALVI.setup_anndata` reads them.
"""

from __future__ import annotations

import anndata as ad
import h5py
import numpy as np
import pandas as pd

from . import h5ad_io
from .mudata_source import ModalityError, modality, modality_rows
from .settings import Setup

OBSM_KEY = "model.setup.protein_expression_obsm_key"
UNS_KEY = "model.setup.protein_names_uns_key"
MODALITY_KEY = "dataset.mudata.protein"


class ProteinError(ValueError):
    """The protein counts do not fit the config: the message names the key and the file."""


def _listed(names) -> str:
    names = sorted(map(str, names))
    return ", ".join(repr(n) for n in names) or "none"


def read_proteins(
    f: h5py.File, rows: np.ndarray, obs_names: pd.Index, setup: Setup, where: str
) -> tuple[dict, dict]:
    """(obsm entries, uns entries) to write with the kept cells: the protein counts of `rows`
    and, with `protein_names_uns_key`, their names. Nothing without a protein key."""
    key = setup.protein_expression_obsm_key
    if key is None:
        return {}, {}
    present = list(f["obsm"]) if "obsm" in f else []
    if key not in present:
        raise ProteinError(
            f"{where}: obsm entry {key!r} ({OBSM_KEY}) not found; obsm entries: {_listed(present)}"
        )
    try:
        counts = h5ad_io.read_obsm_rows(f["obsm"][key], rows, obs_names)
    except ValueError as error:
        raise ProteinError(f"{where}: obsm entry {key!r} ({OBSM_KEY}): {error}") from None
    uns = {}
    names_key = setup.protein_names_uns_key
    if names_key is not None:
        found = list(f["uns"]) if "uns" in f else []
        if names_key not in found:
            raise ProteinError(
                f"{where}: uns entry {names_key!r} ({UNS_KEY}) not found; uns entries: "
                f"{_listed(found)}"
            )
        uns[names_key] = np.asarray(ad.io.read_elem(f["uns"][names_key])).astype(str)
    check_protein_counts(counts, uns.get(names_key), key, where)
    return {key: counts}, uns


def read_modality_proteins(
    f: h5py.File, name: str, rows: np.ndarray, obs_names: pd.Index, setup: Setup, where: str
) -> tuple[dict, dict]:
    """The obsm entry of the kept cells' proteins from a MuData file's modality `name`
    (`dataset.mudata.protein`), named by the modality's var names."""
    key = setup.protein_expression_obsm_key
    try:
        counts = modality_rows(modality(f, name, MODALITY_KEY), rows, obs_names, MODALITY_KEY)
    except ModalityError as error:
        raise ProteinError(f"{where}: {error}") from None
    check_protein_counts(counts, None, key, where)
    return {key: counts}, {}


def check_protein_counts(counts, names: np.ndarray | None, key: str, where: str) -> None:
    """Antibody counts: a cells x proteins table of finite, non-negative integers, at least one
    protein, and as many names as proteins when the names come from uns."""
    values = counts.to_numpy() if isinstance(counts, pd.DataFrame) else np.asarray(counts)
    what = f"{where}: obsm entry {key!r} ({OBSM_KEY})"
    if values.ndim != 2 or values.shape[1] == 0:
        raise ProteinError(f"{what} holds no proteins (shape {values.shape})")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ProteinError(f"{what} contains NaN or infinite values")
    if values.size and values.min() < 0:
        raise ProteinError(f"{what} contains negative values")
    not_integer = values != np.round(values)
    if np.any(not_integer):
        raise ProteinError(
            f"{what} is not counts (e.g. {values[not_integer][0]:g}); TOTALVI models the raw "
            "antibody counts, not normalised values"
        )
    if names is not None and len(names) != values.shape[1]:
        raise ProteinError(
            f"{what} has {values.shape[1]} proteins but the uns entry ({UNS_KEY}) names "
            f"{len(names)}"
        )


def protein_summary(obsm: dict, uns: dict, setup: Setup) -> dict | None:
    """dataset.json's record of the proteins (None without them)."""
    key = setup.protein_expression_obsm_key
    if key is None:
        return None
    counts = obsm[key]
    names = (
        list(counts.columns)
        if isinstance(counts, pd.DataFrame)
        else list(uns.get(setup.protein_names_uns_key, []))
    )
    return {"obsm_key": key, "n_proteins": int(counts.shape[1]), "names": [str(n) for n in names]}
