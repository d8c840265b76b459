"""The model card renderer, on hand-made inputs (no model needed)."""

from __future__ import annotations

import json

import yaml
from helpers import rule_settings
from scvi_hub_workflow.card import CardInputs, SavedModel, card_versions, metadata, render_card
from scvi_hub_workflow.config import model_settings


def inputs(labels_key=None, tissues=()) -> CardInputs:
    cfg = {
        "models": {
            "m": {
                "description": "A test model.",
                "tissues": list(tissues),
                "dataset": {"source": "builtin:synthetic-iid"},
                "model": {"class": "SCVI", "setup": {"labels_key": labels_key}},
                "card": {"training_code_url": "https://example.org/code"},
            }
        }
    }
    saved = SavedModel(
        model_class="SCVI",
        init_params={"n_hidden": 128, "n_latent": 10},
        setup_args={"layer": None, "batch_key": None},
        data_registry={
            "X": {"attr_name": "X", "attr_key": None},
            "batch": {"attr_name": "obs", "attr_key": "_scvi_batch"},
        },
        summary_stats={"n_cells": 400, "n_vars": 100},
        minified=True,
    )
    split = {"mae": 0.5, "pearson": 0.9, "spearman": 0.8, "r2": float("nan"), "n_cells": 360}
    gene = {"mae": 0.1, "pearson": 0.95, "spearman": 0.9, "r2": 0.7, "n_genes": 100}
    row = {
        "group": "B cell",
        "n_cells": 50,
        "gene_f1": 0.8,
        "lfc_mae": 0.3,
        "lfc_pearson": 0.9,
        "lfc_spearman": 0.85,
        "roc_auc": None,
        "pr_auc": None,
        "n_true_up": 0,
        "roc_auc_two_sided": 0.9,
        "pr_auc_two_sided": 0.7,
        "n_true_two_sided": 12,
    }
    return CardInputs(
        settings=rule_settings(model_settings(cfg, "m"), "card"),
        saved=saved,
        cv={
            "n_samples": 3,
            "seed": 0,
            "cell_wise": {"train": split, "validation": split},
            "gene_wise": {"train": gene, "validation": gene, "all": gene},
        },
        de={
            "grouping": "labels" if labels_key else "clusters",
            "alpha": 0.05,
            "top_n": 10,
            "normalisation": "normalize_total(1e4) + log1p",
            "groups": [row],
        },
        training={"epochs": 7, "device": "cpu", "accelerator": "cpu"},
        versions={"scvi": "1.4.2", "anndata": "0.12.19"},
    )


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_front_matter_and_tags():
    card = render_card(inputs(labels_key="cell_type", tissues=["lung", "heart"]))
    meta = front_matter(card)
    assert meta["library_name"] == "scvi-tools" and meta["license"] == "cc-by-4.0"
    assert meta["tags"][:4] == ["biology", "genomics", "single-cell", "model_cls_name:SCVI"]
    assert {"scvi_version:1.4.2", "anndata_version:0.12.19", "modality:rna"} <= set(meta["tags"])
    assert {"tissue:lung", "tissue:heart", "annotated:True"} <= set(meta["tags"])
    assert "annotated:False" in front_matter(render_card(inputs()))["tags"]


def test_metrics_tables_mark_missing_values():
    card = render_card(inputs(labels_key="cell_type"))
    assert "| R² (R-Squared) | n/a | n/a |" in card  # NaN never prints as a number
    assert "| Cells | 360 | 360 |" in card and "| Genes | 100 | 100 | 100 |" in card
    assert "| B cell | 0.80 | 0.30 | 0.90 | 0.85 | n/a | n/a | 50 | 0 | 0.90 | 0.70 | 12 |" in card
    assert "between cell types. Both" in card and "Wilcoxon rank-sum" in card
    assert "between clusters (Leiden clustering of the latent space" in render_card(inputs())


