"""The model card (README.md) and `_scvi_required_metadata.json` of an scvi-hub model.

The card carries every section, front-matter key and tag of the published scvi-hub cards
(see docs/card.md), with the metrics of this workflow's own, corrected definitions.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import CardStep
from .layout import DE_COLUMNS, latent_keys

MODEL_TEXT = {
    "SCVI": {
        "intro": (
            "ScVI is a variational inference model for single-cell RNA-seq data that can learn an "
            "underlying latent space, integrate technical batches and impute dropouts.\n"
            "The learned low-dimensional latent representation of the data can be used for "
            "visualization and clustering.\n"
            "scVI takes as input a scRNA-seq gene expression matrix with cells and genes."
        ),
        "guide": "scvi",
        "paper": ("[scVI manuscript](https://www.nature.com/articles/s41592-018-0229-2)"),
    },
    "SCANVI": {
        "intro": (
            "ScANVI is a variational inference model for single-cell RNA-seq data that can learn "
            "an underlying latent space, integrate technical batches and impute dropouts.\n"
            "In addition, to scVI, ScANVI is a semi-supervised model that can leverage labeled "
            "data to learn a cell-type classifier in the latent space and afterward predict cell "
            "types of new data.\n"
            "The learned low-dimensional latent representation of the data can be used for "
            "visualization and clustering.\n"
            "scANVI takes as input a scRNA-seq gene expression matrix with cells and genes as "
            "well as a cell-type annotation for a subset of cells."
        ),
        "guide": "scanvi",
        "paper": "[scANVI manuscript](https://www.embopress.org/doi/full/10.15252/msb.20209620)",
    },
}

CV_ROWS = [("mae", "Mean Absolute Error"), ("pearson", "Pearson Correlation"),
           ("spearman", "Spearman Correlation"), ("r2", "R² (R-Squared)")]  # fmt: skip

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
    settings: CardStep
    saved: SavedModel
    cv: dict
    de: dict
    training: dict
    versions: dict = field(default_factory=dict)
    # SCANVI: label_transfer.json of the label_transfer rule
    label_transfer: dict | None = None
    # models with a batch key: integration.json of the integration rule
    integration: dict | None = None
    # models with a batch key: query_check.json of the query_check rule
    query_check: dict | None = None


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}"


def _location(entry: dict) -> str:
    attr, key = entry.get("attr_name"), entry.get("attr_key")
    return f"adata.{attr}" if key is None else f"adata.{attr}['{key}']"


def front_matter(inputs: CardInputs) -> dict:
    """The card's YAML header (library, license, tags), as scvi-tools' HubModelCardHelper
    writes it, so the tags stay the ones the hub searches by."""
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
        data_modalities=[s.card.modality],
        tissues=list(s.tissues),
        data_is_annotated=bool(s.setup.labels_key),
        data_is_minified=saved.minified,
    )
    data = helper.model_card.data
    return {"library_name": data.library_name, "license": data.license, "tags": list(data.tags)}


def _cv_table(cv: dict, splits: list[tuple[str, str]], count: tuple[str, str]) -> str:
    """A metric x split table; `count` names the row of cells (or genes) each value covers."""
    rows = [*CV_ROWS, count]
    header = "| Metric | " + " | ".join(label for _, label in splits) + " |"
    rule = "|-------------------------|" + "|".join("----------------" for _ in splits) + "|"
    lines = [
        f"| {name} | "
        + " | ".join(_fmt((cv.get(split) or {}).get(key)) for split, _ in splits)
        + " |"
        for key, name in rows
    ]
    return "\n".join([header, rule, *lines])


def _de_table(de: dict) -> str:
    """The DE table, or why there is none; and the groups left out for their size."""
    if de.get("absent_reason"):
        return f"Not computed: {de['absent_reason']}."
    columns = CARD_DE_COLUMNS
    lines = ["| Index | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for row in de["groups"]:
        lines.append(f"| {row['group']} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
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


def _trained_for(training: dict) -> str:
    """Epochs of every training phase: "40 epochs of SCVI pre-training, then 10 of SCANVI"."""
    phases = training.get("phases") or []
    if len(phases) < 2:
        return f"{training.get('epochs')} epochs"
    first, *rest = phases
    then = ", then ".join(f"{p['epochs']} epochs of {p['model_class']}" for p in rest)
    return f"{first['epochs']} epochs of {first['model_class']} pre-training, then {then}"


def _label_transfer_section(lt: dict | None, model_class: str) -> list[str]:
    """Label-transfer metrics, and how a user of the hub model gets predictions."""
    if lt is None:
        return []
    qzm_key, _ = latent_keys(model_class)
    rows = "\n".join(
        f"| {r['label']} | {r['n_cells']} | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
        f"| {_fmt(r['f1'])} |"
        for r in lt["per_label"]
    )
    truth = lt.get("unlabelled_vs_truth")
    planted = (
        f" On the {truth['n_cells']} unlabelled cells, against the labels planted by the "
        f"simulation: accuracy {_fmt(truth['accuracy'])}, macro-F1 {_fmt(truth['macro_f1'])}."
        if truth
        else ""
    )
    return [
        "Label transfer",
        f"The model's predicted labels ({lt['labels_key']}) on the {lt['n_cells']} labelled "
        "validation cells, which the classifier did not train on, predicted from the published "
        f"(minified) model: accuracy {_fmt(lt['accuracy'])}, macro-F1 {_fmt(lt['macro_f1'])}, "
        f"expected calibration error {_fmt(lt['ece'])} ({lt['n_bins']} bins of the predicted "
        f"probability).{planted}",
        "**Label transfer per label**:",
        "| Label | Cells | Precision | Recall | F1 |\n| --- | --- | --- | --- | --- |\n" + rows,
        "In scvi-tools 1.4.2, `model.predict()` fails on this minified model (`TypeError: "
        "classify() got an unexpected keyword argument 'qzm'`). The classifier needs only the "
        "stored latent posterior mean; this gives exactly the full model's `predict(soft=True)`:",
        "```python\nimport pandas as pd\nimport torch\nfrom scvi.hub import HubModel\n\n"
        'model = HubModel.pull_from_huggingface_hub("<repo_id>").model\n'
        f'qzm = torch.as_tensor(model.adata.obsm["{qzm_key}"], dtype=torch.float32)\n'
        "with torch.inference_mode():\n"
        "    scores = model.module.classify_helper(qzm.to(model.device))\n"
        "    if model.module.classifier.logits:\n"
        "        scores = torch.softmax(scores, dim=-1)\n"
        "labels = model._label_mapping[: scores.shape[1]]\n"
        "probabilities = pd.DataFrame(scores.cpu().numpy(), model.adata.obs_names, labels)\n"
        "predicted = probabilities.idxmax(axis=1)\n```",
    ]


def _integration_section(integration: dict | None) -> list[str]:
    """scib-metrics of the latent space beside the PCA baseline, or why there are none."""
    if integration is None:
        return [
            "Integration",
            "Not computed: the model was set up without a batch key (model.setup.batch_key), so "
            "there are no batches whose mixing could be measured.",
        ]
    i = integration
    if i["label_source"] == "labels":
        source = f"the labels in {i['labels_key']!r}"
        if i["n_cells_unlabelled"]:
            source += f" ({i['n_cells_unlabelled']} unlabelled cells left out)"
    else:
        source = (
            f"Leiden clusters of the latent space ({i['labels_key']!r}, from the posterior "
            "predictive check; the data have no labels)"
        )
    cells = (
        f"a random {i['n_cells']} of the {i['n_cells_labelled']} cells (seed {i['seed']}, "
        f"criticism.integration_max_cells {i['max_cells']})"
        if i["subsampled"]
        else f"all {i['n_cells']} {'labelled ' if i['label_source'] == 'labels' else ''}cells"
    )
    aggregates = {
        "bio_conservation": "**Bio conservation** (aggregate)",
        "batch_correction": "**Batch correction** (aggregate)",
        "total": "**Total** (aggregate)",
    }
    rows = "\n".join(
        f"| {aggregates.get(metric, metric)} | {_fmt(value)} | "
        f"{_fmt(i['metrics']['pca'].get(metric))} |"
        for metric, value in i["metrics"]["model"].items()
    )
    return [
        "Integration",
        "The integration metrics summarize how well the latent space removes batch effects "
        f"({i['n_batches']} batches in {i['batch_key']!r}) while keeping biological variation, "
        f"measured with scib-metrics on {cells}, grouped by {source}. Beside the model's latent "
        "posterior means, the same cells are scored on the unintegrated baseline, a PCA of the "
        "log-normalised HVG counts with as many components, so the numbers can be compared. "
        "Scores are unscaled, higher is better; total = 0.4 x batch correction + 0.6 x bio "
        f"conservation: {_fmt(i['total']['total'])} for the model, "
        f"{_fmt(i['total_pca']['total'])} for the PCA. kBET is left out "
        "(see docs/metrics.md of scvi-hub-workflow for the definitions).",
        "**Integration**:",
        "| Metric | Model | PCA baseline |\n| --- | --- | --- |\n" + rows,
    ]


def _query_section(qc: dict | None, batch_key: str | None) -> list[str]:
    """The query mapping check: how the held-out batch maps onto a reference without it."""
    title = "Query mapping"
    if batch_key is None:
        return [title, "Not computed: the model has no batch key (model.setup.batch_key), so "
                "there is no batch to hold out and map."]  # fmt: skip
    if qc is None:
        return [title, "Not computed: criticism.query_check is false."]
    if not qc.get("ran"):
        return [title, f"Not computed: {qc['skipped_reason']}."]
    phases = ", then ".join(
        f"{p['epochs']} epochs of {p['model_class']}" for p in qc["reference_phases"]
    )
    text = (
        f"To check how the model maps new data (scArches), the batch {qc['query_batch']} "
        f"of {batch_key} ({qc['n_query_cells']} cells) was held out, a reference was trained "
        f"with this model's settings on the other {qc['n_reference_cells']} cells ({phases}, "
        f"seed {qc['seed']}), and the held-out batch was mapped onto it with "
        f"`load_query_data` and {qc['query_epochs']} epochs of fine-tuning. Its mapped latent "
        f"keeps {_fmt(qc['knn_overlap'])} of each cell's {qc['n_neighbours']} nearest "
        f"neighbours in this model's latent (chance: {_fmt(qc['knn_overlap_chance'])})."
    )
    agreement = qc.get("label_agreement")
    if agreement:
        text += (
            f" Labels transferred from the reference cells by their {qc['n_neighbours']} "
            f"nearest neighbours match the {agreement['n_cells']} labelled query cells with "
            f"accuracy {_fmt(agreement['accuracy'])}, macro-F1 {_fmt(agreement['macro_f1'])}."
        )
    classifier = qc.get("classifier")
    if classifier:
        text += (
            " The classifier's labels of the mapped batch (its labels hidden during mapping): "
            f"accuracy {_fmt(classifier['accuracy'])}, macro-F1 {_fmt(classifier['macro_f1'])}."
        )
    truth = qc.get("classifier_vs_truth")
    if truth:
        text += (
            f" Against the labels planted by the simulation, on all {truth['n_cells']} query "
            f"cells: accuracy {_fmt(truth['accuracy'])}."
        )
    return [title, text]


def _json_block(data: dict) -> str:
    return "```json\n" + json.dumps(data, indent=2) + "\n```"


def render_card(inputs: CardInputs) -> str:
    """The card: front matter from scvi-tools' HubModelCardHelper; the body is ours.

    The helper's template would print the metric sections from scvi-tools' own criticism
    (a t-test labelled Wilcoxon, no cell counts, no NaN handling) and links to `stable` docs;
    ours carry the corrected definitions (docs/metrics.md) and the layout of the published
    cards (docs/card.md), section for section.
    """
    s, saved, cv, de = inputs.settings, inputs.saved, inputs.cv, inputs.de
    text = MODEL_TEXT[saved.model_class]
    version = inputs.versions["scvi"]
    de_groups = (
        "cell types"
        if de.get("grouping") == "labels"
        else "clusters (Leiden clustering of the latent space; the data have no labels)"
    )
    registry_rows = "\n".join(
        f"| {key} | {_location(entry)} |" for key, entry in sorted(saved.data_registry.items())
    )
    stats_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(saved.summary_stats.items()))
    card = s.card
    training = inputs.training
    setup = dict(saved.setup_args)
    sections = [
        "---\n" + yaml.safe_dump(front_matter(inputs), sort_keys=False) + "---",
        text["intro"],
        f"We provide an extensive [user guide](https://docs.scvi-tools.org/en/{version}/user_guide/"
        f"models/{text['guide']}.html).",
        "- See our original manuscript for further details of the model:\n" + text["paper"] + ".",
        "- See our manuscript on [scvi-hub](https://www.biorxiv.org/content/10.1101/2024.03.01.582887v2)\n"
        "how to leverage pre-trained models.",
        "This model can be used for fine tuning on new data using our Arches framework:\n"
        "[Arches tutorial](https://docs.scvi-tools.org/en/1.0.0/tutorials/notebooks/"
        "scarches_scvi_tools.html).",
        "# Model Description",
        s.description or f"{saved.model_class} model trained by scvi-hub-workflow.",
        "# Metrics",
        "We provide here key performance metrics for the uploaded model, computed by "
        "scvi-hub-workflow from posterior predictive samples "
        f"({cv.get('n_samples')} samples per cell, seed {cv.get('seed')}).",
        "Coefficient of variation",
        "The cell-wise coefficient of variation summarizes how well variation between different "
        "cells is preserved by the generated model expression. Below a squared Pearson correlation "
        "coefficient of 0.4\n, we would recommend not to use generated data for downstream "
        "analysis, while the generated latent space might still be useful for analysis.\n"
        "R² takes the observed data as the truth. Training and validation cells are the model's "
        "own split.",
        "**Cell-wise Coefficient of Variation**:",
        _cv_table(
            cv["cell_wise"],
            [("train", "Training Value"), ("validation", "Validation Value")],
            ("n_cells", "Cells"),
        ),
        "The gene-wise coefficient of variation summarizes how well variation between different "
        "genes is preserved by the generated model expression. This value is usually quite high.",
        "**Gene-wise Coefficient of Variation**:",
        _cv_table(
            cv["gene_wise"],
            [("train", "Training Value"), ("validation", "Validation Value"), ("all", "All Cells")],
            ("n_genes", "Genes"),
        ),
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
        *_integration_section(inputs.integration),
        *_label_transfer_section(inputs.label_transfer, saved.model_class),
        *_query_section(inputs.query_check, s.setup.batch_key),
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
        f"**Training data url**: {card.training_data_url or 'Not provided by uploader'}",
        "If provided by the original uploader, for those interested in understanding or "
        "replicating the training process, the code is available at the link below.",
        f"**Training Code URL**: {card.training_code_url or 'Not provided by uploader'}",
        f"Trained for {_trained_for(training)} on {training.get('device')} "
        f"(accelerator {training.get('accelerator')}), scvi-tools {training.get('scvi_version')}, "
        f"torch {training.get('torch_version')}.",
        "# References",
        card.references or "To be added...",
    ]
    return "\n".join(sections) + "\n"


def metadata(model_class: str, versions: dict, training_data_url: str | None) -> dict:
    """The content of `_scvi_required_metadata.json`, as `scvi.hub.HubMetadata` reads it."""
    return {
        "scvi_version": versions["scvi"],
        "anndata_version": versions["anndata"],
        "model_cls_name": model_class,
        "training_data_url": training_data_url,
        "model_parent_module": "scvi.model",
    }


def with_source_url(settings: CardStep, dataset_summary: dict) -> CardStep:
    """Card settings whose `training_data_url` is the resolved source URL, unless configured.

    scvi-tools' `HubModel.read_large_training_adata` fetches the full data of a minified
    model from it; the URL is the resolved download (CELLxGENE: the version's H5AD asset).
    """
    if settings.card.training_data_url or not dataset_summary.get("source_url"):
        return settings
    card = dataclasses.replace(settings.card, training_data_url=dataset_summary["source_url"])
    return dataclasses.replace(settings, card=card)
