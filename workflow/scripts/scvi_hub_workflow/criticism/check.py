"""The posterior predictive check: CV and DE from one sampling pass."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile

import pandas as pd

from ..layout import DE_COLUMNS, PROTEIN_CV, RAN, SKIPPED_REASON
from ..model_kinds import kind_of
from ..settings import ModelSettings
from .accumulators import (
    DEFAULT_MEMORY_BUDGET,
    CoefficientOfVariation,
    CVValues,
    DifferentialExpression,
)
from .grouping import Grouping, resolve_groups
from .observed import (
    ObservedCounts,
    cell_splits,
    load_minified_model,
    observed_proteins,
    protein_names,
)
from .stream import stream
from .tables import de_summary, de_table

log = logging.getLogger(__name__)

# Posterior samples of a fitted model are about as sparse as the data; the DE store plans its
# gene chunks from the observed non-zeros with this margin for sparser-fitting models.
SAMPLE_DENSITY_MARGIN = 1.5


def default_workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def criticise(
    model,
    counts_path: str | os.PathLike,
    grouping: Grouping,
    *,
    layer: str | None,
    n_samples: int,
    batch_size: int,
    seed: int,
    alpha: float,
    top_n: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
    tmp_dir: str | os.PathLike | None = None,
    n_workers: int | None = None,
) -> tuple[dict, pd.DataFrame, dict, CVValues]:
    """CV and DE from one pass of posterior samples: (cv.json content, de.tsv table, de.json,
    the per-cell and per-gene CVs behind cv.json).

    The de.tsv table has one row per group, sorted by n_cells (descending). Results do not
    depend on ``n_workers`` (threads; default: all CPUs of this process).
    """
    n_workers = n_workers or default_workers()
    reason = grouping.absent_reason
    if reason:
        log.warning("no DE benchmark: %s", reason)
    with (
        tempfile.TemporaryDirectory(prefix="de_store_", dir=tmp_dir) as store,
        ObservedCounts(counts_path, layer) as observed,
    ):
        n_genes = observed.shape[1]
        cv = CoefficientOfVariation(cell_splits(model), n_samples, n_genes)
        de = (
            None
            if reason
            else DifferentialExpression(
                grouping.codes,
                len(grouping.names),
                n_samples,
                observed.nonzeros_per_gene() * SAMPLE_DENSITY_MARGIN + 1,
                store,
                memory_budget_bytes,
                n_workers,
            )
        )
        stream(
            model,
            observed,
            [cv] if de is None else [cv, de],
            n_samples=n_samples,
            batch_size=batch_size,
            seed=seed,
            n_workers=n_workers,
        )
        observed_de, *sample_de = de.results() if de else (None,)
    table = (
        pd.DataFrame(columns=list(DE_COLUMNS))
        if de is None
        else de_table(grouping, observed_de, sample_de, alpha=alpha, top_n=top_n)
    )
    summary = de_summary(grouping, table, alpha=alpha, top_n=top_n, n_samples=n_samples)
    cv_result = {"n_samples": n_samples, "seed": seed, "threads": n_workers} | cv.result()
    values = cv.values(model.adata.obs_names, model.adata.var_names)
    if "protein" in kind_of(type(model).__name__).modalities:
        cv_result[PROTEIN_CV], proteins = protein_cv(model, n_samples, batch_size, seed, n_workers)
        values = dataclasses.replace(
            values, protein_cells=proteins.cells, proteins=proteins.genes.rename_axis("protein")
        )
    return cv_result, table, summary, values


def protein_cv(
    model, n_samples: int, batch_size: int, seed: int, n_workers: int
) -> tuple[dict, CVValues]:
    """The CV metrics of a CITE-seq model's protein counts, from a pass of their own (the DE
    benchmark is on the RNA): cell-wise over proteins and protein-wise over cells, each with
    its ceiling, as the RNA's, and the CVs behind them. The forward passes are redone: the RNA
    pass keeps no latent."""
    observed = observed_proteins(model)
    cv = CoefficientOfVariation(cell_splits(model), n_samples, observed.shape[1])
    stream(
        model,
        observed,
        [cv],
        n_samples=n_samples,
        batch_size=batch_size,
        seed=seed,
        n_workers=n_workers,
        modality="protein",
    )
    names = protein_names(model)
    return {"n_proteins": observed.shape[1]} | cv.result(), cv.values(model.adata.obs_names, names)


def posterior_predictive_check(
    model_dir: str | os.PathLike,
    counts_path: str | os.PathLike,
    settings: ModelSettings,
    *,
    n_workers: int | None = None,
) -> tuple[Grouping, dict, pd.DataFrame, dict, CVValues]:
    """What the rule does: load the minified model, choose the DE groups, run ``criticise``.

    Returns (grouping, cv.json content, de.tsv table, de.json content, the CVs per cell and
    per gene).
    """
    model = load_minified_model(model_dir)
    c, setup, seed = settings.criticism, settings.model.setup, settings.train.seed
    grouping = resolve_groups(
        model,
        labels_key=setup.labels_key,
        unlabeled_category=setup.unlabeled_category,
        min_cells=c.min_cells,
        cluster_resolution=c.cluster_resolution,
        seed=seed,
    )
    cv, table, summary, values = criticise(
        model,
        counts_path,
        grouping,
        layer=setup.layer,
        n_samples=c.n_samples,
        batch_size=c.batch_size,
        seed=seed,
        alpha=c.alpha,
        top_n=c.top_n,
        n_workers=n_workers,
    )
    return grouping, cv, table, summary, values


def not_applicable(settings: ModelSettings) -> dict:
    """cv.json and de.json of a class whose counts cannot be sampled (model_kinds:
    `samples_counts`): the check does not run, and the card and summary say why."""
    return {RAN: False, SKIPPED_REASON: settings.model.kind.not_sampling}