def test_properties_and_training_sections():
    card = render_card(inputs())
    assert json.dumps({"n_hidden": 128, "n_latent": 10}, indent=2) in card
    assert "| batch | adata.obs['_scvi_batch'] |" in card and "| X | adata.X |" in card
    assert "- **Data is Minified**: True" in card
    assert "| n_cells | 400 |" in card
    assert "**Training data url**: Not provided by uploader" in card
    assert "**Training Code URL**: https://example.org/code" in card
    assert card.rstrip().endswith("To be added...")


def test_metadata_is_what_hub_metadata_reads():
    from scvi.hub import HubMetadata

    meta = metadata("SCANVI", {"scvi": "1.4.2", "anndata": "0.12.19"}, None)
    assert HubMetadata(**meta).model_cls_name == "SCANVI"


def test_saved_model_is_read_with_scvi_tools_loader(minified_model):
    import scvi

    saved = SavedModel.from_dir(minified_model / "minified")
    assert saved.model_class == "SCVI" and saved.minified
    assert saved.scvi_version == scvi.__version__  # recorded in the registry at training
    assert saved.data_registry["X"] == {"attr_name": "X", "attr_key": None}
    assert saved.summary_stats["n_cells"] > 0 and "n_latent" in saved.init_params
    assert "adata" not in saved.init_params


def test_card_versions_are_those_that_trained_the_model():
    base = inputs()
    saved = SavedModel(**{**vars(base.saved), "scvi_version": "1.2.0"})
    found = card_versions(saved, {"anndata_version": "0.11.1"})
    assert found == {"scvi": "1.2.0", "anndata": "0.11.1"}
    card = render_card(CardInputs(**{**vars(base), "saved": saved, "versions": found}))
    assert {"scvi_version:1.2.0", "anndata_version:0.11.1"} <= set(front_matter(card)["tags"])


CELLXGENE_DATASET = {
    "n_cells": 900,
    "n_cells_in_file": 5000,
    "n_genes": 2000,
    "resolved": {
        "dataset_id": "ds-1",
        "dataset_version_id": "v-7",
        "newest_of_dataset": True,
        "url": "https://datasets.cellxgene.cziscience.com/v-7.h5ad",
        "sha256": "ab" * 32,
        "size": 19 * 2**20,
    },
    "source_url": "https://datasets.cellxgene.cziscience.com/v-7.h5ad",
}


def cellxgene_card(dataset=None, hvg=None, model=None, **card) -> CardInputs:
    entry = {
        "dataset": {
            "source": "cellxgene:ds-1",
            "counts": "raw.X",
            "subset": {"tissue": "lung", "is_primary_data": True},
            **(dataset or {}),
        },
        "model": model or {"class": "SCVI"},
        "hvg": {"n_top_genes": 500, "flavor": "seurat_v3", **(hvg or {})},
        "card": card,
    }
    base = inputs()
    base.settings = rule_settings(model_settings({"models": {"m": entry}}, "m"), "card")
    base.dataset = CELLXGENE_DATASET
    return base


