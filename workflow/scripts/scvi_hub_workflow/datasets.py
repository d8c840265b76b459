"""The dataset step: read the configured cells and genes, validate them, write the clean copy."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import h5ad_io
from .dataset_record import composition, newer_version  # noqa: F401  (the dataset rule)
from .downloads import verify_file
from .joined_columns import join_columns
from .mudata_source import ModalityError, modality, with_global_obs
from .proteins import ProteinError, protein_summary, read_modality_proteins, read_proteins
from .rule_io import atomic_path, sha256_of
from .settings import DatasetSettings, ModelSettings, Setup
from .trainable import too_small

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The data does not fit the config: the message names the model, file and column."""


# ---------------------------------------------------------------------------- validation


def check_counts(matrix: sp.csr_matrix, where: str) -> None:
    """Raw counts: finite, non-negative, integer-valued (models of counts need counts)."""
    values = matrix.data
    if not np.all(np.isfinite(values)):
        raise DatasetError(f"{where}: counts contain NaN or infinite values")
    if values.size and values.min() < 0:
        raise DatasetError(f"{where}: counts contain negative values")
    not_integer = values != np.round(values)
    if np.any(not_integer):
        example = float(values[np.argmax(not_integer)])
        raise DatasetError(
            f"{where}: counts are not integers (e.g. {example:g}); point dataset.counts at the "
            "raw counts (X, raw.X or layers/<name>), not normalised data"
        )


def _check_obs(obs: pd.DataFrame, setup: Setup, where: str, hvg_batch: str | None = None) -> None:
    """The obs columns the model's setup and the HVG step's batches (`hvg_batch`) read."""
    named = [(f"model.setup.{key}", column) for key, column in setup.obs_columns()]
    named += [("hvg.batch_key", hvg_batch)] if hvg_batch else []
    for key, column in named:
        if column not in obs.columns:
            raise DatasetError(
                f"{where}: obs column {column!r} ({key}) not found; "
                f"columns: {', '.join(map(str, obs.columns)) or 'none'}"
            )
        values = obs[column]
        if values.isna().any():
            raise DatasetError(
                f"{where}: obs column {column!r} ({key}) has "
                f"{int(values.isna().sum())} missing values"
            )
        numeric = key.endswith(("size_factor_key", "continuous_covariate_keys"))
        if numeric and not (
            pd.api.types.is_numeric_dtype(values) and np.all(np.isfinite(values.to_numpy(float)))
        ):
            raise DatasetError(f"{where}: obs column {column!r} ({key}) must be finite numbers")
    if setup.size_factor_key and (obs[setup.size_factor_key] <= 0).any():
        raise DatasetError(
            f"{where}: obs column {setup.size_factor_key!r} (model.setup.size_factor_key) "
            "must be positive"
        )


# Names listed in an error message; the count says how many more there are.
MAX_LISTED = 5


def _listed(names, limit: int = MAX_LISTED) -> str:
    names = list(names)
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_cells(obs: pd.DataFrame, settings: ModelSettings, where: str) -> None:
    """Checks of the cells the model trains on (after subsampling), on the obs table alone."""
    check_unique_obs_names(obs.index, where)
    spec = settings.model
    if spec.kind.has_unlabelled_cells:
        check_partly_labelled(
            obs[spec.setup.labels_key],
            model_class=spec.model_class,
            column=spec.setup.labels_key,
            unlabeled_category=spec.setup.unlabeled_category,
            every_cell_labelled=spec.every_cell_labelled,
            where=where,
        )
    if spec.kind.every_cell_labelled:
        check_fully_labelled(
            obs[spec.setup.labels_key],
            model_class=spec.model_class,
            column=spec.setup.labels_key,
            where=where,
        )


def check_trainable(obs: pd.DataFrame, n_genes: int, settings: ModelSettings, where: str) -> None:
    """Refuse data too small to train (trainable.py), before HVG and training fail on it."""
    spec = settings.model
    n_annotated = None
    if spec.kind.has_unlabelled_cells:
        labels = obs[spec.setup.labels_key].astype(str)
        n_annotated = int((labels != spec.setup.unlabeled_category).sum())
    problems = too_small(len(obs), n_genes, n_annotated, settings)
    if problems:
        raise DatasetError(f"{where}: too small to train: " + "; and ".join(problems))


