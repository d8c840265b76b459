"""The model classes this workflow trains: one registry entry per scvi-tools class.

Every question of the form "which class is it?" asks an entry here: which `setup_anndata`
arguments and constructor parameters the class takes, whether it starts from a pre-trained
model, has a label classifier, can be minified or map query data, which criticism applies, and
what its card says about it. A new class is a new entry (and its rows in the schema's enum come
from `KINDS`). This module imports nothing heavy: the Snakemake process reads it to plan jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Every `model.setup` key, in the order the cards record `setup_anndata`'s arguments.
SETUP_KEYS = (
    "layer",
    "batch_key",
    "labels_key",
    "unlabeled_category",
    "size_factor_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
    "protein_expression_obsm_key",
    "protein_names_uns_key",
)

# The `model.params` keys of SCVI's constructor (the schema's defaults are SCVI's).
SCVI_PARAMS = (
    "n_hidden",
    "n_latent",
    "n_layers",
    "dropout_rate",
    "dispersion",
    "gene_likelihood",
    "latent_distribution",
    "use_batch_norm",
    "use_layer_norm",
    "encode_covariates",
)


@dataclass(frozen=True)
class CardText:
    """What the model card says about the class (worded as the published scvi-hub cards)."""

    intro: str
    guide: str  # the page of the scvi-tools user guide: docs/.../user_guide/models/<guide>.html
    paper: str  # markdown link to the manuscript
    # what a user does with the published model
    usage: str = (
        "This model can be used for fine tuning on new data using our Arches framework:\n"
        "[Arches tutorial](https://docs.scvi-tools.org/en/1.0.0/tutorials/notebooks/"
        "scarches_scvi_tools.html)."
    )


@dataclass(frozen=True)
class ModelKind:
    """One scvi-tools model class and what the workflow does with it."""

    name: str  # the class name, as in the config (`model.class`) and in scvi-tools
    parent_module: str  # where scvi-tools defines it (`model_parent_module` of the hub metadata)
    setup_keys: tuple[str, ...]  # its `setup_anndata` arguments, in the card's order
    required_setup: dict[str, str]  # setup key -> what it is, for "needs ..." errors
    params: tuple[str, ...] = SCVI_PARAMS  # the `model.params` keys its constructor takes
    # Its own defaults where scvi-tools' differ from the schema's (SCVI's), as config values:
    # built-in defaults < these < the config's `defaults:` < the model's own keys.
    param_defaults: dict = field(default_factory=dict)  # `model.params` key -> value
    train_defaults: dict = field(default_factory=dict)  # `train` key -> value
    train_extras: tuple[str, ...] = ()  # `train:` keys passed to its `train()` only
    # The training-plan arguments its `train()` takes itself: each replaces the `plan_kwargs`
    # entry of that name, with the class's own default when left out (`train_arguments`).
    plan_arguments: tuple[str, ...] = ()
    # Its `train()` defaults, for the plan arguments that scvi-tools' TrainingPlan leaves off
    # but the class's `train()` turns on (so `reduce_lr_on_plateau: false` is passed as such).
    plan_argument_offs: tuple[str, ...] = ()
    # A constructor key's allowed values where the class takes fewer than the schema lists.
    param_choices: dict = field(default_factory=dict)
    # What its data hold: "rna", and "protein" for CITE-seq (the counts of
    # `setup.protein_expression_obsm_key`): the posterior predictive check runs per modality.
    modalities: tuple[str, ...] = ("rna",)
    # The class whose model it can start from (`model.from_scvi`: pre-train that class with the
    # same settings, then `<name>.from_scvi_model`), or None.
    pretrained_from: str | None = None
    # Cells whose label is `setup.unlabeled_category` are unlabelled (semi-supervised).
    has_unlabelled_cells: bool = False
    has_classifier: bool = False  # predicts labels: the label-transfer check applies
    can_minify: bool = True  # publishable with a minified AnnData (latent posterior only)
    can_map_queries: bool = True  # scArches `load_query_data`: the query mapping check applies
    # Every cell must carry a label (a supervised class: `labels_key` names the cell types).
    every_cell_labelled: bool = False
    # A latent space (`get_latent_representation`): stored with the published data, the UMAP.
    has_latent: bool = True
    # The decoder's count distribution can be sampled: the posterior predictive check (CV
    # metrics, DE benchmark) applies. Otherwise `not_sampling` says why, on the card.
    samples_counts: bool = True
    not_sampling: str = ""
    # One expression profile per cell type (Stereoscope's): the profile check applies.
    learns_profiles: bool = False
    # The spatial model that starts from it (`from_rna_model`), as (module, class): the
    # deconvolution check applies.
    deconvolved_by: tuple[str, str] | None = None
    # Trains through scvi-tools' plain DataSplitter, so `train.data_on_device` (its
    # DeviceBackedDataSplitter) and `train.load_sparse_tensor` (densified on the device by it)
    # apply; the semi-supervised splitter has neither.
    device_loaders: bool = True
    card: CardText | None = None

    def setup_anndata_kwargs(self, setup: dict) -> dict:
        """`setup_anndata` arguments of this class from every `model.setup` value."""
        return {key: setup[key] for key in self.setup_keys}

    def model_kwargs(self, params: dict) -> dict:
        """Constructor arguments: the `model.params` this class takes."""
        return {k: v for k, v in params.items() if k in self.params}

    def train_arguments(self, kwargs: dict) -> dict:
        """`train()` arguments with the plan entries its `train()` takes itself moved out of
        `plan_kwargs`: passed there, its own argument's default would replace them."""
        plan = dict(kwargs.get("plan_kwargs") or {})
        moved = {key: plan.pop(key) for key in self.plan_arguments if key in plan}
        moved |= {key: False for key in self.plan_argument_offs if key not in moved}
        return {**kwargs, "plan_kwargs": plan, **moved} if self.plan_arguments else kwargs