def test_the_source_version_subset_and_hvg_are_named_not_a_training_data_url():
    from scvi_hub_workflow.card import training_data_url_warning

    card_in = cellxgene_card()
    card = render_card(card_in)
    # no URL by default: scvi-tools would download it on every HubModel(...)
    assert card_in.settings.card.training_data_url is None
    assert "**Training data url**: Not provided by uploader" in card
    assert "- **Source**: `cellxgene:ds-1`" in card
    assert "CELLxGENE dataset ds-1, version v-7 (the dataset's newest version" in card
    assert "is_primary_data: True, tissue: lung (900 of the file's 5000)" in card
    assert "the top 500 of 2000 by highly variable gene selection (flavor seurat_v3" in card
    assert "full download" not in card
    # the Tabula Sapiens recipe's genes: per donor and assay, span 1.0
    recipe = render_card(
        cellxgene_card(
            dataset={"join_columns": {"donor_assay": ["donor_id", "assay"]}},
            hvg={"batch_key": "donor_assay", "span": 1.0},
        )
    )
    assert "`donor_assay` is `donor_id` and `assay` joined with `_`" in recipe
    assert "(flavor seurat_v3, span 1.0, ranked per batch of `donor_assay`)" in recipe
    assert training_data_url_warning(None, CELLXGENE_DATASET) is None
    assert "**Proteins**" not in card
    # CITE-seq from a MuData file: the modalities and where the proteins went
    totalvi = cellxgene_card(
        dataset={
            "source": "https://example.org/cite.h5mu",
            "sha256": "cd" * 32,
            "mudata": {"rna": "rna", "protein": "prot"},
        },
        model={"class": "TOTALVI", "setup": {"protein_expression_obsm_key": "adt"}},
    )
    totalvi.dataset = CELLXGENE_DATASET | {"proteins": {"n_proteins": 12, "obsm_key": "adt"}}
    shown = render_card(totalvi)
    assert "ranked over all cells) of the MuData modality `rna`" in shown
    assert '- **Proteins**: all 12, in `obsm["adt"]` (from the MuData modality `prot`)' in shown
    # set by the user: kept, and what it costs is said on the card and in the log
    own = render_card(cellxgene_card(training_data_url="https://mine.org/x.h5ad"))
    assert "**Training data url**: https://mine.org/x.h5ad" in own
    assert "every load of this model downloads the whole file" in own
    warning = training_data_url_warning("https://mine.org/x.h5ad", CELLXGENE_DATASET)
    assert "card.training_data_url is set" in warning and "19.0 MiB" in warning
    assert metadata("SCVI", {"scvi": "1", "anndata": "1"}, None)["training_data_url"] is None


def test_cv_tables_carry_their_ceiling_and_no_fixed_threshold():
    card_in = inputs()
    ceiling = {"mae": 0.2, "pearson": 0.41, "spearman": 0.5, "r2": 0.1}
    for split in ("train", "validation"):
        card_in.cv["cell_wise"][split] = card_in.cv["cell_wise"][split] | {"ceiling": ceiling}
    card = render_card(card_in)
    assert "| Pearson Correlation | 0.90 (perfect model 0.41) | 0.90 (perfect model 0.41) |" in card
    assert "| Cells | 360 | 360 |" in card
    assert "0.4\n" not in card and "Below a squared Pearson" not in card
    assert "what such a model reaches on the same cells (its ceiling" in card


def test_a_citeseq_model_shows_the_protein_cv_tables_with_their_ceilings():
    card_in = inputs()
    assert "(proteins)" not in render_card(card_in)
    ceiling = {"mae": 0.1, "pearson": 0.77, "spearman": 0.6, "r2": 0.5}
    split = {"mae": 0.3, "pearson": 0.66, "spearman": 0.5, "r2": 0.2, "n_cells": 360}
    protein = split | {"n_genes": 24} | {"ceiling": ceiling}
    card_in.cv["protein"] = {
        "n_proteins": 24,
        "cell_wise": {"train": split | {"ceiling": ceiling}, "validation": split},
        "gene_wise": {"train": protein, "validation": protein, "all": protein},
    }
    card = render_card(card_in)
    assert "(24 proteins; the tables above are the RNA's)" in card
    cells = card.index("**Cell-wise Coefficient of Variation (proteins)**")
    proteins = card.index("**Protein-wise Coefficient of Variation**")
    assert card.index("**Gene-wise Coefficient of Variation**") < cells < proteins
    assert "| Pearson Correlation | 0.66 (perfect model 0.77) | 0.66 |" in card[cells:proteins]
    assert "| Proteins | 24 | 24 | 24 |" in card[proteins:]