def cells_per_batch(obs: pd.DataFrame, batch_key: str | None) -> dict[str, int] | None:
    """Cells of each batch (dataset.json's `batches`): what the checks can measure depends on
    it (checks.py). None without a batch key."""
    if not batch_key:
        return None
    counts = obs[batch_key].astype(str).value_counts()
    return {str(batch): int(n) for batch, n in counts.items()}


def check_unique_obs_names(names: pd.Index, where: str) -> None:
    """Cells are matched by obs name when a published model is verified (and by users)."""
    duplicated = names[names.duplicated(keep=False)]
    if len(duplicated):
        unique = pd.unique(duplicated)
        raise DatasetError(
            f"{where}: {len(duplicated)} cells share {len(unique)} obs names "
            f"({_listed(unique)}); cell names (obs_names) must be unique: make them unique "
            "in the file, e.g. with AnnData.obs_names_make_unique()"
        )


def check_partly_labelled(
    labels: pd.Series,
    *,
    model_class: str,
    column: str,
    unlabeled_category: str,
    every_cell_labelled: bool,
    where: str,
) -> None:
    """A semi-supervised model's labels: the unlabelled category is present (or the user says
    every cell is labelled), and at least two annotated cell types remain for the classifier."""
    counts = labels.astype(str).value_counts()
    present = f"categories present: {_listed(counts.index, 20)}"
    if unlabeled_category not in counts.index and not every_cell_labelled:
        raise DatasetError(
            f"{where}: model.setup.unlabeled_category {unlabeled_category!r} is not a category of "
            f"obs column {column!r} (model.setup.labels_key); {present}. Fix its spelling, or "
            "set model.every_cell_labelled: true if no cell is unannotated"
        )
    known = counts.drop(unlabeled_category, errors="ignore")
    if known.empty:
        raise DatasetError(
            f"{where}: every cell is labelled {unlabeled_category!r} "
            f"(model.setup.unlabeled_category); {model_class} needs some annotated cells"
        )
    if len(known) < 2:
        raise DatasetError(
            f"{where}: obs column {column!r} (model.setup.labels_key) has one annotated cell "
            f"type ({_listed(known.index)}); {model_class}'s classifier needs at least two. "
            "Use SCVI "
            "for data of a single cell type"
        )


def check_fully_labelled(labels: pd.Series, *, model_class: str, column: str, where: str) -> None:
    """A supervised model's labels: every cell has one, of at least two cell types."""
    missing = int(labels.isna().sum())
    if missing:
        raise DatasetError(
            f"{where}: {missing} cells have no label in obs column {column!r} "
            f"(model.setup.labels_key); {model_class} needs every cell labelled: keep the "
            "labelled cells with dataset.subset"
        )
    types = labels.astype(str).value_counts()
    if len(types) < 2:
        raise DatasetError(
            f"{where}: obs column {column!r} (model.setup.labels_key) has one cell type "
            f"({_listed(types.index)}); {model_class} deconvolves into cell types and needs at "
            "least two"
        )


def _counts_element(f: h5py.Group, location: str, where: str):
    """The counts element named by `dataset.counts`, and the var table that goes with it."""
    if location == "X":
        path, var_path = "X", "var"
    elif location == "raw.X":
        if "raw" not in f:
            raise DatasetError(f"{where}: dataset.counts is 'raw.X' but the file has no raw")
        path, var_path = "raw/X", "raw/var"
    else:
        layer = location.removeprefix("layers/")
        if layer not in f.get("layers", {}):
            found = ", ".join(f["layers"]) if "layers" in f else ""
            raise DatasetError(
                f"{where}: layer {layer!r} (dataset.counts) not found; layers: {found or 'none'}"
            )
        path, var_path = f"layers/{layer}", "var"
    if path not in f:
        raise DatasetError(f"{where}: {location} is empty")
    var = h5ad_io.read_frame(f[var_path])
    if var_path == "raw/var":
        # CELLxGENE keeps gene symbols (`feature_name`) in var; carry them to raw's genes.
        main = h5ad_io.read_frame(f["var"])
        for column in main.columns.difference(var.columns):
            var[column] = main[column].reindex(var.index).to_numpy()
    return f[path], var


