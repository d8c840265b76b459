"""The model card's sections of the optional checks (integration, label transfer, query
mapping): one renderer per check, called by the card through the checks registry (checks.py).

Each takes the check's result (its JSON, or None when the check does not apply to the model)
and the card's settings, and returns the section: its title, then its paragraphs and tables.
"""

from __future__ import annotations

import math

from .layout import RAN, SKIPPED_REASON, TOTAL, TOTAL_PCA, latent_keys
from .provenance import code_reference
from .settings import ModelSettings


def fmt(value) -> str:
    """A card number: two decimals, integers as they are, n/a for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.2f}"


def not_computed(title: str, result: dict) -> list[str] | None:
    """The section of a check whose result says it did not run: its title and the reason."""
    if result.get(RAN, True):
        return None
    return [title, f"Not computed: {result[SKIPPED_REASON]}."]


def integration_section(integration: dict | None, settings: ModelSettings) -> list[str]:
    """scib-metrics of the latent space beside the PCA baseline, or why there are none."""
    if not settings.model.kind.has_latent:
        return []  # a class without a latent space: nothing to integrate
    if integration is None:
        return [
            "Integration",
            "Not computed: the model was set up without a batch key (model.setup.batch_key), so "
            "there are no batches whose mixing could be measured.",
        ]
    if skipped := not_computed("Integration", integration):
        return skipped
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
        "batch_correction_without_pcr": "**Batch correction without PCR comparison** (aggregate)",
        "total_without_pcr": "**Total without PCR comparison** (aggregate)",
    }
    contents = i.get("aggregates") or {}
    without = i[TOTAL].get("total_without_pcr")
    like_for_like = (
        " PCR comparison measures the batch variance removed relative to the PCA baseline, "
        "which therefore scores 0 on it by definition; like with like, without it: total "
        f"{fmt(without)} for the model, {fmt(i[TOTAL_PCA].get('total_without_pcr'))} for the "
        "PCA."
        if without is not None
        else ""
    )
    what = (
        "\n".join(f"- {name}: {text}" for name, text in contents.items() if name != "note")
        if contents
        else ""
    )
    rows = "\n".join(
        f"| {aggregates.get(metric, metric)} | {fmt(value)} | "
        f"{fmt(i['metrics']['pca'].get(metric))} |"
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
        f"conservation: {fmt(i[TOTAL][TOTAL])} for the model, "
        f"{fmt(i[TOTAL_PCA][TOTAL])} for the PCA.{like_for_like} kBET is left out "
        "(see docs/metrics.md of scvi-hub-workflow for the definitions).",
        "**Integration**:",
        "| Metric | Model | PCA baseline |\n| --- | --- | --- |\n" + rows,
        *(["What each aggregate contains:", what] if what else []),
    ]


def label_transfer_section(lt: dict | None, settings: ModelSettings) -> list[str]:
    """Label-transfer metrics, and how a user of the hub model gets predictions."""
    if lt is None:
        return []
    qzm_key, _ = latent_keys(settings.model.model_class)
    rows = "\n".join(
        f"| {r['label']} | {r['n_cells']} | {r.get('n_predicted', 'n/a')} "
        f"| {r.get('n_correct', 'n/a')} | {fmt(r['precision'])} | {fmt(r['recall'])} "
        f"{_interval(r.get('recall_low'), r.get('recall_high'))}| {fmt(r['f1'])} |"
        for r in lt["per_label"]
    )
    repo_id = settings.publish.repo_id or "<repo_id>"
    counts = (
        f" ({lt['n_correct']} of {lt['n_cells']} right, 95% interval "
        f"{_interval(*lt['accuracy_interval']).strip()})"
        if "n_correct" in lt
        else ""
    )
    f1_interval = (
        f" (95% bootstrap interval {_interval(*lt['macro_f1_interval']).strip()})"
        if lt.get("macro_f1_interval")
        else ""
    )
    not_scored = lt.get("not_scored") or []
    unscored = (
        " Not scored, without a labelled validation cell: "
        + ", ".join(
            f"{r['label']} ({r['n_cells_labelled']} labelled cells, all outside the validation "
            "split)"
            for r in not_scored
        )
        + "."
        if not_scored
        else ""
    )
    truth = lt.get("unlabelled_vs_truth")
    planted = (
        f" On the {truth['n_cells']} unlabelled cells, against the labels planted by the "
        f"simulation: accuracy {fmt(truth['accuracy'])}, macro-F1 {fmt(truth['macro_f1'])}."
        if truth
        else ""
    )
    return [
        "Label transfer",
        f"The model's predicted labels ({lt['labels_key']}) on the {lt['n_cells']} labelled "
        "validation cells, which the classifier did not train on, predicted from the published "
        f"(minified) model: accuracy {fmt(lt['accuracy'])}{counts}, macro-F1 "
        f"{fmt(lt['macro_f1'])}{f1_interval}, expected calibration error {fmt(lt['ece'])} "
        f"({lt['n_bins']} bins of the predicted probability). A label with few validation "
        f"cells has a wide interval; macro-F1 weighs it like any other.{unscored}{planted}",
        "**Label transfer per label**:",
        "| Label | Cells | Predicted as it | Correct | Precision | Recall (95% interval) | F1 |"
        "\n| --- | --- | --- | --- | --- | --- | --- |\n" + rows,
        "In scvi-tools 1.4.2, `model.predict()` fails on this minified model (`TypeError: "
        "classify() got an unexpected keyword argument 'qzm'`). The classifier needs only the "
        "stored latent posterior mean; this gives exactly the full model's `predict(soft=True)`:",
        "```python\nimport pandas as pd\nimport torch\nfrom scvi.hub import HubModel\n\n"
        f'model = HubModel.pull_from_huggingface_hub("{repo_id}").model\n'
        f'qzm = torch.as_tensor(model.adata.obsm["{qzm_key}"], dtype=torch.float32)\n'
        "with torch.inference_mode():\n"
        "    scores = model.module.classify_helper(qzm.to(model.device))\n"
        "    if model.module.classifier.logits:\n"
        "        scores = torch.softmax(scores, dim=-1)\n"
        "labels = model._label_mapping[: scores.shape[1]]\n"
        "probabilities = pd.DataFrame(scores.cpu().numpy(), model.adata.obs_names, labels)\n"
        "predicted = probabilities.idxmax(axis=1)\n```",
    ]


def query_check_section(qc: dict | None, settings: ModelSettings) -> list[str]:
    """The query mapping check: how the held-out batch maps onto a reference without it."""
    if not settings.model.kind.can_map_queries:
        return []  # a class whose use is not scArches mapping (its card says what it is for)
    title = "Query mapping"
    batch_key = settings.model.setup.batch_key
    if batch_key is None:
        return [title, "Not computed: the model has no batch key (model.setup.batch_key), so "
                "there is no batch to hold out and map."]  # fmt: skip
    if qc is None:
        return [title, "Not computed: criticism.query_check is false."]
    if skipped := not_computed(title, qc):
        return skipped
    phases = ", then ".join(
        f"{p['epochs']} epochs of {p['model_class']}" for p in qc["reference_phases"]
    )
    text = (
        f"To check how the model maps new data (scArches), the batch {qc['query_batch']} "
        f"of {batch_key} ({qc['n_query_cells']} cells) was held out, a reference was trained "
        f"with this model's settings on the other {qc['n_reference_cells']} cells ({phases}, "
        f"seed {qc['seed']}), and the held-out batch was mapped onto it with "
        f"`load_query_data` and {qc['query_epochs']} epochs of fine-tuning. Its mapped latent "
        f"keeps {fmt(qc['knn_overlap'])} of each cell's {qc['n_neighbours']} nearest "
        f"neighbours in this model's latent (chance: {fmt(qc['knn_overlap_chance'])})."
    )
    agreement = qc.get("label_agreement")
    if agreement:
        text += (
            f" Labels transferred from the reference cells by their {qc['n_neighbours']} "
            f"nearest neighbours match the {agreement['n_cells']} labelled query cells with "
            f"accuracy {fmt(agreement['accuracy'])}, macro-F1 {fmt(agreement['macro_f1'])}."
        )
    classifier = qc.get("classifier")
    if classifier:
        text += (
            " The classifier's labels of the mapped batch (its labels hidden during mapping): "
            f"accuracy {fmt(classifier['accuracy'])}, macro-F1 {fmt(classifier['macro_f1'])}."
        )
    for what, reason in (qc.get("skipped") or {}).items():
        name = {"label_agreement": "Label agreement", "classifier": "The classifier's labels"}
        text += f" {name.get(what, what)}: not scored, {reason}."
    truth = qc.get("classifier_vs_truth")
    if truth:
        text += (
            f" Against the labels planted by the simulation, on all {truth['n_cells']} query "
            f"cells: accuracy {fmt(truth['accuracy'])}."
        )
    return [title, text]


def _subset(subset: dict) -> str:
    if not subset:
        return "all cells"
    return "; ".join(
        f"{column} in {', '.join(map(str, values))}" for column, values in subset.items()
    )


def provenance_section(record: dict) -> list[str]:
    """How the model was made (provenance.json, published next to it), as a table."""
    source, training = record["input"], record["training"]
    dataset = source["source"]
    if source.get("cellxgene_dataset_version_id"):
        dataset += (
            f" (CELLxGENE dataset {source.get('cellxgene_dataset_id')}, version "
            f"{source['cellxgene_dataset_version_id']})"
        )
    if source.get("url"):
        dataset += f", {source['url']}"
    phases = ", ".join(
        f"{p['model_class']} {p['epochs']} of {p['max_epochs']} ({p['stopped']})"
        for p in training["phases"]
    )
    software = ", ".join(f"{name} {version}" for name, version in record["software"].items())
    hardware = record["hardware"]
    env = record["environment_file"]
    rate = training.get("cells_per_second")
    rows = [
        ("Workflow", code_reference(record["workflow"])),
        ("Settings (sha256)", f"`{record['settings_sha256']}`"),
        ("Input", dataset),
        ("Input file (sha256)", f"`{source['sha256']}`"),
        ("Subset", _subset(source.get("subset") or {})),
        ("Cells x genes read", f"{source.get('n_cells')} x {source.get('n_genes')}"),
        (
            "Genes trained on",
            f"{record['genes']['n_genes']} (sha256 `{record['genes']['sha256']}`)",
        ),
        ("Software", software),
        ("Environment file", f"{env['path']} (sha256 `{env['sha256']}`)"),
        (
            "Hardware",
            f"{hardware.get('device')} (accelerator {hardware.get('accelerator')}), GPU "
            f"{hardware.get('gpu_name') or 'none'}, {hardware.get('cpu_threads')} CPU threads",
        ),
        ("Seed", str(training.get("seed"))),
        ("Epochs (why training stopped)", phases),
        (
            "Training time",
            f"{fmt(training.get('seconds'))} s"
            + (f", {rate:,.0f} cells per second (training cells x epochs / s)" if rate else ""),
        ),
        ("Trained at", str(record.get("trained_at"))),
    ]
    table = "| Item | Value |\n|------|-------|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    return [
        "# Provenance",
        "How this model was made. The full record, with every setting, is provenance.json in "
        "this repository.",
        table,
    ]


def profile_check_section(pc: dict | None, settings: ModelSettings) -> list[str]:
    """The cell-type profiles of a model that learns one per type, against held-out cells."""
    if pc is None:
        return []
    title = "Cell-type profiles"
    if skipped := not_computed(title, pc):
        return skipped
    rows = "\n".join(
        f"| {r['label']} | {r['n_cells']} | {fmt(r['pearson'])} | "
        f"{'yes' if r['matched'] else 'no'} |"
        for r in pc["per_label"]
    )
    return [
        title,
        f"Each cell type's learned expression profile against the pseudobulk of the "
        f"{pc['n_cells']} validation cells of that type ({pc['labels_key']}), which the model did "
        "not train on: Pearson correlation over genes of log1p(counts per 10,000), and whether "
        "the type's own profile is the best match of all types' (a model with shuffled labels "
        f"matches at chance, {fmt(pc['chance'])}). Matched: {fmt(pc['match_accuracy'])} of the "
        f"types; mean correlation {fmt(pc['mean_pearson'])}. Held-out log-likelihood per cell: "
        f"{fmt(pc['log_likelihood'])} with the true labels, "
        f"{fmt(pc['log_likelihood_shuffled_labels'])} with the labels shuffled.",
        "**Cell-type profiles**:",
        "| Label | Cells | Pearson | Best match |\n| --- | --- | --- | --- |\n" + rows,
    ]


def deconvolution_section(dc: dict | None, settings: ModelSettings) -> list[str]:
    """How well the spatial model started from this one recovers known proportions."""
    if dc is None:
        return []
    title = "Deconvolution"
    if skipped := not_computed(title, dc):
        return skipped
    low, high = dc["cells_per_spot"]
    return [
        title,
        f"{dc['n_spots']} pseudo-spots, each the summed counts of {low} to {high} random "
        f"validation cells (of {dc['n_cells']}; the model did not train on them), deconvolved by "
        f"{dc['spatial_model']}.from_rna_model(st_adata, model) with its default arguments, "
        f"trained {dc['epochs']} epochs. Against the spots' true cell-type fractions: root mean "
        f"squared error {fmt(dc['rmse'])} (giving every spot the mean fractions: "
        f"{fmt(dc['rmse_mean_baseline'])}), mean correlation per cell type over spots "
        f"{fmt(dc['mean_pearson'])}.",
    ]


def _interval(low, high) -> str:
    """`[0.80, 0.95] ` or nothing when there is no interval."""
    if low is None or high is None:
        return ""
    return f"[{fmt(low)}, {fmt(high)}] "
