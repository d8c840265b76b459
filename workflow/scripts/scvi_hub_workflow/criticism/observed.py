"""The observed side: the saved model and its counts, read cell chunk by cell chunk."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd

from ..layout import SPLIT_COLUMN
from ..model_io import load_model
from .nonzeros import Nonzeros


def load_minified_model(model_dir: str | os.PathLike):
    """Load the saved (minified) model, whatever its class; on the GPU when there is one."""
    return load_model(model_dir)


class ObservedCounts:
    """Cell-chunk reader of a count matrix (``X`` or ``layers[layer]``) in an ``.h5ad`` file.

    Reads only the rows asked for; works for CSR-encoded and dense matrices.
    """

    def __init__(self, path: str | os.PathLike, layer: str | None = None):
        self._file = h5py.File(path, "r")
        self._matrix = self._file["X"] if layer is None else self._file["layers"][layer]
        encoding = self._matrix.attrs.get("encoding-type", "array")
        if isinstance(self._matrix, h5py.Group) and encoding != "csr_matrix":
            raise ValueError(f"counts must be CSR or dense, not {encoding!r}")
        self.is_sparse = isinstance(self._matrix, h5py.Group)
        self.shape = tuple(
            int(n) for n in (self._matrix.attrs["shape"] if self.is_sparse else self._matrix.shape)
        )

    def obs_names(self) -> pd.Index:
        import anndata

        return pd.Index(anndata.io.read_elem(self._file["obs"]).index)

    def nonzeros(self, start: int, stop: int) -> Nonzeros:
        """Rows ``start:stop`` (one minibatch, never the whole matrix) as their non-zeros."""
        if not self.is_sparse:
            return Nonzeros.from_dense(np.asarray(self._matrix[start:stop], dtype=np.float32))
        indptr = self._matrix["indptr"][start : stop + 1]
        lo, hi = int(indptr[0]), int(indptr[-1])
        return Nonzeros.from_csr(
            self._matrix["data"][lo:hi], self._matrix["indices"][lo:hi], indptr - lo
        )

    def nonzeros_per_gene(self, rows_per_read: int = 4096) -> np.ndarray:
        """Non-zeros of each gene (column), read in slices so memory stays flat."""
        n_cells, n_genes = self.shape
        counts = np.zeros(n_genes, dtype=np.int64)
        if self.is_sparse:  # explicit zeros, if any, count too: this is only for planning
            indices = self._matrix["indices"]
            step = rows_per_read * n_genes
            for lo in range(0, indices.shape[0], step):
                counts += np.bincount(indices[lo : lo + step], minlength=n_genes)
            return counts
        for lo in range(0, n_cells, rows_per_read):
            counts += (self._matrix[lo : lo + rows_per_read] != 0).sum(axis=0)
        return counts

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ObservedCounts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ObservedMatrix:
    """In-memory counts with ``ObservedCounts``' reading interface: a TOTALVI model's protein
    counts, registered with its data (cells x proteins, small beside the RNA)."""

    def __init__(self, values):
        self._values = np.asarray(values, dtype=np.float32)
        self.shape = tuple(int(n) for n in self._values.shape)

    def nonzeros(self, start: int, stop: int) -> Nonzeros:
        return Nonzeros.from_dense(self._values[start:stop])

    def nonzeros_per_gene(self) -> np.ndarray:
        return (self._values != 0).sum(axis=0)


def observed_proteins(model) -> ObservedMatrix:
    """The protein counts a TOTALVI model was set up with, in its cells' order."""
    from ..compat import import_scvi

    key = import_scvi().REGISTRY_KEYS.PROTEIN_EXP_KEY
    counts = model.adata_manager.get_from_registry(key)
    return ObservedMatrix(counts.to_numpy() if isinstance(counts, pd.DataFrame) else counts)


def protein_names(model) -> list[str]:
    """The names of a TOTALVI model's proteins, as its setup registered them (scvi-tools
    numbers them when the data name none)."""
    from ..compat import import_scvi

    key = import_scvi().REGISTRY_KEYS.PROTEIN_EXP_KEY
    return [str(n) for n in model.adata_manager.get_state_registry(key).column_names]


def cell_splits(model) -> np.ndarray:
    """The model's own train/validation/test label per cell, as the train rule recorded it."""
    if SPLIT_COLUMN not in model.adata.obs:
        raise KeyError(f"the minified AnnData has no obs[{SPLIT_COLUMN!r}] (the model's split)")
    return model.adata.obs[SPLIT_COLUMN].astype(str).to_numpy()
