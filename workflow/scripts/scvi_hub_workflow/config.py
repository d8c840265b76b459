"""The config model: validation against the JSON schema, defaults, and typed per-model settings.

The schema (`config.schema.yaml`, package data; `workflow/schemas/` links to it) is the single
source of keys, types and built-in defaults. A model's settings are the schema defaults,
overlaid with the config's `defaults:` block, overlaid with the model's own keys, then frozen
into the dataclasses below (one per config section; their fields are the schema's keys, their
values come only from the resolved dict, so no default is written twice).

Each rule gets only the settings of its step (`step_settings`), as stable text (`to_text`):
Snakemake compares params by their text, so the same settings in another key order re-run
nothing. The rule script turns the text back into the object with `from_text`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import BUILTIN_DATASETS
from .templates import TemplateError, annotate, expand_templates

# Package data, so a wheel install finds it; workflow/schemas/config.schema.yaml (where Snakemake
# and users look) is a symlink to this file.
SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(ValueError):
    """A config problem, with the dotted key at fault in the message."""


@functools.cache
def load_schema() -> dict:
    # jsonschema and yaml are imported where used: rule scripts import this module only to
    # read their settings (from_text), in job environments that need neither.
    from importlib.resources import files

    import yaml

    return yaml.safe_load(files(__package__).joinpath(SCHEMA_RESOURCE).read_text())


def defaulted_sections() -> tuple[str, ...]:
    """Sections of a model entry that take workflow-wide defaults (the schema's `defaults:`)."""
    return tuple(load_schema()["properties"]["defaults"]["properties"])


def _describe(error) -> str:
    """One line per schema violation, naming the key in the user's terms."""
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        return f"{where}: unknown key {', '.join(repr(e) for e in extra)}{hint}"
    return f"{where}: {error.message}"


def validate_config(config: dict) -> None:
    """Validate against the schema; raise ConfigError listing every violation with its key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = "\n".join(f"  - config key {_describe(e)}" for e in errors)
        raise ConfigError(f"invalid configuration:\n{lines}")


def _schema_defaults(node: dict, schema: dict) -> Any:
    """The built-in defaults of a schema node (following $ref), as a nested dict."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = {**schema["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    if "properties" in node:
        out = {}
        for key, sub in node["properties"].items():
            value = _schema_defaults(sub, schema)
            if value is not None or "default" in sub:
                out[key] = value
        return out
    return copy.deepcopy(node.get("default"))


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return copy.deepcopy(override)


@dataclass(frozen=True)
class DatasetSource:
    """Where a model's data comes from: `builtin`, `url`, `cellxgene` or `path`."""

    kind: str
    location: str
    sha256: str | None
    checksum: str | None = None  # `md5:<hex>` or `sha256:<hex>`

    @property
    def digest(self) -> str | None:
        """The hex digest naming a URL's download: the sha256 if given, else the checksum's."""
        if self.sha256:
            return self.sha256.lower()
        if self.checksum:
            return self.checksum.partition(":")[2].lower()
        return None

    @property
    def workflow_path(self) -> str:
        """The file the `dataset` rule reads (built-ins and downloads land in resources/)."""
        if self.kind == "builtin":
            return f"resources/builtin/{self.location}.h5ad"
        if self.kind == "url":
            return f"resources/downloads/{self.digest}.h5ad"
        if self.kind == "cellxgene":
            return f"resources/cellxgene/{self.location}.h5ad"
        return self.location

    @property
    def record_path(self) -> str | None:
        """What the download resolved (CELLxGENE: version id, URL, size, sha256), or None."""
        if self.kind == "cellxgene":
            return f"resources/cellxgene/{self.location}.json"
        return None


CELLXGENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


def parse_source(source: str, sha256: str | None, checksum: str | None = None) -> DatasetSource:
    if source.startswith("builtin:"):
        return DatasetSource("builtin", source.removeprefix("builtin:"), sha256, checksum)
    if source.startswith("cellxgene:"):
        return DatasetSource("cellxgene", source.removeprefix("cellxgene:"), sha256, checksum)
    if source.startswith(("http://", "https://")):
        return DatasetSource("url", source, sha256, checksum)
    return DatasetSource("path", source, sha256, checksum)


# --- typed settings: one frozen dataclass per config section -------------------------------
# Field names are the schema's keys (`ModelSpec.model_class` is the key `class`). A key the
# schema gives no default and the config leaves out is None.


@dataclass(frozen=True)
class DatasetSettings:
    """`dataset:` where the data is and which part of it holds the counts."""

    source: str
    sha256: str | None
    checksum: str | None
    counts: str
    subset: dict | None  # obs column -> value or list of values
    subsample_cells: int | None
    gene_names: str | None

    @property
    def location(self) -> DatasetSource:
        return parse_source(self.source, self.sha256, self.checksum)


@dataclass(frozen=True)
class Setup:
    """`model.setup:` the arguments of `setup_anndata`; the one list of those keys."""

    layer: str | None
    batch_key: str | None
    labels_key: str | None
    unlabeled_category: str | None
    size_factor_key: str | None
    categorical_covariate_keys: tuple[str, ...] | None
    continuous_covariate_keys: tuple[str, ...] | None

    def setup_anndata_kwargs(self, model_class: str) -> dict:
        """Arguments for `setup_anndata` of `model_class`, in the order the cards record them;
        `unlabeled_category` exists only for SCANVI."""
        kwargs = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if model_class != "SCANVI":
            kwargs.pop("unlabeled_category")
            return kwargs
        first = {k: kwargs.pop(k) for k in ("labels_key", "unlabeled_category")}
        return first | kwargs

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


@dataclass(frozen=True)
class ModelSpec:
    """`model:` the class, its constructor arguments and its `setup_anndata` arguments."""

    model_class: str = field(metadata={"key": "class"})
    from_scvi: bool
    every_cell_labelled: bool
    params: dict  # constructor arguments the config sets (key-sorted); open-ended on purpose
    setup: Setup


@dataclass(frozen=True)
class HvgSettings:
    """`hvg:` highly variable gene selection."""

    n_top_genes: int | None
    flavor: str
    batch_aware: bool


@dataclass(frozen=True)
class TrainSettings:
    """`train:` the training loop and where it runs."""

    max_epochs: int | None
    scvi_max_epochs: int | None
    early_stopping: bool
    early_stopping_patience: int
    batch_size: int
    train_size: float
    learning_rate: float
    n_samples_per_label: int | None
    seed: int
    accelerator: str
    allow_cpu_fallback: bool


@dataclass(frozen=True)
class CriticismSettings:
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


@dataclass(frozen=True)
class CardSettings:
    """`card:` what the model card says beyond the model itself."""

    license: str
    training_data_url: str | None
    training_code_url: str | None
    references: str | None
    modality: str


@dataclass(frozen=True)
class PublishSettings:
    """`publish:` where and whether to publish (the token never travels in settings)."""

    enabled: bool
    repo_id: str | None
    private: bool
    collection: str | None
    verify: bool


@dataclass(frozen=True)
class ModelSettings:
    """Every setting of one model entry, defaults applied."""

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


# --- what each rule gets: only the settings its step reads ---------------------------------
# A rule's params are exactly one of these, so changing e.g. `criticism:` re-runs the
# criticism and what follows, never the training.


@dataclass(frozen=True)
class DatasetStep:
    name: str
    dataset: DatasetSettings
    setup: Setup
    seed: int  # train.seed: also seeds `dataset.subsample_cells`
    model_class: str  # model.class and model.every_cell_labelled: what the labels must hold
    every_cell_labelled: bool

    @classmethod
    def of(cls, s: ModelSettings) -> DatasetStep:
        m = s.model
        return cls(s.name, s.dataset, m.setup, s.train.seed, m.model_class, m.every_cell_labelled)


@dataclass(frozen=True)
class HvgStep:
    hvg: HvgSettings
    setup: Setup

    @classmethod
    def of(cls, s: ModelSettings) -> HvgStep:
        return cls(s.hvg, s.model.setup)


@dataclass(frozen=True)
class TrainStep:
    name: str
    model: ModelSpec
    train: TrainSettings

    @classmethod
    def of(cls, s: ModelSettings) -> TrainStep:
        return cls(s.name, s.model, s.train)


@dataclass(frozen=True)
class CriticismStep:
    criticism: CriticismSettings
    setup: Setup
    seed: int  # train.seed

    @classmethod
    def of(cls, s: ModelSettings) -> CriticismStep:
        return cls(s.criticism, s.model.setup, s.train.seed)


@dataclass(frozen=True)
class IntegrationStep:
    """The integration metrics: cells scored, what the model was set up with."""

    max_cells: int  # criticism.integration_max_cells
    setup: Setup
    seed: int  # train.seed: seeds the subsample of cells
    model_class: str

    @classmethod
    def of(cls, s: ModelSettings) -> IntegrationStep:
        m = s.model
        return cls(s.criticism.integration_max_cells, m.setup, s.train.seed, m.model_class)


@dataclass(frozen=True)
class QueryCheckStep:
    """The query mapping check: trains a reference with the model's own recipe. Only the
    `criticism.query_*` keys: another criticism key must not retrain the reference."""

    name: str
    model: ModelSpec
    train: TrainSettings
    query_check: str | bool  # criticism.query_check: "auto", true or false
    query_batch: str | None
    query_epochs: int
    query_check_max_cells: int

    @classmethod
    def of(cls, s: ModelSettings) -> QueryCheckStep:
        c = s.criticism
        return cls(
            s.name,
            s.model,
            s.train,
            c.query_check,
            c.query_batch,
            c.query_epochs,
            c.query_check_max_cells,
        )


@dataclass(frozen=True)
class CardStep:
    name: str
    description: str
    tissues: tuple[str, ...]
    card: CardSettings
    setup: Setup

    @classmethod
    def of(cls, s: ModelSettings) -> CardStep:
        return cls(s.name, s.description, s.tissues, s.card, s.model.setup)


@dataclass(frozen=True)
class ReportStep:
    """The report's rules (figures, label_transfer): what the model was set up with."""

    model_class: str
    setup: Setup
    seed: int  # train.seed: seeds the UMAP and the subsamples of large figures

    @classmethod
    def of(cls, s: ModelSettings) -> ReportStep:
        return cls(s.model.model_class, s.model.setup, s.train.seed)


# The step names rules ask for (`settings_of("train")`) and the class of their settings;
# publishing needs its own section only.
STEPS: dict[str, type] = {
    "dataset": DatasetStep,
    "hvg": HvgStep,
    "train": TrainStep,
    "criticism": CriticismStep,
    "query_check": QueryCheckStep,
    "card": CardStep,
    "report": ReportStep,
    "integration": IntegrationStep,
    "publish": PublishSettings,
}


def step_settings(settings: ModelSettings, step: str):
    """The settings the rule of `step` reads (one of the `*Step` classes, or PublishSettings)."""
    cls = STEPS[step]
    return settings.publish if cls is PublishSettings else cls.of(settings)


def to_text(settings) -> str:
    """Stable text of a step's settings (sorted keys), for Snakemake params."""
    step = next(name for name, cls in STEPS.items() if type(settings) is cls)
    return json.dumps({"step": step, "settings": as_dict(settings)}, sort_keys=True)


def from_text(text: str):
    """The settings object `to_text` wrote."""
    data = json.loads(text)
    return build(STEPS[data["step"]], data["settings"])


def as_dict(settings) -> dict:
    """Nested plain dict of a settings dataclass, keyed as in the config."""
    return {
        _key(f): (as_dict(value) if dataclasses.is_dataclass(value) else _plain(value))
        for f in dataclasses.fields(settings)
        for value in [getattr(settings, f.name)]
    }


def build(cls: type, data: dict):
    """A settings dataclass from its (resolved) dict; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    known = {_key(f) for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no setting {', '.join(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        value = data.get(_key(f))
        if dataclasses.is_dataclass(hints[f.name]):
            value = build(hints[f.name], value)
        elif isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, dict):
            value = _key_sorted(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def section_settings(section: str, values: dict | None = None):
    """One section's settings class from `values` over the schema's defaults, validated
    (for callers outside the workflow, e.g. the publish command line)."""
    import jsonschema

    schema = load_schema()
    node = schema["$defs"]["model_entry"]["properties"][section]
    merged = _merge(_schema_defaults(node, schema), values or {})
    sub = {"$defs": schema["$defs"], **schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]}
    errors = list(jsonschema.Draft202012Validator(sub).iter_errors(merged))
    if errors:
        raise ConfigError(f"invalid {section} settings: " + "; ".join(_describe(e) for e in errors))
    cls = typing.get_type_hints(ModelSettings)[section]
    return build(cls, merged)


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _plain(value: typing.Any) -> typing.Any:
    return list(value) if isinstance(value, tuple) else value


# --- resolving a config ---------------------------------------------------------------------


def _settings_dict(config: dict, name: str) -> dict:
    """The complete settings of one model as a dict: built-in defaults < `defaults:` < the
    model's keys."""
    schema = load_schema()
    entry = config["models"][name]
    workflow_defaults = config.get("defaults") or {}
    settings = {"name": name}
    entry_schema = schema["$defs"]["model_entry"]
    for key, sub in entry_schema["properties"].items():
        value = _schema_defaults(sub, schema)
        if key in defaulted_sections() and key in workflow_defaults:
            value = _merge(value, workflow_defaults[key])
        if key in entry:
            value = _merge(value, entry[key])
        settings[key] = value
    settings["description"] = settings.get("description") or ""
    settings["tissues"] = settings.get("tissues") or []
    return _key_sorted(settings)


def model_settings(config: dict, name: str) -> ModelSettings:
    """The complete, typed settings of one model (the config is not validated here)."""
    return build(ModelSettings, _settings_dict(config, name))


def _key_sorted(value: Any) -> Any:
    # Snakemake compares rule params by their text: sorting keys means that reordering keys
    # in a config file does not re-run (and retrain) anything.
    if isinstance(value, dict):
        return {k: _key_sorted(value[k]) for k in sorted(value)}
    return value


def _check_model(name: str, s: dict, workdir: Path) -> list[str]:
    """Cross-key rules a JSON schema cannot express."""
    problems = []
    key = f"models.{name}"
    model, setup = s["model"], s["model"]["setup"]
    scanvi = model["class"] == "SCANVI"
    if scanvi and not setup.get("labels_key"):
        problems.append(f"{key}.model.setup.labels_key: SCANVI needs a labels column")
    if scanvi and setup.get("unlabeled_category") is None:
        problems.append(f"{key}.model.setup.unlabeled_category: SCANVI needs the unlabelled label")
    if not scanvi:
        if model.get("from_scvi"):
            problems.append(f"{key}.model.from_scvi: only SCANVI can start from an SCVI model")
        if "linear_classifier" in model.get("params", {}):
            problems.append(f"{key}.model.params.linear_classifier: only SCANVI has a classifier")
        if setup.get("unlabeled_category") is not None:
            problems.append(f"{key}.model.setup.unlabeled_category: only SCANVI uses it")
        if model.get("every_cell_labelled"):
            problems.append(f"{key}.model.every_cell_labelled: only SCANVI uses it")
    train = s["train"]
    if train["early_stopping"] and train["train_size"] >= 1:
        problems.append(
            f"{key}.train.train_size: 1 leaves no validation cells, which "
            f"{key}.train.early_stopping needs; lower train_size or set early_stopping: false"
        )
    dataset = s["dataset"]
    source = parse_source(dataset["source"], dataset.get("sha256"), dataset.get("checksum"))
    if source.kind == "builtin" and source.location not in BUILTIN_DATASETS:
        problems.append(
            f"{key}.dataset.source: unknown built-in dataset {source.location!r}; "
            f"choose one of {', '.join(BUILTIN_DATASETS)}"
        )
    if source.kind == "url" and not source.digest:
        problems.append(
            f"{key}.dataset.sha256: a URL source needs its checksum: `sha256: <hex>` or "
            "`checksum: md5:<hex>` (as Zenodo publishes) or `checksum: sha256:<hex>`"
        )
    if source.kind == "cellxgene" and not CELLXGENE_ID.match(source.location):
        problems.append(
            f"{key}.dataset.source: {source.location!r} is not a CELLxGENE Discover dataset or "
            "dataset version id (cellxgene:<uuid>)"
        )
    checksum = dataset.get("checksum") or ""
    if (
        source.sha256
        and checksum.lower().startswith("sha256:")
        and checksum.partition(":")[2].lower() != source.sha256.lower()
    ):
        problems.append(f"{key}.dataset.checksum: differs from dataset.sha256")
    if source.kind == "path" and not (workdir / source.location).is_file():
        problems.append(f"{key}.dataset.source: file not found: {source.location}")
    if s["publish"]["enabled"] and not s["publish"].get("repo_id"):
        problems.append(f"{key}.publish.repo_id: publishing is enabled but no repo_id is set")
    return problems


def resolve(config: dict, workdir: str | os.PathLike = ".") -> dict[str, ModelSettings]:
    """Validate the whole config and return every model's complete settings by name.

    Raises ConfigError naming each offending key before any job runs.
    """
    validate_config(config)
    try:
        config, origin = expand_templates(config)
    except TemplateError as error:
        raise ConfigError(f"invalid configuration:\n  - {error}") from None
    try:
        validate_config(config)  # the expanded models, like hand-written ones
    except ConfigError as error:
        raise ConfigError(annotate(str(error), origin)) from None
    settings = {name: _settings_dict(config, name) for name in config["models"]}
    problems = [p for name, s in settings.items() for p in _check_model(name, s, Path(workdir))]
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(annotate(f"invalid configuration:\n{lines}", origin))
    return {name: build(ModelSettings, s) for name, s in settings.items()}
