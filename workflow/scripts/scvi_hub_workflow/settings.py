"""A model's typed settings, and the part of them each rule declares it reads.

One frozen dataclass per config section; their fields are the schema's keys (`ModelSpec.
model_class` is the key `class`), their values come only from the resolved config (config.py),
so no default is written twice.

A rule names the keys it reads next to itself (`settings_of("model", "train", ...)` in
workflow/rules/common.smk); they travel as stable JSON text (`to_text`: sorted keys, so a
re-ordered config re-runs nothing) and come back in the job as a `ModelSettings` holding just
those keys (`from_text`). Reading a key the rule did not declare raises `SettingNotDeclared`
naming it, so a rule cannot depend on a setting without re-running when it changes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import field
from typing import Any

from .model_kinds import ModelKind, kind_of
from .sources import DatasetSource, parse_source


class SettingNotDeclared(AttributeError):
    """A job read a setting its rule does not declare in `settings_of(...)`."""


class _NotDeclared:
    """The value of a setting the rule did not declare."""

    __slots__ = ("key",)

    def __init__(self, key: str):
        self.key = key

    def __repr__(self) -> str:
        return f"<{self.key}: not declared>"

    def __eq__(self, other) -> bool:
        return isinstance(other, _NotDeclared) and other.key == self.key

    __hash__ = None


class Section:
    """Base of the settings dataclasses: an undeclared setting raises when it is read."""

    def __getattribute__(self, name: str):
        value = object.__getattribute__(self, name)
        if type(value) is _NotDeclared:
            raise SettingNotDeclared(
                f"setting {value.key!r} is not among those this rule declares: add it to the "
                "rule's settings_of(...) in workflow/rules/"
            )
        return value

    def _values(self) -> tuple:
        return tuple(object.__getattribute__(self, f.name) for f in dataclasses.fields(self))

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self._values() == other._values()

    __hash__ = None

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={object.__getattribute__(self, f.name)!r}" for f in dataclasses.fields(self)
        )
        return f"{type(self).__name__}({fields})"

    def replace(self, **changes):
        """A copy with `changes` (dataclasses.replace reads every field, declared or not)."""
        values = {f.name: object.__getattribute__(self, f.name) for f in dataclasses.fields(self)}
        return type(self)(**(values | changes))


# eq and repr come from Section (they must not read undeclared settings)
section = functools.partial(dataclasses.dataclass, frozen=True, eq=False, repr=False)


@section
class DatasetSettings(Section):
    """`dataset:` where the data is and which part of it holds the counts."""

    source: str
    sha256: str | None
    checksum: str | None
    counts: str
    subset: dict | None  # obs column -> value or list of values
    subsample_cells: int | None
    gene_names: str | None
    join_columns: dict | None  # new obs column -> the obs columns joined with "_"
    mudata: dict | None  # a MuData source: {rna: modality, protein: modality or None}

    @property
    def location(self) -> DatasetSource:
        return parse_source(self.source, self.sha256, self.checksum)


@section
class Setup(Section):
    """`model.setup:` the arguments of `setup_anndata`; the one list of those keys."""

    layer: str | None
    batch_key: str | None
    labels_key: str | None
    unlabeled_category: str | None
    size_factor_key: str | None
    categorical_covariate_keys: tuple[str, ...] | None
    continuous_covariate_keys: tuple[str, ...] | None
    protein_expression_obsm_key: str | None  # TOTALVI: the obsm entry of protein counts
    protein_names_uns_key: str | None  # TOTALVI: the uns entry of their names (an array)

    def setup_anndata_kwargs(self, kind: ModelKind) -> dict:
        """Arguments for `setup_anndata` of the class `kind`, in the order the cards record."""
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return kind.setup_anndata_kwargs(values)

    def obs_columns(self) -> list[tuple[str, str]]:
        """(setup key, obs column) for every obs column the model reads."""
        single = ("batch_key", "labels_key", "size_factor_key")
        many = ("categorical_covariate_keys", "continuous_covariate_keys")
        pairs = [(key, getattr(self, key)) for key in single if getattr(self, key) is not None]
        pairs += [(key, column) for key in many for column in getattr(self, key) or ()]
        return pairs

    def categorical_columns(self) -> list[str]:
        """obs columns the model treats as categories (batch, labels, categorical covariates)."""
        columns = [self.batch_key, self.labels_key, *(self.categorical_covariate_keys or ())]
        return [c for c in columns if c]


@section
class ModelSpec(Section):
    """`model:` the class, its constructor arguments and its `setup_anndata` arguments."""

    model_class: str = field(metadata={"key": "class"})
    from_scvi: bool | str  # true: pre-train here; a model name: start from that model
    every_cell_labelled: bool
    params: dict  # constructor arguments the config sets (key-sorted); open-ended on purpose
    setup: Setup

    @property
    def kind(self) -> ModelKind:
        """The class's entry in the model-kind registry."""
        return kind_of(self.model_class)

    @property
    def pretrained_model(self) -> str | None:
        """The model of the config this one starts from (`from_scvi: <name>`), or None."""
        return self.from_scvi if isinstance(self.from_scvi, str) else None