def test_training_sentence_names_both_phases_of_scanvi_from_scvi():
    two = inputs()
    two.training = {
        "epochs": 10,
        "device": "cpu",
        "accelerator": "cpu",
        "phases": [
            {"phase": "scvi", "model_class": "SCVI", "epochs": 40},
            {"phase": "scanvi", "model_class": "SCANVI", "epochs": 10},
        ],
    }
    card = render_card(two)
    assert "Trained for 40 epochs of SCVI pre-training, then 10 epochs of SCANVI on cpu" in card
    assert "Trained for 7 epochs on cpu" in render_card(inputs())
    named = inputs()
    named.training = {
        "epochs": 10,
        "device": "cpu",
        "accelerator": "cpu",
        "phases": [{"phase": "scanvi", "model_class": "SCANVI", "epochs": 10}],
        "pretrained_model": {"model": "lung-scvi", "model_class": "SCVI", "epochs": 40},
    }
    assert (
        "Trained for 10 epochs of SCANVI, starting from the published SCVI model lung-scvi "
        "(40 epochs) on cpu" in render_card(named)
    )


def test_training_sentence_quotes_throughput_and_the_data_loader():
    fast = inputs()
    fast.training = {
        **fast.training,
        "cells_per_second": 21437.6,
        "loader": {"batch_size": 1024, "pin_memory": True, "num_workers": 4,
                   "persistent_workers": True, "data_on_device": False,
                   "load_sparse_tensor": False},
    }  # fmt: skip
    card = render_card(fast)
    assert "Throughput: 21,438 cells/s" in card
    assert "data loader: batch size 1024, pin_memory, persistent_workers, 4 workers." in card
    assert "Throughput" not in render_card(inputs())  # a summary from before it was recorded


def test_label_transfer_section_only_with_label_transfer_and_says_how_to_predict():
    assert "Label transfer" not in render_card(inputs())
    with_lt = inputs(labels_key="cell_type")
    with_lt.checks["label_transfer"] = {
        "labels_key": "cell_type",
        "n_cells": 40,
        "accuracy": 0.925,
        "macro_f1": 0.9,
        "ece": 0.031,
        "n_bins": 10,
        "n_correct": 37,
        "accuracy_interval": [0.8, 0.97],
        "macro_f1_interval": [0.71, 0.98],
        "not_scored": [{"label": "platelet", "n_cells_labelled": 3, "n_cells_train": 3,
                        "n_cells_validation": 0, "n_cells_test": 0}],
        "unlabelled_vs_truth": {"n_cells": 12, "accuracy": 0.75, "macro_f1": 0.7},
        "per_label": [{"label": "B cell", "n_cells": 40, "n_predicted": 37, "n_correct": 37,
                       "precision": 1.0, "recall": 0.925, "recall_low": 0.8, "recall_high": 0.97,
                       "f1": 0.96}],
    }  # fmt: skip
    card = render_card(with_lt)
    assert "on the 40 labelled validation cells" in card
    assert "accuracy 0.93 (37 of 40 right, 95% interval [0.80, 0.97])" in card
    assert "macro-F1 0.90 (95% bootstrap interval [0.71, 0.98])" in card
    assert "expected calibration error 0.03" in card
    assert "Not scored, without a labelled validation cell: platelet (3 labelled cells" in card
    assert "On the 12 unlabelled cells, against the labels planted" in card
    assert "| B cell | 40 | 37 | 37 | 1.00 | 0.93 [0.80, 0.97] | 0.96 |" in card
    assert 'model.adata.obsm["scvi_latent_qzm"]' in card and "classify_helper" in card
    assert card.index("Label transfer") < card.index("# Model Properties")
    assert 'pull_from_huggingface_hub("<repo_id>")' in card  # no repo set: a placeholder
    cfg = {"dataset": {"source": "builtin:synthetic-iid"}, "model": {"class": "SCVI"}}
    cfg["publish"] = {"repo_id": "my-org/lung-scanvi"}
    with_lt.settings = rule_settings(model_settings({"models": {"m": cfg}}, "m"), "card")
    named = render_card(with_lt)
    assert 'pull_from_huggingface_hub("my-org/lung-scanvi")' in named and "<repo_id>" not in named
