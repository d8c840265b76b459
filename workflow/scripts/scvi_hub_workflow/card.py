"""The model card (README.md) and `_scvi_required_metadata.json` of an scvi-hub model.

The card carries every section, front-matter key and tag of the published scvi-hub cards
(see docs/card.md), with the metrics of this workflow's own, corrected definitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .card_cv import cv_table as _cv_table
from .card_cv import protein_cv_section as _protein_cv_section
from .card_sections import fmt, provenance_section
from .card_training import _url_cost, training_data_section, training_data_url_warning  # noqa: F401
from .checks import CHECKS
from .compat import import_scvi
from .layout import CELL_WISE, DE_COLUMNS, GENE_WISE, PROTEIN_CV, RAN, SKIPPED_REASON
from .model_kinds import kind_of
from .provenance import code_reference
from .settings import ModelSettings

# The published cards' DE columns in their order, then the rest of ours (metrics.DE_COLUMNS).
_REF_DE = ["gene_f1", "lfc_mae", "lfc_pearson", "lfc_spearman", "roc_auc", "pr_auc", "n_cells"]
CARD_DE_COLUMNS = _REF_DE + [c for c in DE_COLUMNS if c not in _REF_DE + ["group"]]


@dataclass
class SavedModel:
    """What the card needs from a saved model directory, as scvi-tools' own loader reads it."""

    model_class: str
    init_params: dict
    setup_args: dict
    data_registry: dict
    summary_stats: dict
    minified: bool
    scvi_version: str | None = None  # the version that trained (and saved) the model

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> SavedModel:
        # HubModelCardHelper.from_dir reads model.pt with scvi-tools' loader and, for the
        # minified flag, adata.h5ad's uns; license and anndata version are not read from
        # the model (the card takes them from the settings and the training summary).
        import_scvi()
        from scvi.hub import HubModelCardHelper

        helper = HubModelCardHelper.from_dir(str(model_dir), license_info="", anndata_version="")
        init = helper.model_init_params
        params = {**init.get("non_kwargs", {}), **init.get("kwargs", {}).get("model_kwargs", {})}
        params = {k: v for k, v in params.items() if k not in ("adata", "registry", "datamodule")}
        return cls(
            model_class=helper.model_cls_name,
            init_params=params,
            setup_args=dict(helper.model_setup_anndata_args),
            data_registry={k: dict(v) for k, v in helper.model_data_registry.items()},
            summary_stats=dict(helper.model_summary_stats),
            minified=bool(helper.data_is_minified),
            scvi_version=helper.scvi_version,
        )


def card_versions(saved: SavedModel, training: dict) -> dict[str, str]:
    """The versions the card and metadata record: those that trained the model (its saved
    registry, and the training job's summary for anndata), not the job rendering the card."""
    return {"scvi": saved.scvi_version, "anndata": training["anndata_version"]}


@dataclass
class CardInputs:
    settings: ModelSettings  # those the card rule declares
    saved: SavedModel
    cv: dict
    de: dict
    training: dict
    versions: dict = field(default_factory=dict)
    # the results of the optional checks that apply to the model, by check name (checks.py)
    checks: dict[str, dict] = field(default_factory=dict)
    # provenance.json (provenance.py): how the model was made
    provenance: dict | None = None
    # dataset.json: the source as resolved and read (version, subset, cells, checksums)
    dataset: dict = field(default_factory=dict)


def _location(entry: dict) -> str:
    attr, key = entry.get("attr_name"), entry.get("attr_key")
    return f"adata.{attr}" if key is None else f"adata.{attr}['{key}']"


def front_matter(inputs: CardInputs) -> dict:
    """The card's YAML header (library, license, tags), as scvi-tools' HubModelCardHelper
    writes it, so the tags stay the ones the hub searches by."""
    import_scvi()
    from scvi.hub import HubModelCardHelper
    from scvi.utils import attrdict

    s, saved = inputs.settings, inputs.saved
    helper = HubModelCardHelper(
        license_info=s.card.license,
        model_cls_name=saved.model_class,
        model_init_params=saved.init_params,
        model_setup_anndata_args=saved.setup_args,
        model_summary_stats=saved.summary_stats,
        # The helper's template reads registry entries as attributes.
        model_data_registry=attrdict({k: attrdict(v) for k, v in saved.data_registry.items()}),
        scvi_version=inputs.versions["scvi"],
        anndata_version=inputs.versions["anndata"],
        # the configured tag, and the class's other modalities (TOTALVI: protein)
        data_modalities=list(
            dict.fromkeys([s.card.modality, *kind_of(saved.model_class).modalities])
        ),
        tissues=list(s.tissues),
        data_is_annotated=bool(s.model.setup.labels_key),
        data_is_minified=saved.minified,
    )
    data = helper.model_card.data
    return {"library_name": data.library_name, "license": data.license, "tags": list(data.tags)}