def select_cells(obs: pd.DataFrame, dataset: DatasetSettings, seed: int, where: str) -> np.ndarray:
    """File row numbers of the cells kept: `dataset.subset`, then `dataset.subsample_cells`."""
    keep = np.ones(len(obs), dtype=bool)
    for column, wanted in (dataset.subset or {}).items():
        key = f"dataset.subset.{column}"
        if column not in obs.columns:
            raise DatasetError(
                f"{where}: obs column {column!r} ({key}) not found; "
                f"columns: {', '.join(map(str, obs.columns)) or 'none'}"
            )
        values = list(wanted) if isinstance(wanted, list | tuple) else [wanted]
        present = pd.unique(obs[column].dropna())
        missing = [v for v in values if not (obs[column] == v).any()]
        if missing:
            shown = ", ".join(map(repr, sorted(map(str, present))[:30]))
            raise DatasetError(
                f"{where}: no cell has {column} = {', '.join(map(repr, missing))} ({key}); "
                f"values: {shown}{' ...' if len(present) > 30 else ''}"
            )
        keep &= obs[column].isin(values).to_numpy()
    if not keep.any():
        raise DatasetError(f"{where}: no cell matches every column of dataset.subset together")
    rows = np.flatnonzero(keep)
    n_sample = dataset.subsample_cells
    if n_sample and n_sample < rows.size:
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=n_sample, replace=False))
    return rows


def _gene_table(var: pd.DataFrame, gene_names: str | None, where: str) -> pd.DataFrame:
    """The genes as the model will know them: the file's var_names, or a var column's values."""
    table = pd.DataFrame(index=var.index.astype(str))
    for column in var.columns:
        table[column] = var[column].to_numpy()
    if gene_names:
        if gene_names not in var.columns:
            raise DatasetError(
                f"{where}: var column {gene_names!r} (dataset.gene_names) not found; "
                f"columns: {', '.join(map(str, var.columns)) or 'none'}"
            )
        if "gene_ids" not in table.columns:
            table["gene_ids"] = table.index.to_numpy()
        table.index = pd.Index(var[gene_names].astype(str).to_numpy())
    table.index = ad.utils.make_index_unique(pd.Index(table.index.astype(str)))
    table.index.name = None
    return table


