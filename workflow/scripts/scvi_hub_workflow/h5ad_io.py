"""Bounded-memory .h5ad access: read obs/var alone, counts in row chunks, write CSR by chunks.

An atlas file (5 x 10^5 cells x 20k+ genes, counts in `raw.X` next to a normalised `X`) does not
fit in memory, and a step that needs a tissue's cells or per-gene statistics never needs it
whole. Small elements (obs, var, uns entries) are read with `anndata.io.read_elem`; the matrix
is read in blocks of file rows sized to a memory budget, keeping only the rows asked for.
"""

from __future__ import annotations

from collections.abc import Iterator

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

# Bytes of matrix (values + indices) held per block; the step's peak is a few times this.
BLOCK_BYTES = 128 << 20


def element_kind(element: h5py.Group | h5py.Dataset) -> str:
    """`csr_matrix`, `csc_matrix` or `array` (dense), from anndata's encoding attributes."""
    if isinstance(element, h5py.Dataset):
        return "array"
    return str(element.attrs.get("encoding-type", ""))


def element_shape(element: h5py.Group | h5py.Dataset) -> tuple[int, int]:
    if isinstance(element, h5py.Dataset):
        return tuple(int(n) for n in element.shape)
    return tuple(int(n) for n in element.attrs["shape"])


def read_frame(group: h5py.Group) -> pd.DataFrame:
    return ad.io.read_elem(group)