def _de_table(de: dict) -> str:
    """The DE table, or why there is none; and the groups left out for their size."""
    if de.get("absent_reason"):
        return f"Not computed: {de['absent_reason']}."
    columns = CARD_DE_COLUMNS
    lines = ["| Index | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for row in de["groups"]:
        lines.append(f"| {row['group']} | " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    table = "\n".join(lines)
    return table + _left_out(de)


def _left_out(de: dict) -> str:
    if not de.get("left_out"):
        return ""
    groups = ", ".join(f"{g['group']} ({g['n_cells']} cells)" for g in de["left_out"])
    return (
        f"\n\nLeft out, with fewer than {de.get('min_cells')} cells (criticism.min_cells): "
        f"{groups}."
    )


def _throughput(training: dict) -> str:
    """The card's sentence on training speed and the data loader, from the training summary
    (empty for a summary written before it recorded them)."""
    rate = training.get("cells_per_second")
    if rate is None:
        return ""
    loader = training.get("loader") or {}
    settings = [f"batch size {loader['batch_size']}"] if "batch_size" in loader else []
    settings += [key for key, on in loader.items() if key != "batch_size" and on is True]
    if loader.get("num_workers"):
        settings.append(f"{loader['num_workers']} workers")
    return (
        f" Throughput: {rate:,.0f} cells/s (training cells x epochs / seconds of training); "
        f"data loader: {', '.join(settings) or 'defaults'}."
    )


def _trained_for(training: dict) -> str:
    """Epochs of every training phase: "40 epochs of SCVI pre-training, then 10 of SCANVI"."""
    phases = training.get("phases") or []
    if pretrained := training.get("pretrained_model"):
        own = ", then ".join(f"{p['epochs']} epochs of {p['model_class']}" for p in phases)
        return (
            f"{own}, starting from the published {pretrained['model_class']} model "
            f"{pretrained['model']} ({pretrained['epochs']} epochs)"
        )
    if len(phases) < 2:
        return f"{training.get('epochs')} epochs"
    first, *rest = phases
    then = ", then ".join(f"{p['epochs']} epochs of {p['model_class']}" for p in rest)
    return f"{first['epochs']} epochs of {first['model_class']} pre-training, then {then}"


def _how_it_ended(training: dict) -> str:
    """Why the final phase stopped, which epoch's weights are published, the KL weight reached
    (summary.json of a model trained before these were recorded says nothing)."""
    phases = training.get("phases") or []
    end = phases[-1] if phases else {}
    if "stopped" not in end:
        return ""
    text = f" {end['model_class']} training stopped after {end['epochs']} epochs ({end['stopped']})"
    if str(end.get("kept", "")).startswith("best "):
        value = end.get("kept_value", end.get("kept_elbo_validation"))
        text += (
            f"; the published weights are those of epoch {end['kept_epoch']}, the "
            f"{end['kept']} ({fmt(value)})"
        )
    else:
        text += "; the published weights are those of the last epoch"
    if end.get("final_kl_weight") is not None:
        text += f". The KL weight had reached {end['final_kl_weight']:.2f} (1: warm-up complete)"
    return text + "."


def _json_block(data: dict) -> str:
    return "```json\n" + json.dumps(data, indent=2) + "\n```"


def _posterior_predictive_sections(cv: dict, de: dict) -> list[str]:
    """The metrics from posterior predictive samples (CV, DE), or why the class has none."""
    if not cv.get(RAN, True):
        return [
            "The posterior predictive metrics (coefficient of variation, differential "
            f"expression) are not computed for this model: {cv.get(SKIPPED_REASON)}."
        ]
    de_groups = (
        "cell types"
        if de.get("grouping") == "labels"
        else "clusters (Leiden clustering of the latent space; the data have no labels)"
    )
    return [
        "We provide here key performance metrics for the uploaded model, computed by "
        "scvi-hub-workflow from posterior predictive samples "
        f"({cv.get('n_samples')} samples per cell, seed {cv.get('seed')}).",
        "Coefficient of variation",
        "The cell-wise coefficient of variation summarizes how well variation between different "
        "cells is preserved by the generated model expression. Even a model that is exactly "
        "right does not reach 1: the observed counts are one noisy draw. Beside each value, "
        "what such a model reaches on the same cells (its ceiling: each posterior sample in "
        "turn scored as if it were the data, against a model of as many samples); compare a "
        "value with it, not with a "
        "fixed threshold: well below it, the model misses variation its noise does not "
        "explain. R² takes the observed data as the truth. Training and validation cells are "
        "the model's own split.",
        "**Cell-wise Coefficient of Variation**:",
        _cv_table(
            cv[CELL_WISE],
            [("train", "Training Value"), ("validation", "Validation Value")],
            ("n_cells", "Cells"),
        ),
        "The gene-wise coefficient of variation summarizes how well variation between different "
        "genes is preserved by the generated model expression. This value is usually quite high.",
        "**Gene-wise Coefficient of Variation**:",
        _cv_table(
            cv[GENE_WISE],
            [("train", "Training Value"), ("validation", "Validation Value"), ("all", "All Cells")],
            ("n_genes", "Genes"),
        ),
        *_protein_cv_section(cv.get(PROTEIN_CV)),
        "Differential expression metric",
        "The differential expression metric provides a summary of the differential expression "
        f"analysis between {de_groups}. Both the observed counts and the model's samples are "
        f"normalised the same way ({de.get('normalisation')}) and tested one group versus the rest "
        "with the Wilcoxon rank-sum test. gene_f1 is the overlap of the top "
        f"{de.get('top_n')} up-regulated genes; lfc_* compare log2 fold changes over all genes; "
        "roc_auc and pr_auc measure how well the model's Wilcoxon scores recover the observed "
        f"up-regulated genes (adjusted p < {de.get('alpha')} and a positive Wilcoxon score; "
        "n_true_up of them), and the two-sided variants recover all observed DE genes by |score| "
        "(n_true_two_sided). Values are averaged over samples; n/a marks a group with no true "
        "genes. See docs/metrics.md of scvi-hub-workflow for the exact definitions.",
        "**Differential expression**:",
        _de_table(de),
    ]


def render_card(inputs: CardInputs) -> str:
    """The card: front matter from scvi-tools' HubModelCardHelper; the body is ours.

    The helper's template would print the metric sections from scvi-tools' own criticism
    (a t-test labelled Wilcoxon, no cell counts, no NaN handling) and links to `stable` docs;
    ours carry the corrected definitions (docs/metrics.md) and the layout of the published
    cards (docs/card.md), section for section.
    """
    s, saved, cv, de = inputs.settings, inputs.saved, inputs.cv, inputs.de
    text = kind_of(saved.model_class).card
    version = inputs.versions["scvi"]
    registry_rows = "\n".join(
        f"| {key} | {_location(entry)} |" for key, entry in sorted(saved.data_registry.items())
    )
    stats_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(saved.summary_stats.items()))
    card = s.card
    training = inputs.training
    setup = dict(saved.setup_args)
    sections = [
        "---\n" + yaml.safe_dump(front_matter(inputs), sort_keys=False) + "---",
        text.intro,
        f"We provide an extensive [user guide](https://docs.scvi-tools.org/en/{version}/user_guide/"
        f"models/{text.guide}.html).",
        "- See our original manuscript for further details of the model:\n" + text.paper + ".",
        "- See our manuscript on [scvi-hub](https://www.biorxiv.org/content/10.1101/2024.03.01.582887v2)\n"
        "how to leverage pre-trained models.",
        text.usage,
        "# Model Description",
        s.description or f"{saved.model_class} model trained by scvi-hub-workflow.",
        "# Metrics",
        *_posterior_predictive_sections(cv, de),
        *(
            line
            for check in CHECKS
            for line in check.card_section(inputs.checks.get(check.name), s)
        ),
        "# Model Properties",
        "We provide here key parameters used to setup and train the model.",
        "Model Parameters",
        "These provide the settings to setup the original model:",
        _json_block(saved.init_params),
        "Setup Data Arguments",
        "Arguments passed to setup_anndata of the original model:",
        _json_block(setup),
        "Data Registry",
        "Registry elements for AnnData manager:",
        "| Registry Key | scvi-tools Location |\n"
        "|-------------------|--------------------------------------|\n" + registry_rows,
        f"- **Data is Minified**: {saved.minified}",
        "Summary Statistics",
        "| Summary Stat Key | Value |\n|--------------------------|-------|\n" + stats_rows,
        "Training",
        *training_data_section(s, inputs.dataset),
        f"**Training data url**: {card.training_data_url or 'Not provided by uploader'}",
        *_url_cost(card.training_data_url),
        "If provided by the original uploader, for those interested in understanding or "
        "replicating the training process, the code is available at the link below.",
        f"**Training Code URL**: {_code_url(card.training_code_url, inputs.provenance)}",
        f"Trained for {_trained_for(training)} on {training.get('device')} "
        f"(accelerator {training.get('accelerator')}), scvi-tools {training.get('scvi_version')}, "
        f"torch {training.get('torch_version')}." + _how_it_ended(training) + _throughput(training),
        *(provenance_section(inputs.provenance) if inputs.provenance else []),
        "# References",
        card.references or "To be added...",
    ]
    return blank_line_after_tables("\n".join(sections) + "\n")


def _code_url(configured: str | None, provenance: dict | None) -> str:
    """The configured URL, else this workflow's (its remote at the commit, or its version and
    commit: provenance.code_reference)."""
    if configured:
        return configured
    if provenance:
        return code_reference(provenance["workflow"])
    return "Not provided by uploader"


def blank_line_after_tables(text: str) -> str:
    """A blank line after every table: in CommonMark a table runs on into the next line."""
    lines = text.split("\n")
    out = []
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        out.append(line)
        if line.startswith("|") and following.strip() and not following.startswith("|"):
            out.append("")
    return "\n".join(out)


def metadata(model_class: str, versions: dict, training_data_url: str | None) -> dict:
    """The content of `_scvi_required_metadata.json`, as `scvi.hub.HubMetadata` reads it."""
    return {
        "scvi_version": versions["scvi"],
        "anndata_version": versions["anndata"],
        "model_cls_name": model_class,
        "training_data_url": training_data_url,
        "model_parent_module": kind_of(model_class).parent_module,
    }
