"""Streaming posterior predictive check: criticism metrics at atlas scale.

scvi-tools' ``PosteriorPredictiveCheck`` keeps every sampled count of every cell and gene in
memory. Here posterior samples are drawn minibatch by minibatch and only what the metrics need is
kept: per-cell and per-gene sums and sums of squares (coefficient of variation), per-group sums of
log expression (fold changes), and the non-zeros of the log-normalised data in a disk-backed,
gene-chunked store (Wilcoxon ranks need all cells of a gene). Observed counts are read from the
``.h5ad`` in the same cell chunks, so memory stays flat in the number of cells.

Time goes to drawing counts, so only the decoder runs in torch; counts are drawn by exact numpy
samplers in worker threads (one generator per minibatch), and all bookkeeping runs over the
non-zero entries.

Modules, by job: ``observed`` (the saved model and its counts on disk), ``sampling`` (posterior
samples), ``nonzeros`` (blocks as non-zero entries), ``accumulators`` (CV and DE bookkeeping),
``stream`` (the threaded sampling pass), ``grouping`` (DE groups: labels or clusters),
``tables`` (de.tsv / de.json), ``check`` (the whole check, as the rule runs it).
"""

from .accumulators import (
    DEFAULT_MEMORY_BUDGET,
    CoefficientOfVariation,
    CVValues,
    DifferentialExpression,
)
from .check import (
    SAMPLE_DENSITY_MARGIN,
    criticise,
    default_workers,
    not_applicable,
    posterior_predictive_check,
)
from .grouping import (
    MIN_DE_GROUPS,
    Grouping,
    GroupsError,
    check_label_groups,
    cluster_groups,
    knn_graph,
    label_groups,
    latent_means,
    plan_groups,
    read_obs,
    resolve_groups,
)
from .nonzeros import Nonzeros
from .observed import ObservedCounts, cell_splits, load_minified_model
from .sampling import CountLikelihood, draw_counts, likelihood_blocks, negative_binomial, sample_rng
from .stream import stream
from .tables import de_summary, de_table

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MIN_DE_GROUPS",
    "SAMPLE_DENSITY_MARGIN",
    "CoefficientOfVariation",
    "CountLikelihood",
    "CVValues",
    "DifferentialExpression",
    "Grouping",
    "GroupsError",
    "Nonzeros",
    "ObservedCounts",
    "cell_splits",
    "check_label_groups",
    "cluster_groups",
    "criticise",
    "de_summary",
    "de_table",
    "default_workers",
    "draw_counts",
    "knn_graph",
    "label_groups",
    "latent_means",
    "likelihood_blocks",
    "load_minified_model",
    "negative_binomial",
    "not_applicable",
    "plan_groups",
    "posterior_predictive_check",
    "read_obs",
    "resolve_groups",
    "sample_rng",
    "stream",
]