def _rows_per_block(element, budget: int) -> int:
    n_rows, n_cols = element_shape(element)
    if element_kind(element) == "array":
        per_row = n_cols * element.dtype.itemsize
    else:
        nnz = element["data"].shape[0]
        per_row = (nnz / max(n_rows, 1)) * (element["data"].dtype.itemsize + 8)
    return max(1, int(budget // max(per_row, 1)))


def iter_rows(
    element: h5py.Group | h5py.Dataset,
    rows: np.ndarray | None = None,
    *,
    budget: int | None = None,
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """Yield (file row numbers, float32 CSR of those rows) for `rows` (sorted; None: all).

    Blocks of consecutive file rows are read whole when many of their rows are wanted, row run
    by row run when few are (a tissue of a 28-tissue atlas), so neither memory nor the reads
    grow with the rows that are skipped.
    """
    n_rows, n_cols = element_shape(element)
    rows = np.arange(n_rows) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= n_rows):
        raise ValueError("rows must be increasing file row numbers")
    kind = element_kind(element)
    step = _rows_per_block(element, budget or BLOCK_BYTES)
    if kind == "csc_matrix":
        # Rows of a CSC matrix are spread over the whole file; anndata reads them.
        backed = ad.io.sparse_dataset(element)
        for start in range(0, rows.size, step):
            chunk = rows[start : start + step]
            yield chunk, sp.csr_matrix(backed[chunk], dtype=np.float32)
        return
    if kind not in ("csr_matrix", "array"):
        raise ValueError(f"unsupported matrix encoding {kind!r}")
    indptr = element["indptr"] if kind == "csr_matrix" else None
    for start in range(0, rows.size, step):
        chunk = rows[start : start + step]
        first, last = int(chunk[0]), int(chunk[-1]) + 1
        if kind == "array":
            if chunk.size > (last - first) / 4:
                block = element[first:last][chunk - first]
            else:
                block = np.concatenate([element[a:b] for a, b in _runs(chunk)])
            yield chunk, sp.csr_matrix(block, dtype=np.float32)
            continue
        if chunk.size > (last - first) / 4:
            yield chunk, _csr_block(element, indptr, first, last)[chunk - first]
        else:
            parts = [_csr_block(element, indptr, a, b) for a, b in _runs(chunk)]
            yield chunk, sp.vstack(parts, format="csr")


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs of sorted row numbers as [start, stop) pairs."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks)]


def _csr_block(element: h5py.Group, indptr: h5py.Dataset, first: int, last: int):
    n_cols = element_shape(element)[1]
    ptr = indptr[first : last + 1].astype(np.int64)
    lo, hi = int(ptr[0]), int(ptr[-1])
    data = element["data"][lo:hi].astype(np.float32, copy=False)
    indices = element["indices"][lo:hi]
    return sp.csr_matrix((data, indices, ptr - lo), shape=(last - first, n_cols))


# scipy keeps CSR indices and indptr in one dtype, int32 while it can hold every value; numba
# kernels (scanpy's normalize_total, rank_genes_groups) refuse a matrix that mixes them.
INT32_MAX = np.iinfo(np.int32).max


def index_dtype(n_cols: int, max_nnz: int) -> type:
    """The dtype of both CSR index arrays: int32 when it holds every column and offset."""
    return np.int32 if max(n_cols, max_nnz) <= INT32_MAX else np.int64


def stored_entries(element: h5py.Group | h5py.Dataset) -> int:
    """Entries a matrix element stores: an upper bound on the non-zeros of any subset of it."""
    if isinstance(element, h5py.Dataset):
        return int(np.prod(element.shape))
    return int(element["data"].shape[0])


class CsrWriter:
    """Write a CSR matrix element, in anndata's encoding, one block of rows at a time.

    ``max_nnz`` bounds the non-zeros to come (default: every entry); indices and indptr share
    the dtype it allows, as scipy and anndata's own writer keep them.
    """

    def __init__(
        self, parent: h5py.Group, key: str, n_rows: int, n_cols: int, max_nnz: int | None = None
    ):
        self.group = parent.create_group(key)
        self.group.attrs["encoding-type"] = "csr_matrix"
        self.group.attrs["encoding-version"] = "0.1.0"
        self.group.attrs["shape"] = np.array([n_rows, n_cols], dtype=np.int64)
        opts = {"maxshape": (None,), "chunks": (1 << 16,)}
        self.data = self.group.create_dataset("data", shape=(0,), dtype=np.float32, **opts)
        self.max_nnz = n_rows * n_cols if max_nnz is None else int(max_nnz)
        dtype = index_dtype(n_cols, self.max_nnz)
        self.indices = self.group.create_dataset("indices", shape=(0,), dtype=dtype, **opts)
        self.indptr = self.group.create_dataset("indptr", shape=(n_rows + 1,), dtype=dtype)
        self.n_rows, self.rows_done, self.nnz = n_rows, 0, 0

    def append(self, block: sp.csr_matrix) -> None:
        block = sp.csr_matrix(block)
        block.sort_indices()
        n, nnz = block.shape[0], block.nnz
        if self.nnz + nnz > self.max_nnz:
            raise ValueError(f"more than the {self.max_nnz} non-zeros announced")
        for dataset, values in ((self.data, block.data), (self.indices, block.indices)):
            dataset.resize((self.nnz + nnz,))
            dataset[self.nnz :] = values
        offsets = block.indptr[1:].astype(np.int64) + self.nnz
        self.indptr[self.rows_done + 1 : self.rows_done + n + 1] = offsets
        self.rows_done += n
        self.nnz += nnz

    def close(self) -> None:
        if self.rows_done != self.n_rows:
            raise ValueError(f"wrote {self.rows_done} of {self.n_rows} rows")
        self.indptr[0] = 0


def read_dense_rows(
    dataset: h5py.Dataset, rows: np.ndarray, *, budget: int | None = None
) -> np.ndarray:
    """The `rows` (sorted file row numbers) of a dense dataset (an obsm entry or one of its
    columns), read slab by slab of at most `budget` bytes of file rows, so memory stays
    bounded whatever the file's size. Slabs, not row runs: a dense row is small, and one read
    per run of a tissue's scattered rows costs far more than reading past the others."""
    rows = np.asarray(rows, dtype=np.int64)
    per_row = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
    span = max(1, int((budget or BLOCK_BYTES) // max(per_row, 1)))
    parts, start = [], 0
    while start < rows.size:
        first = int(rows[start])
        stop = int(np.searchsorted(rows, first + span, side="left"))
        chunk = rows[start:stop]
        parts.append(dataset[first : int(chunk[-1]) + 1][chunk - first])
        start = stop
    if not parts:
        return np.empty((0, *dataset.shape[1:]), dtype=dataset.dtype)
    return np.concatenate(parts)


def read_obsm_rows(element: h5py.Group | h5py.Dataset, rows: np.ndarray, obs_names: pd.Index):
    """The `rows` of an obsm entry: a dense array, a sparse matrix (returned dense) or a
    DataFrame of numeric columns (returned as one, indexed by `obs_names`)."""
    kind = element_kind(element)
    if kind == "array":
        return read_dense_rows(element, rows)
    if kind in ("csr_matrix", "csc_matrix"):
        n_cols = element_shape(element)[1]
        blocks = [block for _, block in iter_rows(element, rows)]
        return (sp.vstack(blocks) if blocks else sp.csr_matrix((0, n_cols))).toarray()
    if kind != "dataframe":
        raise ValueError(f"unsupported obsm encoding {kind!r}")
    columns = [str(c) for c in np.atleast_1d(element.attrs.get("column-order", []))]
    values = {}
    for column in columns:
        if not isinstance(element[column], h5py.Dataset) or element[column].dtype.kind not in "iuf":
            raise ValueError(f"column {column!r} is not numeric")
        values[column] = read_dense_rows(element[column], rows)
    return pd.DataFrame(values, index=obs_names, columns=columns)
