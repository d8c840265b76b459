"""The optional checks: criticism that applies to some models only, one registry entry each.

An entry names the check (its rule in workflow/rules/criticism.smk and its result,
`results/{model}/criticism/<name>.json`), which models it applies to, its card section and its
columns in `results/models.tsv`. The workflow's DAG (the card's and the summary's inputs, the
report), the card and the summary iterate over `CHECKS`; a new check is a producer (rule, script,
module), a card section (card_sections.py) and an entry here.

A check that applies to a model but cannot run on its data writes `{"ran": false,
"skipped_reason": ...}` (layout.RAN, layout.SKIPPED_REASON); its section says why. What the data
allows is known once the dataset step has written dataset.json (cells, batches), after the DAG is
planned: each check's `cannot_run(dataset.json, settings)` gives the reason it cannot, and the
check's job asks `skip_reason` first, so it writes the reason at once, before any training or
metric (the query check's plan asks before the model trains: query_check.plan_query). The DAG
stays the same whatever the data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import card_sections
from .layout import RAN, TOTAL, TOTAL_PCA
from .settings import ModelSettings

RESULT = "results/{model}/criticism/{check}.json"


@dataclass(frozen=True)
class OptionalCheck:
    name: str  # its rule, and the stem of its result file
    applies: Callable[[ModelSettings], bool]  # from the model's settings, before any job runs
    # the card section, from the result (None where the check does not apply) and the settings
    card_section: Callable[[dict | None, ModelSettings], list[str]]
    columns: tuple[str, ...]  # its columns in results/models.tsv
    summary: Callable[[dict], dict]  # those columns' values from its result
    # why it cannot measure anything on this model's data (dataset.json), or None; reads only
    # keys its rule declares (settings_of)
    cannot_run: Callable[[dict, ModelSettings], str | None] = lambda dataset, settings: None

    def result(self, model: str) -> str:
        return RESULT.format(model=model, check=self.name)

    def summary_row(self, result: dict | None) -> dict:
        """Its columns for one model: n/a (None) where it does not apply or did not run."""
        ran = result is not None and result.get(RAN, True)
        values = self.summary(result) if ran else {}
        return {column: values.get(column) for column in self.columns}


def _integration_columns(result: dict) -> dict:
    # scib-metrics' aggregate of the latent space, and of the PCA baseline on the same cells
    # and both without PCR comparison, which the baseline scores 0 by definition: like with like
    return {
        "integration_total": result[TOTAL][TOTAL],
        "integration_total_pca": result[TOTAL_PCA][TOTAL],
        "integration_total_without_pcr": result[TOTAL].get("total_without_pcr"),
        "integration_total_pca_without_pcr": result[TOTAL_PCA].get("total_without_pcr"),
    }


def _label_transfer_columns(result: dict) -> dict:
    return {
        "label_accuracy_validation": result.get("accuracy"),
        "label_macro_f1_validation": result.get("macro_f1"),
        "label_ece_validation": result.get("ece"),
    }


def _query_check_columns(result: dict) -> dict:
    # a classifier's labels of the mapped batch; otherwise kNN transfer from the reference
    labels = result.get("classifier") or result.get("label_agreement") or {}
    return {
        "query_knn_overlap": result.get("knn_overlap"),
        "query_label_accuracy": labels.get("accuracy"),
    }


def _batches(dataset: dict, settings: ModelSettings) -> str:
    batches = dataset.get("batches") or {}
    listing = ", ".join(f"{b!r} ({n} cells)" for b, n in sorted(batches.items()))
    return f"the batch column {settings.model.setup.batch_key!r} (model.setup.batch_key) has " + (
        f"one batch in the data the model trained on ({listing})"
        if len(batches) == 1
        else f"{len(batches)} batches"
    )


def _one_batch(what: str) -> Callable[[dict, ModelSettings], str | None]:
    """A check that compares batches: nothing to measure with fewer than two (a tissue from one
    donor). dataset.json without `batches` (written before it was recorded) is not judged."""

    def cannot_run(dataset: dict, settings: ModelSettings) -> str | None:
        batches = dataset.get("batches")
        if batches is None or len(batches) >= 2:
            return None
        return f"{_batches(dataset, settings)}; {what} needs two or more"

    return cannot_run


def _profile_check_columns(result: dict) -> dict:
    return {
        "profile_match_accuracy": result.get("match_accuracy"),
        "profile_mean_pearson": result.get("mean_pearson"),
    }


def _deconvolution_columns(result: dict) -> dict:
    return {
        "deconvolution_rmse": result.get("rmse"),
        "deconvolution_pearson": result.get("mean_pearson"),
    }


def _labelled_cells_span(dataset: dict, settings: ModelSettings) -> str | None:
    """Integration scores the labelled cells: they must span two batches and two labels. A
    labelled reference beside an unlabelled query batch has them all in one batch. Not judged
    without labels (clusters of every cell) or without the counts in dataset.json."""
    per_batch = dataset.get("labelled_per_batch")
    if not settings.model.setup.labels_key or per_batch is None:
        return None
    spanned = sorted(b for b, n in per_batch.items() if n)
    if len(spanned) < 2:
        where = f" ({spanned[0]!r})" if spanned else ""
        return (
            f"integration needs at least 2 batches (model.setup.batch_key "
            f"{settings.model.setup.batch_key!r}) among the cells it scores; the "
            f"{dataset.get('n_cells_labelled')} labelled cells are in {len(spanned)} batch{where}"
        )
    if len(dataset.get("labels") or {}) < 2:
        return "integration needs at least 2 labels among the labelled cells it scores"
    return None


def _integration_cannot_run(dataset: dict, settings: ModelSettings) -> str | None:
    return _one_batch("measuring how well batches mix")(dataset, settings) or _labelled_cells_span(
        dataset, settings
    )


# In the order of their card sections.
CHECKS: tuple[OptionalCheck, ...] = (
    OptionalCheck(
        name="integration",
        applies=lambda s: s.model.setup.batch_key is not None and s.model.kind.has_latent,
        card_section=card_sections.integration_section,
        columns=(
            "integration_total",
            "integration_total_pca",
            "integration_total_without_pcr",
            "integration_total_pca_without_pcr",
        ),
        summary=_integration_columns,
        cannot_run=_integration_cannot_run,
    ),
    OptionalCheck(
        name="label_transfer",
        applies=lambda s: s.model.kind.has_classifier,
        card_section=card_sections.label_transfer_section,
        columns=(
            "label_accuracy_validation",
            "label_macro_f1_validation",
            "label_ece_validation",
        ),
        summary=_label_transfer_columns,
    ),
    OptionalCheck(
        name="query_check",
        applies=lambda s: (
            s.model.setup.batch_key is not None
            and s.model.kind.can_map_queries
            and s.criticism.query_check is not False
        ),
        card_section=card_sections.query_check_section,
        columns=("query_knn_overlap", "query_label_accuracy"),
        summary=_query_check_columns,
        cannot_run=_one_batch("holding one out and mapping it onto a reference of the others"),
    ),
    OptionalCheck(
        name="profile_check",
        applies=lambda s: s.model.kind.learns_profiles,
        card_section=card_sections.profile_check_section,
        columns=("profile_match_accuracy", "profile_mean_pearson"),
        summary=_profile_check_columns,
    ),
    OptionalCheck(
        name="deconvolution",
        applies=lambda s: s.model.kind.deconvolved_by is not None,
        card_section=card_sections.deconvolution_section,
        columns=("deconvolution_rmse", "deconvolution_pearson"),
        summary=_deconvolution_columns,
    ),
)


def checks_for(settings: ModelSettings) -> list[OptionalCheck]:
    """The optional checks that apply to a model."""
    return [check for check in CHECKS if check.applies(settings)]


def measurable(dataset: dict, settings: ModelSettings) -> dict[str, str | None]:
    """What this model's optional checks can measure, given its dataset.json: for each check
    that applies, None (it runs) or the reason it cannot (it writes that reason instead)."""
    return {check.name: check.cannot_run(dataset, settings) for check in checks_for(settings)}


def skip_reason(name: str, dataset: dict, settings: ModelSettings) -> str | None:
    """In a check's job: why it cannot run on this data, or None (the registry's entry `name`).
    Unlike `measurable`, it does not ask `applies`: the job runs because the check applies."""
    check = next(c for c in CHECKS if c.name == name)
    return check.cannot_run(dataset, settings)