@section
class HvgSettings(Section):
    """`hvg:` highly variable gene selection."""

    n_top_genes: int | None
    flavor: str
    batch_aware: bool
    batch_key: str | None  # null: model.setup.batch_key
    span: float

    def batch_column(self, setup_batch_key: str | None) -> str | None:
        """The obs column genes are ranked per batch of: none unless batch-aware."""
        return (self.batch_key or setup_batch_key) if self.batch_aware else None


@section
class TrainSettings(Section):
    """`train:` the training loop and where it runs."""

    max_epochs: int | None
    scvi_max_epochs: int | None
    early_stopping: bool
    early_stopping_patience: int
    batch_size: int
    train_size: float
    learning_rate: float
    kl_warmup_epochs: int | None
    kl_warmup_steps: int | None
    weight_decay: float | None
    reduce_lr_on_plateau: bool
    lr_factor: float | None
    lr_patience: int | None
    keep_best_epoch: bool
    scvi_plan: dict | None  # the pre-training phase's own plan keys (model.from_scvi: true)
    n_samples_per_label: int | None
    seed: int
    accelerator: str
    allow_cpu_fallback: bool
    pin_memory: bool
    num_workers: int
    persistent_workers: bool
    data_on_device: bool
    load_sparse_tensor: bool


@section
class CriticismSettings(Section):
    """`criticism:` the posterior predictive check, the integration metrics and the query
    mapping check."""

    n_samples: int
    batch_size: int
    alpha: float
    top_n: int
    min_cells: int
    cluster_resolution: float
    integration_max_cells: int
    query_check: str | bool  # "auto", true or false
    query_batch: str | None
    query_epochs: int
    query_check_max_cells: int
    deconvolution_spots: int
    deconvolution_epochs: int


@section
class CardSettings(Section):
    """`card:` what the model card says beyond the model itself."""

    license: str
    training_data_url: str | None
    training_code_url: str | None
    references: str | None
    modality: str


@section
class PublishSettings(Section):
    """`publish:` where and whether to publish (the token never travels in settings)."""

    enabled: bool
    repo_id: str | None
    private: bool
    collection: str | None
    verify: bool


@section
class ModelSettings(Section):
    """Every setting of one model entry, defaults applied (or, in a job, those its rule
    declares)."""

    name: str
    description: str
    tissues: tuple[str, ...]
    dataset: DatasetSettings
    model: ModelSpec
    hvg: HvgSettings
    train: TrainSettings
    criticism: CriticismSettings
    card: CardSettings
    publish: PublishSettings
    minify: bool

    @property
    def published_folder(self) -> str:
        """The model folder published to the Hub, whose data hold the latent posterior that
        the criticism and report read: `minified` (scvi-hub's form, made by the minify rule),
        or `model` (the training data: `minify: false`, or a class that cannot be minified)."""
        return "minified" if self.minify and self.model.kind.can_minify else "model"


# --- the keys a rule declares, as text and back ---------------------------------------------


def as_dict(settings: Section) -> dict:
    """Nested plain dict of a settings dataclass, keyed as in the config."""
    out = {}
    for f in dataclasses.fields(settings):
        value = object.__getattribute__(settings, f.name)
        if type(value) is _NotDeclared:
            continue
        out[_key(f)] = as_dict(value) if isinstance(value, Section) else _plain(value)
    return out


def select(settings: ModelSettings, keys: typing.Iterable[str]) -> dict:
    """The declared `keys` of `settings` (a section, `section.key`, or a top-level key such as
    `name`) as a nested dict keyed as in the config."""
    data = as_dict(settings)
    chosen: dict = {}
    for key in keys:
        *path, last = key.split(".")
        source, target = data, chosen
        for part in path:
            source, target = source[part], target.setdefault(part, {})
        if last not in source:
            raise KeyError(f"no setting {key!r}")
        target[last] = source[last]
    return chosen


def to_text(settings: ModelSettings, keys: typing.Iterable[str]) -> str:
    """Stable text of the declared keys of `settings` (sorted keys), for Snakemake params."""
    return json.dumps(select(settings, keys), sort_keys=True)


def from_text(text: str) -> ModelSettings:
    """The settings `to_text` wrote: a ModelSettings holding the declared keys only."""
    return build(ModelSettings, json.loads(text), partial=True)


def build(cls: type, data: dict, *, partial: bool = False, where: str = ""):
    """A settings dataclass from its (resolved) dict; unknown keys are an error. With
    `partial`, keys missing from `data` are left undeclared instead of None."""
    hints = typing.get_type_hints(cls)
    known = {_key(f) for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        from .config import ConfigError

        raise ConfigError(f"{cls.__name__} has no setting {', '.join(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = _key(f)
        path = f"{where}.{key}" if where else key
        if partial and key not in data:
            kwargs[f.name] = _NotDeclared(path)
            continue
        value = data.get(key)
        if dataclasses.is_dataclass(hints[f.name]):
            value = build(hints[f.name], value, partial=partial, where=path)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, dict):
            value = key_sorted(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def key_sorted(value: Any) -> Any:
    # Snakemake compares rule params by their text: sorting keys means that reordering keys
    # in a config file does not re-run (and retrain) anything.
    if isinstance(value, dict):
        return {k: key_sorted(value[k]) for k in sorted(value)}
    return value


def section_class(section_name: str) -> type:
    """The dataclass of one section of a model entry (e.g. "publish" -> PublishSettings)."""
    return typing.get_type_hints(ModelSettings)[section_name]


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