def prepare_dataset(
    source_path: str | Path,
    settings: ModelSettings,
    out_path: str | Path,
    record: dict | None = None,
) -> dict:
    """Read a dataset, validate it against the model's settings, write the canonical copy.

    The canonical copy has the kept cells (`dataset.subset`, `dataset.subsample_cells`), their
    counts as a CSR matrix in X (and also in `layers[layer]` when `model.setup.layer` is set),
    unique gene names, and no other layers or raw. Memory stays bounded at atlas size: obs and
    var are read first, then only the kept rows of the counts element, block by block, each
    block checked and written before the next is read. `record` is what a download resolved
    (CELLxGENE: version id, URL, size, sha256). Returns a summary for the card and logs.
    """
    where = f"model {settings.name!r}, file {source_path}"
    dataset, setup = settings.dataset, settings.model.setup
    mudata = dataset.mudata
    # Downloads were verified as they arrived; a local file is verified here.
    local = dataset.location.kind == "path"
    # The input's checksum for provenance.json: a CELLxGENE record carries it already.
    actual = (record or {}).get("sha256") or sha256_of(source_path)
    if local and dataset.sha256 and actual != dataset.sha256.lower():
        raise DatasetError(f"{where}: SHA-256 {actual} differs from dataset.sha256")
    verified = {"sha256": actual} if local and dataset.sha256 else {}
    if local and dataset.checksum:
        try:
            verify_file(source_path, dataset.checksum, "dataset.checksum")
        except ValueError as error:
            raise DatasetError(f"{where}: {error}") from None
        verified["checksum"] = dataset.checksum.lower()
    try:
        handle = h5py.File(source_path, "r")
    except OSError as error:
        raise DatasetError(f"{where}: not a readable .h5ad file ({error})") from error
    with handle as f:
        try:
            # a MuData file: its RNA modality is read as an .h5ad
            root = modality(f, mudata["rna"], "dataset.mudata.rna") if mudata else f
            obs = h5ad_io.read_frame(root["obs"])
            obs = with_global_obs(f, obs) if mudata else obs
            element, var = _counts_element(root, dataset.counts, where)
        except ModalityError as error:
            raise DatasetError(f"{where}: {error}") from None
        except DatasetError:
            raise
        except Exception as error:  # anndata raises many types for a bad file
            raise DatasetError(f"{where}: not a readable .h5ad file ({error})") from error
        n_file_cells, n_genes = h5ad_io.element_shape(element)
        if n_file_cells == 0 or n_genes == 0:
            raise DatasetError(f"{where}: the data has {n_file_cells} cells x {n_genes} genes")
        try:  # from obs alone, before the subset (which may name them)
            obs = join_columns(obs, dataset.join_columns)
        except ValueError as error:
            raise DatasetError(f"{where}: {error}") from None
        rows = select_cells(obs, dataset, settings.train.seed, where)
        obs = obs.iloc[rows].copy()
        hvg = settings.hvg
        _check_obs(obs, setup, where, hvg.batch_key if hvg.batch_aware else None)
        for key in setup.categorical_columns():
            obs[key] = obs[key].astype(str).astype("category")
        check_cells(obs, settings, where)
        check_trainable(obs, n_genes, settings, where)
        genes = _gene_table(var, dataset.gene_names, where)
        try:  # CITE-seq: the kept cells' protein counts, before any counts are written
            if mudata and mudata.get("protein"):
                obsm, protein_uns = read_modality_proteins(
                    f, mudata["protein"], rows, obs.index, setup, where
                )
            else:
                obsm, protein_uns = read_proteins(root, rows, obs.index, setup, where)
        except ProteinError as error:
            raise DatasetError(str(error)) from None
        skeleton = ad.AnnData(obs=obs, var=genes, obsm=obsm, uns=protein_uns)
        for key in ("simulation", "source"):
            if key in root.get("uns", {}):
                skeleton.uns[key] = ad.io.read_elem(root["uns"][key])
        if "varm" in root and "true_log2fc" in root["varm"]:
            skeleton.varm["true_log2fc"] = ad.io.read_elem(root["varm"]["true_log2fc"])
        nnz = 0
        with atomic_path(out_path) as tmp:
            skeleton.write_h5ad(tmp)
            del skeleton
            with h5py.File(tmp, "a") as out:
                keys = ["X"] + ([f"layers/{setup.layer}"] if setup.layer else [])
                bound = h5ad_io.stored_entries(element)
                writers = [h5ad_io.CsrWriter(out, k, rows.size, n_genes, bound) for k in keys]
                for _, block in h5ad_io.iter_rows(element, rows):
                    check_counts(block, f"{where}, counts in {dataset.counts}")
                    for writer in writers:
                        writer.append(block)
                    nnz += block.nnz
                for writer in writers:
                    writer.close()
    summary = {
        "source": str(source_path),
        "sha256": actual,
        **composition(obs, setup),
        "n_cells": int(rows.size),
        "n_genes": int(n_genes),
        "counts_from": dataset.counts,
        "nnz": int(nnz),
        "n_cells_in_file": int(n_file_cells),
        "subset": dataset.subset,
        "gene_names": dataset.gene_names or "var_names",
        "batch_key": setup.batch_key,
        "batches": cells_per_batch(obs, setup.batch_key),
    }
    if mudata:
        summary["mudata"] = mudata
    if (proteins := protein_summary(obsm, protein_uns, setup)) is not None:
        summary["proteins"] = proteins
    source_url = dataset.source
    if record:
        summary["resolved"] = record
        source_url = record.get("url", "")
    summary["source_url"] = source_url if source_url.startswith(("http://", "https://")) else None
    if verified:
        # what the local file was checked against, so the record says which file it was
        summary["verified"] = verified
    return summary
