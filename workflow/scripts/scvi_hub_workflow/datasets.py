"""Datasets: built-in data, checksummed downloads, and validation of what was read."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .config import DatasetStep, Setup
from .layout import ATTEMPTS, BUILTIN_DATASETS, FIRST_WAIT_S, retried
from .rule_io import atomic_path, sha256_of

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The data does not fit the config: the message names the model, file and column."""


# ---------------------------------------------------------------------------- built-in data


def synthetic_iid(seed: int = 0) -> ad.AnnData:
    """scvi-tools' synthetic IID counts, shaped as the SCVI reference card (400 x 100 genes)."""
    import scvi

    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=200, n_genes=100, n_batches=2, n_labels=3)
    # Keep RNA only: the protein and accessibility parts are not used by SCVI/SCANVI.
    for key in list(adata.obsm):
        del adata.obsm[key]
    adata.X = sp.csr_matrix(adata.X.astype(np.float32))
    adata.uns = {"source": "scvi.data.synthetic_iid(batch_size=200, n_genes=100)"}
    return adata


def simulated_atlas(
    n_cells: int = 1500,
    n_genes: int = 800,
    n_cell_types: int = 6,
    n_batches: int = 3,
    n_markers: int = 20,
    unlabeled_fraction: float = 0.1,
    seed: int = 0,
) -> ad.AnnData:
    """A labelled negative-binomial simulation with batch effects and planted DE genes.

    Each cell type up-regulates `n_markers` genes (log2 fold change 1.5-3) and down-regulates
    half as many; each batch scales every gene by a log-normal factor (sd 0.3); library sizes
    are log-normal. The truth is kept with the data: `obs["true_cell_type"]`,
    `var["de_up_<type>"]`, `var["de_down_<type>"]` and `varm["true_log2fc"]`. A fraction of
    cells get the label `unknown`, as in a partly annotated atlas.
    """
    rng = np.random.default_rng(seed)
    types = [f"type_{i}" for i in range(n_cell_types)]
    batches = [f"batch_{i}" for i in range(n_batches)]
    base = rng.lognormal(mean=-1.0, sigma=1.2, size=n_genes)
    log2fc = np.zeros((n_cell_types, n_genes))
    up = np.zeros((n_cell_types, n_genes), dtype=bool)
    down = np.zeros((n_cell_types, n_genes), dtype=bool)
    for t in range(n_cell_types):
        chosen = rng.choice(n_genes, size=n_markers + n_markers // 2, replace=False)
        up[t, chosen[:n_markers]] = True
        down[t, chosen[n_markers:]] = True
        log2fc[t, chosen[:n_markers]] = rng.uniform(1.5, 3.0, n_markers)
        log2fc[t, chosen[n_markers:]] = -rng.uniform(1.5, 3.0, n_markers // 2)
    batch_effect = rng.lognormal(0.0, 0.3, size=(n_batches, n_genes))

    cell_type = rng.choice(n_cell_types, size=n_cells, p=_uneven_proportions(n_cell_types, rng))
    batch = rng.integers(n_batches, size=n_cells)
    library = rng.lognormal(mean=np.log(1500), sigma=0.35, size=n_cells)
    mean = base[None, :] * 2.0 ** log2fc[cell_type] * batch_effect[batch]
    mean = mean / mean.sum(axis=1, keepdims=True) * library[:, None]
    theta = 5.0  # NB inverse dispersion, typical of UMI data
    counts = rng.poisson(rng.gamma(shape=theta, scale=mean / theta)).astype(np.float32)

    labels = np.array(types, dtype=object)[cell_type]
    masked = rng.random(n_cells) < unlabeled_fraction
    labels = np.where(masked, "unknown", labels)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(labels),
            "true_cell_type": pd.Categorical(np.array(types)[cell_type], categories=types),
            "batch": pd.Categorical(np.array(batches)[batch], categories=batches),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{i}" for i in range(n_genes)])
    for t, name in enumerate(types):
        var[f"de_up_{name}"] = up[t]
        var[f"de_down_{name}"] = down[t]
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.varm["true_log2fc"] = log2fc.T
    adata.uns["simulation"] = {
        "cell_types": types,
        "batches": batches,
        "n_markers": n_markers,
        "nb_theta": theta,
        "seed": seed,
    }
    return adata


def _uneven_proportions(n: int, rng: np.random.Generator) -> np.ndarray:
    # Real tissues have common and rare types; DE on a rare type is the hard case.
    weights = rng.uniform(0.3, 1.0, n) * np.linspace(2.0, 0.5, n)
    return weights / weights.sum()


BUILTINS = dict(zip(BUILTIN_DATASETS, (synthetic_iid, simulated_atlas), strict=True))


def write_builtin(name: str, path: str | Path) -> None:
    if name not in BUILTINS:
        raise DatasetError(
            f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}"
        )
    adata = BUILTINS[name]()
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


# ---------------------------------------------------------------------------- downloads


def download(
    url: str,
    path: str | Path,
    sha256: str,
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = FIRST_WAIT_S,
    timeout_s: float = 60.0,
) -> None:
    """Download `url` to `path`: retried with backoff, checksum-verified, renamed into place.

    A failed or corrupted transfer never leaves a file at `path`. A checksum mismatch is not
    retried: the same server would send the same bytes again.
    """
    expected = sha256.lower()

    def fetch(_attempt: int) -> None:
        with atomic_path(path) as tmp:
            digest = hashlib.sha256()
            with (
                urllib.request.urlopen(url, timeout=timeout_s) as response,
                open(tmp, "wb") as out,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            actual = digest.hexdigest()
            if actual != expected:
                raise DatasetError(
                    f"{url}: SHA-256 {actual} does not match the configured sha256 {expected}"
                )

    try:
        retried(fetch, _is_transient, what=f"download of {url}", attempts=attempts,
                wait_s=backoff_s, log=log)  # fmt: skip
    except DatasetError:
        raise
    except urllib.error.HTTPError as error:
        if not _is_transient(error):
            raise DatasetError(f"{url}: HTTP {error.code} {error.reason}") from error
        raise DatasetError(f"{url}: download failed after {attempts} attempts: {error}") from error
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DatasetError(f"{url}: download failed after {attempts} attempts: {error}") from error


def _is_transient(error: BaseException) -> bool:
    """A connection problem or a 5xx/429 answer; a wrong checksum or another 4xx is final."""
    if isinstance(error, DatasetError):
        return False
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    return isinstance(error, urllib.error.URLError | OSError | TimeoutError)


# ---------------------------------------------------------------------------- validation


def _counts_from(
    adata: ad.AnnData, location: str, where: str
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """The counts matrix named by `dataset.counts`, and the var table that goes with it."""
    if location == "X":
        matrix, var = adata.X, adata.var
    elif location == "raw.X":
        if adata.raw is None:
            raise DatasetError(f"{where}: dataset.counts is 'raw.X' but the file has no raw")
        matrix, var = adata.raw.X, adata.raw.var
    else:
        layer = location.removeprefix("layers/")
        if layer not in adata.layers:
            raise DatasetError(
                f"{where}: layer {layer!r} (dataset.counts) not found; "
                f"layers: {', '.join(adata.layers) or 'none'}"
            )
        matrix, var = adata.layers[layer], adata.var
    if matrix is None:
        raise DatasetError(f"{where}: {location} is empty")
    return sp.csr_matrix(matrix, dtype=np.float32), var


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


def _check_obs(obs: pd.DataFrame, setup: Setup, where: str) -> None:
    for key, column in setup.obs_columns():
        if column not in obs.columns:
            raise DatasetError(
                f"{where}: obs column {column!r} (model.setup.{key}) not found; "
                f"columns: {', '.join(map(str, obs.columns)) or 'none'}"
            )
        values = obs[column]
        if values.isna().any():
            raise DatasetError(
                f"{where}: obs column {column!r} (model.setup.{key}) has "
                f"{int(values.isna().sum())} missing values"
            )
        numeric = key in ("size_factor_key", "continuous_covariate_keys")
        if numeric and not (
            pd.api.types.is_numeric_dtype(values) and np.all(np.isfinite(values.to_numpy(float)))
        ):
            raise DatasetError(
                f"{where}: obs column {column!r} (model.setup.{key}) must be finite numbers"
            )
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


def check_cells(obs: pd.DataFrame, settings: DatasetStep, where: str) -> None:
    """Checks of the cells the model trains on (after subsampling), on the obs table alone."""
    check_unique_obs_names(obs.index, where)
    if settings.model_class == "SCANVI":
        check_scanvi_labels(
            obs[settings.setup.labels_key],
            column=settings.setup.labels_key,
            unlabeled_category=settings.setup.unlabeled_category,
            every_cell_labelled=settings.every_cell_labelled,
            where=where,
        )


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


def check_scanvi_labels(
    labels: pd.Series,
    *,
    column: str,
    unlabeled_category: str,
    every_cell_labelled: bool,
    where: str,
) -> None:
    """SCANVI's labels: the unlabelled category is present (or the user says every cell is
    labelled), and at least two annotated cell types remain for the classifier."""
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
            "(model.setup.unlabeled_category); SCANVI needs some annotated cells"
        )
    if len(known) < 2:
        raise DatasetError(
            f"{where}: obs column {column!r} (model.setup.labels_key) has one annotated cell "
            f"type ({_listed(known.index)}); SCANVI's classifier needs at least two. Use SCVI "
            "for data of a single cell type"
        )


def prepare_dataset(source_path: str | Path, settings: DatasetStep, out_path: str | Path) -> dict:
    """Read a dataset, validate it against the model's settings, write the canonical copy.

    The canonical copy has the counts as a CSR matrix in X (and also in `layers[layer]` when
    `model.setup.layer` is set), unique gene names, and no other layers or raw. Returns a
    summary for the card and logs.
    """
    where = f"model {settings.name!r}, file {source_path}"
    dataset, setup = settings.dataset, settings.setup
    if dataset.sha256:
        actual = sha256_of(source_path)
        if actual != dataset.sha256.lower():
            raise DatasetError(f"{where}: SHA-256 {actual} differs from dataset.sha256")
    try:
        adata = ad.read_h5ad(source_path)
    except Exception as error:  # anndata raises many types for a bad file
        raise DatasetError(f"{where}: not a readable .h5ad file ({error})") from error
    counts, var = _counts_from(adata, dataset.counts, where)
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise DatasetError(
            f"{where}: the data has {counts.shape[0]} cells x {counts.shape[1]} genes"
        )
    check_counts(counts, f"{where}, counts in {dataset.counts}")
    _check_obs(adata.obs, setup, where)

    clean = ad.AnnData(
        X=counts, obs=adata.obs.copy(), var=pd.DataFrame(index=var.index.astype(str))
    )
    for column in var.columns:
        clean.var[column] = var[column].to_numpy()
    clean.var_names_make_unique()
    if setup.layer:
        clean.layers[setup.layer] = clean.X
    for key in ("simulation", "source"):
        if key in adata.uns:
            clean.uns[key] = adata.uns[key]
    if "true_log2fc" in adata.varm:
        clean.varm["true_log2fc"] = adata.varm["true_log2fc"]
    if dataset.subsample_cells and dataset.subsample_cells < clean.n_obs:
        rng = np.random.default_rng(settings.seed)
        keep = np.sort(rng.choice(clean.n_obs, size=dataset.subsample_cells, replace=False))
        clean = clean[keep].copy()
    for key in setup.categorical_columns():
        clean.obs[key] = clean.obs[key].astype(str).astype("category")
    check_cells(clean.obs, settings, where)
    with atomic_path(out_path) as tmp:
        clean.write_h5ad(tmp)
    return {
        "source": str(source_path),
        "n_cells": int(clean.n_obs),
        "n_genes": int(clean.n_vars),
        "counts_from": dataset.counts,
        "nnz": int(clean.X.nnz),
    }
