"""The model classes this workflow trains: one registry entry per scvi-tools class.

Every question of the form "which class is it?" asks an entry here: which `setup_anndata`
arguments and constructor parameters the class takes, whether it starts from a pre-trained
model, has a label classifier, can be minified or map query data, which criticism applies, and
what its card says about it. A new class is a new entry (and its rows in the schema's enum come
from `KINDS`). This module imports nothing heavy: the Snakemake process reads it to plan jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every `model.setup` key, in the order the cards record `setup_anndata`'s arguments.
SETUP_KEYS = (
    "layer",
    "batch_key",
    "labels_key",
    "unlabeled_category",
    "size_factor_key",
    "categorical_covariate_keys",
    "continuous_covariate_keys",
)


@dataclass(frozen=True)
class CardText:
    """What the model card says about the class (worded as the published scvi-hub cards)."""

    intro: str
    guide: str  # the page of the scvi-tools user guide: docs/.../user_guide/models/<guide>.html
    paper: str  # markdown link to the manuscript


@dataclass(frozen=True)
class ModelKind:
    """One scvi-tools model class and what the workflow does with it."""

    name: str  # the class name, as in the config (`model.class`) and in scvi-tools
    parent_module: str  # where scvi-tools defines it (`model_parent_module` of the hub metadata)
    setup_keys: tuple[str, ...]  # its `setup_anndata` arguments, in the card's order
    required_setup: dict[str, str]  # setup key -> what it is, for "needs ..." errors
    own_params: tuple[str, ...] = ()  # constructor parameters no other class here takes
    train_extras: tuple[str, ...] = ()  # `train:` keys passed to its `train()` only
    # The class whose model it can start from (`model.from_scvi`: pre-train that class with the
    # same settings, then `<name>.from_scvi_model`), or None.
    pretrained_from: str | None = None
    # Cells whose label is `setup.unlabeled_category` are unlabelled (semi-supervised).
    has_unlabelled_cells: bool = False
    has_classifier: bool = False  # predicts labels: the label-transfer check applies
    can_minify: bool = True  # publishable with a minified AnnData (latent posterior only)
    can_map_queries: bool = True  # scArches `load_query_data`: the query mapping check applies
    card: CardText | None = None

    def setup_anndata_kwargs(self, setup: dict) -> dict:
        """`setup_anndata` arguments of this class from every `model.setup` value."""
        return {key: setup[key] for key in self.setup_keys}

    def model_kwargs(self, params: dict) -> dict:
        """Constructor arguments: `model.params` without the parameters of other classes."""
        others = {p for kind in KINDS.values() if kind is not self for p in kind.own_params}
        return {k: v for k, v in params.items() if k not in others - set(self.own_params)}


_NO_UNLABELLED = tuple(key for key in SETUP_KEYS if key != "unlabeled_category")

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
    own_params=("linear_classifier",),
    train_extras=("n_samples_per_label",),
    pretrained_from="SCVI",
    has_unlabelled_cells=True,
    has_classifier=True,
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

KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (SCVI, SCANVI)}


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
