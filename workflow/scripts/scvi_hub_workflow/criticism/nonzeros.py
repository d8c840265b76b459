"""Blocks of counts as their non-zero entries: what every accumulator sums over."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Nonzeros:
    """The non-zero entries of a cells x genes block of counts (cell-major), and cell totals.

    Every metric is a sum over non-zeros, so the bookkeeping costs O(non-zeros), not
    O(cells x genes), and the observed CSR rows are used as they are stored.
    """

    cells: np.ndarray
    genes: np.ndarray
    values: np.ndarray
    totals: np.ndarray

    @classmethod
    def from_dense(cls, block: np.ndarray) -> Nonzeros:
        flat = np.flatnonzero(block)
        cells, genes = np.divmod(flat, block.shape[1])
        return cls._build(cells, genes, block.ravel()[flat], block.shape[0])

    @classmethod
    def from_csr(cls, data, indices, indptr) -> Nonzeros:
        cells = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        values = np.asarray(data, dtype=np.float32)
        keep = values != 0  # explicit zeros stored in the file are no non-zeros
        return cls._build(cells[keep], np.asarray(indices)[keep], values[keep], len(indptr) - 1)

    @classmethod
    def _build(cls, cells, genes, values, n_cells: int) -> Nonzeros:
        values = np.asarray(values, dtype=np.float32)
        totals = np.bincount(cells, weights=values, minlength=n_cells)
        return cls(cells.astype(np.intp), genes.astype(np.intp), values, totals)