# TOTALVI's own: the protein counts of CITE-seq data
PROTEIN_SETUP_KEYS = ("protein_expression_obsm_key", "protein_names_uns_key")
_NO_UNLABELLED = tuple(
    key for key in SETUP_KEYS if key not in ("unlabeled_category", *PROTEIN_SETUP_KEYS)
)

SCVI = ModelKind(
    name="SCVI",
    parent_module="scvi.model",
    setup_keys=_NO_UNLABELLED,
    required_setup={},
    card=CardText(
        intro=(
            "ScVI is a variational inference model for single-cell RNA-seq data that can learn an "
            "underlying latent space, integrate technical batches and impute dropouts.\n"
            "The learned low-dimensional latent representation of the data can be used for "
            "visualization and clustering.\n"
            "scVI takes as input a scRNA-seq gene expression matrix with cells and genes."
        ),
        guide="scvi",
        paper="[scVI manuscript](https://www.nature.com/articles/s41592-018-0229-2)",
    ),
)

SCANVI = ModelKind(
    name="SCANVI",
    parent_module="scvi.model",
    # labels first, as scvi-tools' SCANVI.setup_anndata lists them
    setup_keys=(
        "labels_key",
        "unlabeled_category",
        *(k for k in _NO_UNLABELLED if k != "labels_key"),
    ),
    required_setup={"labels_key": "a labels column", "unlabeled_category": "the unlabelled label"},
    params=(*SCVI_PARAMS, "linear_classifier"),
    train_extras=("n_samples_per_label",),
    pretrained_from="SCVI",
    has_unlabelled_cells=True,
    has_classifier=True,
    device_loaders=False,
    card=CardText(
        intro=(
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
        guide="scanvi",
        paper="[scANVI manuscript](https://www.embopress.org/doi/full/10.15252/msb.20209620)",
    ),
)

CONDSCVI = ModelKind(
    name="CondSCVI",
    parent_module="scvi.model",
    setup_keys=("batch_key", "labels_key", "layer", "size_factor_key"),
    required_setup={"labels_key": "a labels column (the cell types DestVI deconvolves into)"},
    params=(
        "n_hidden",
        "n_latent",
        "n_layers",
        "dropout_rate",
        "weight_obs",
        "encode_covariates",
        "prior",
    ),
    # scvi-tools' CondSCVI defaults (the Tabula Sapiens recipe's values), but the mixture
    # prior: DestVI.from_rna_model fails on a model with the normal one (compat.py)
    param_defaults={
        "n_latent": 5,
        "n_layers": 2,
        "dropout_rate": 0.05,
        "weight_obs": False,
        "prior": "mog",
    },
    train_defaults={"max_epochs": 300},
    plan_arguments=("lr",),
    # DestVI computes its prior from the training data: published with them, not minified
    can_minify=False,
    can_map_queries=False,
    every_cell_labelled=True,
    deconvolved_by=("scvi.model", "DestVI"),
    card=CardText(
        intro=(
            "CondSCVI is a conditional variational autoencoder for single-cell RNA-seq data: "
            "it learns a latent space of the cell-type-specific variation of every cell, "
            "conditioned on its cell type.\n"
            "It is the single-cell half of DestVI, which deconvolves spatial transcriptomics "
            "data into cell types and their continuous states.\n"
            "CondSCVI takes as input a scRNA-seq gene expression matrix with cells and genes "
            "and a cell-type annotation of every cell."
        ),
        guide="destvi",
        paper="[DestVI manuscript](https://www.nature.com/articles/s41587-022-01272-8)",
        usage=(
            "This model can be used to deconvolve spatial transcriptomics data of the same "
            "genes with DestVI: `DestVI.from_rna_model(st_adata, model)`; the published data "
            "are the training data, from which DestVI computes its prior:\n"
            "[DestVI tutorial](https://docs.scvi-tools.org/en/stable/tutorials/notebooks/"
            "spatial/DestVI_tutorial.html)."
        ),
    ),
)

RNASTEREOSCOPE = ModelKind(
    name="RNAStereoscope",
    parent_module="scvi.external",
    setup_keys=("labels_key", "layer"),
    required_setup={"labels_key": "a labels column (the cell types Stereoscope deconvolves into)"},
    params=(),
    train_defaults={"max_epochs": 400, "learning_rate": 0.01},
    plan_arguments=("lr",),
    can_minify=False,
    can_map_queries=False,
    every_cell_labelled=True,
    has_latent=False,
    samples_counts=False,
    learns_profiles=True,
    deconvolved_by=("scvi.external", "SpatialStereoscope"),
    not_sampling=(
        "RNAStereoscope learns one negative binomial expression profile per cell type, not a "
        "model of each cell: it has no latent space and cannot sample counts per cell"
    ),
    card=CardText(
        intro=(
            "RNAStereoscope is the single-cell half of Stereoscope: it learns one negative "
            "binomial expression profile per cell type from single-cell RNA-seq data.\n"
            "SpatialStereoscope then deconvolves spatial transcriptomics data into the "
            "proportions of these cell types.\n"
            "RNAStereoscope takes as input a scRNA-seq gene expression matrix with cells and "
            "genes and a cell-type annotation of every cell."
        ),
        guide="stereoscope",
        paper="[Stereoscope manuscript](https://www.nature.com/articles/s42003-020-01247-y)",
        usage=(
            "This model can be used to deconvolve spatial transcriptomics data of the same "
            "genes with Stereoscope: `SpatialStereoscope.from_rna_model(st_adata, model)`:\n"
            "[Stereoscope tutorial](https://docs.scvi-tools.org/en/stable/tutorials/notebooks/"
            "spatial/stereoscope_heart_LV_tutorial.html)."
        ),
    ),
)

TOTALVI = ModelKind(
    name="TOTALVI",
    parent_module="scvi.model",
    # as scvi-tools' TOTALVI.setup_anndata lists them
    setup_keys=(
        "protein_expression_obsm_key",
        "protein_names_uns_key",
        "batch_key",
        "layer",
        "size_factor_key",
        "categorical_covariate_keys",
        "continuous_covariate_keys",
    ),
    required_setup={
        "protein_expression_obsm_key": "the obsm entry of the protein (antibody) counts"
    },
    # TOTALVI's and its module TOTALVAE's constructor arguments
    params=(
        "n_hidden",
        "n_latent",
        "n_layers_encoder",
        "n_layers_decoder",
        "dropout_rate_encoder",
        "dropout_rate_decoder",
        "gene_dispersion",
        "protein_dispersion",
        "gene_likelihood",
        "latent_distribution",
        "empirical_protein_background_prior",
        "override_missing_proteins",
        "use_batch_norm",
        "use_layer_norm",
        "encode_covariates",
    ),
    param_defaults={"n_hidden": 256, "n_latent": 20, "gene_likelihood": "nb"},
    param_choices={"gene_likelihood": ("nb", "zinb")},
    # scvi-tools' TOTALVI.train defaults: learning rate 0.004, LR reduced on plateau
    train_defaults={"learning_rate": 0.004, "reduce_lr_on_plateau": True},
    # its train() sets these over plan_kwargs; left null, the KL warm-up is its own (steps:
    # 0.75 x the cells)
    plan_arguments=("lr", "reduce_lr_on_plateau", "n_epochs_kl_warmup", "n_steps_kl_warmup"),
    plan_argument_offs=("reduce_lr_on_plateau",),
    # scvi-tools 1.4.2's TOTALVI.setup_anndata registers no minified-data fields (only
    # setup_mudata does): a minified AnnData reloads as full data whose counts are all zeros
    # (the minify rule's reload check fails). Published with its HVG data instead.
    can_minify=False,
    # its own train() builds the plain DataSplitter; a datamodule or sparse loading are not
    # its arguments
    device_loaders=False,
    modalities=("rna", "protein"),
    card=CardText(
        intro=(
            "TotalVI is a variational inference model for CITE-seq data, which measures RNA and "
            "surface proteins in the same cells: it learns a joint latent space of both "
            "modalities, integrates technical batches and separates the protein foreground "
            "from its background.\n"
            "The learned low-dimensional latent representation of the data can be used for "
            "visualization and clustering.\n"
            "totalVI takes as input a scRNA-seq gene expression matrix with cells and genes and "
            "the protein (antibody) counts of the same cells."
        ),
        guide="totalvi",
        paper="[totalVI manuscript](https://www.nature.com/articles/s41592-020-01050-x)",
        usage=(
            "This model can be used for fine tuning on new CITE-seq data of the same genes and "
            "proteins using our Arches framework (`TOTALVI.prepare_query_anndata`, "
            "`TOTALVI.load_query_data`):\n"
            "[Arches tutorial](https://docs.scvi-tools.org/en/1.0.0/tutorials/notebooks/"
            "scarches_scvi_tools.html)."
        ),
    ),
)

KINDS: dict[str, ModelKind] = {
    kind.name: kind for kind in (SCVI, SCANVI, CONDSCVI, RNASTEREOSCOPE, TOTALVI)
}


def kind_of(name: str) -> ModelKind:
    """The registry entry of a class name (as in the config or a saved model)."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"model class {name!r} is not one this workflow trains ({', '.join(KINDS)})"
        ) from None


def owners(attribute: str, value: str | None = None) -> list[str]:
    """Classes for which `attribute` is set (or, for a tuple attribute, holds `value`)."""
    found = []
    for kind in KINDS.values():
        held = getattr(kind, attribute)
        if (value in held) if value is not None else bool(held):
            found.append(kind.name)
    return found
