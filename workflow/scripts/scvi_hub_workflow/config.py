"""The config: validation against the JSON schema, defaults, and every model's settings.

The schema (`config.schema.yaml`, package data; `workflow/schemas/` links to it) is the single
source of keys, types, built-in defaults and descriptions (config/README.md's tables are made
from it). A model's settings are the schema defaults, overlaid with the config's `defaults:`
block, overlaid with the model's own keys, then frozen into `settings.ModelSettings`. What a
JSON schema cannot say (rules across keys, what each model class accepts) is checked here too,
before any job runs.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

from .layout import BUILTIN_DATASETS
from .model_kinds import KINDS, owners
from .settings import ModelSettings, build, key_sorted, section_class
from .sources import CELLXGENE_ID, parse_source
from .templates import TemplateError, annotate, expand_templates

# Package data, so a wheel install finds it; workflow/schemas/config.schema.yaml (where Snakemake
# and users look) is a symlink to this file.
SCHEMA_RESOURCE = "config.schema.yaml"


class ConfigError(ValueError):
    """A config problem, with the dotted key at fault in the message."""


@functools.cache
def load_schema() -> dict:
    """The schema, with `model.class` limited to the classes of the model-kind registry."""
    # jsonschema and yaml are imported where used: rule scripts import this package only to
    # read their settings, in job environments that need neither.
    from importlib.resources import files

    import yaml

    schema = yaml.safe_load(files(__package__).joinpath(SCHEMA_RESOURCE).read_text())
    schema["$defs"]["model"]["properties"]["class"]["enum"] = list(KINDS)
    return schema


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


# --- resolving a config ---------------------------------------------------------------------


def _settings_dict(config: dict, name: str) -> dict:
    """The complete settings of one model as a dict: built-in defaults < `defaults:` < the
    model's keys."""
    schema = load_schema()
    entry = config["models"][name]
    workflow_defaults = config.get("defaults") or {}
    settings = {"name": name}
    entry_schema = schema["$defs"]["model_entry"]
    kind = KINDS[entry["model"]["class"]]
    # the class's own defaults, where scvi-tools' differ from the schema's (SCVI's)
    class_defaults = {"model": {"params": kind.param_defaults}, "train": kind.train_defaults}
    for key, sub in entry_schema["properties"].items():
        value = _schema_defaults(sub, schema)
        if key in class_defaults:
            value = _merge(value, class_defaults[key])
        if key in defaulted_sections() and key in workflow_defaults:
            value = _merge(value, workflow_defaults[key])
        if key in entry:
            value = _merge(value, entry[key])
        settings[key] = value
    # only the constructor arguments the class takes (a key it does not take is an error when
    # the model sets it: _check_model)
    params = settings["model"]["params"]
    settings["model"]["params"] = {k: v for k, v in params.items() if k in kind.params}
    settings["description"] = settings.get("description") or ""
    settings["tissues"] = settings.get("tissues") or []
    return key_sorted(settings)


def model_settings(config: dict, name: str) -> ModelSettings:
    """The complete, typed settings of one model (the config is not validated here)."""
    return build(ModelSettings, _settings_dict(config, name))


def section_settings(section: str, values: dict | None = None):
    """One section's settings from `values` over the schema's defaults, validated (for callers
    outside the workflow, e.g. the publish command line)."""
    import jsonschema

    schema = load_schema()
    node = schema["$defs"]["model_entry"]["properties"][section]
    merged = _merge(_schema_defaults(node, schema), values or {})
    sub = {"$defs": schema["$defs"], **schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]}
    errors = list(jsonschema.Draft202012Validator(sub).iter_errors(merged))
    if errors:
        raise ConfigError(f"invalid {section} settings: " + "; ".join(_describe(e) for e in errors))
    return build(section_class(section), merged)


def loader_problems(train: dict) -> list[tuple[str, str]]:
    """(train key, why) for each contradiction among the data-loader keys."""
    problems = []
    if train.get("persistent_workers") and not train.get("num_workers"):
        problems.append(("persistent_workers", "needs num_workers > 0 (no workers to keep)"))
    if train.get("data_on_device"):
        problems += [
            (other, "does not apply with data_on_device (minibatches are drawn on the device)")
            for other in ("num_workers", "load_sparse_tensor")
            if train.get(other)
        ]
    return problems


def _check_model(name: str, s: dict, entry: dict, workdir: Path) -> list[str]:
    """Cross-key rules a JSON schema cannot express (`s`: the model's settings, `entry`: its
    keys as written)."""
    problems = []
    key = f"models.{name}"
    model, setup = s["model"], s["model"]["setup"]
    kind = KINDS[model["class"]]
    for setup_key, what in kind.required_setup.items():
        if setup.get(setup_key) is None:
            problems.append(f"{key}.model.setup.{setup_key}: {kind.name} needs {what}")
    if model.get("from_scvi") and not kind.pretrained_from:
        problems.append(
            f"{key}.model.from_scvi: only {_either(owners('pretrained_from'))} can start from "
            "an SCVI model"
        )
    for param in entry["model"].get("params") or {}:
        if param not in kind.params:
            taking = _either(owners("params", param))
            problems.append(
                f"{key}.model.params.{param}: {kind.name} does not take it; only {taking} takes it"
            )
    for param, allowed in kind.param_choices.items():
        value = model["params"].get(param)
        if value is not None and value not in allowed:
            problems.append(
                f"{key}.model.params.{param}: {kind.name} takes {_either(list(allowed))}, "
                f"not {value!r}"
            )
    for setup_key, value in setup.items():
        if value is not None and setup_key not in kind.setup_keys:
            using = _either(owners("setup_keys", setup_key))
            problems.append(
                f"{key}.model.setup.{setup_key}: {kind.name} does not use it; only {using} uses it"
            )
    if model.get("every_cell_labelled") and not kind.has_unlabelled_cells:
        problems.append(
            f"{key}.model.every_cell_labelled: only {_either(owners('has_unlabelled_cells'))} "
            "uses it"
        )
    for new, columns in (s["dataset"].get("join_columns") or {}).items():
        if new in columns:
            problems.append(
                f"{key}.dataset.join_columns.{new}: the new column cannot be one it joins"
            )
    problems += _mudata_problems(key, s["dataset"], setup)
    if s["hvg"].get("batch_key") and not s["hvg"]["batch_aware"]:
        problems.append(
            f"{key}.hvg.batch_key: genes are ranked per batch only with hvg.batch_aware: true"
        )
    train = s["train"]
    if train["early_stopping"] and train["train_size"] >= 1:
        problems.append(
            f"{key}.train.train_size: 1 leaves no validation cells, which "
            f"{key}.train.early_stopping needs; lower train_size or set early_stopping: false"
        )
    if train["reduce_lr_on_plateau"] and train["train_size"] >= 1:
        problems.append(
            f"{key}.train.train_size: 1 leaves no validation cells, which "
            f"{key}.train.reduce_lr_on_plateau needs"
        )
    for plan in (train, train.get("scvi_plan") or {}):
        if plan.get("kl_warmup_epochs") is not None and plan.get("kl_warmup_steps") is not None:
            where = f"{key}.train" + (".scvi_plan" if plan is not train else "")
            problems.append(
                f"{where}.kl_warmup_steps: set the KL warm-up in epochs or in steps, not both "
                f"({where}.kl_warmup_epochs)"
            )
    if train.get("scvi_plan") and model.get("from_scvi") is not True:
        problems.append(
            f"{key}.train.scvi_plan: only a model pre-trained here (model.from_scvi: true) has "
            "an SCVI pre-training phase"
        )
    problems += [f"{key}.train.{k}: {why}" for k, why in loader_problems(train)]
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


# What two models must share for one to start from the other's trained model: the same cells
# and genes (the dataset and HVG steps' settings; subsampling is seeded by train.seed).
SHARED_WITH_PRETRAINED = ("dataset", "hvg")


def _check_pretrained_model(name: str, settings: dict[str, dict]) -> list[str]:
    """`from_scvi: <model>`: that model exists, is of the class this one starts from, and is
    trained on the same data and HVGs, with the setup keys both classes read."""
    s = settings[name]
    other = s["model"]["from_scvi"]
    if not isinstance(other, str):
        return []
    key = f"models.{name}.model.from_scvi"
    kind = KINDS[s["model"]["class"]]
    if other not in settings:
        return [f"{key}: no model {other!r} in this config ({', '.join(sorted(settings))})"]
    o = settings[other]
    if not kind.pretrained_from or o["model"]["class"] != kind.pretrained_from:
        return [f"{key}: {other!r} is a {o['model']['class']} model, not {kind.pretrained_from}"]
    if o["model"]["from_scvi"]:
        return [f"{key}: {other!r} itself starts from another model"]
    base = KINDS[kind.pretrained_from]
    differ = [section for section in SHARED_WITH_PRETRAINED if s[section] != o[section]]
    if s["train"]["seed"] != o["train"]["seed"]:
        differ.append("train.seed")
    # the keys this class sets itself on top of the pre-trained model (its labels) aside
    own_setup = [k for k in base.setup_keys if k not in kind.required_setup]
    for part, keys in (("setup", own_setup), ("params", base.params)):
        mine, theirs = s["model"][part], o["model"][part]
        differ += [f"model.{part}.{k}" for k in keys if mine.get(k) != theirs.get(k)]
    if differ:
        return [
            f"{key}: models {name!r} and {other!r} must be trained on the same data and HVGs, "
            f"but their {', '.join(differ)} differ (models.{name} vs models.{other})"
        ]
    return []


def _mudata_problems(key: str, dataset: dict, setup: dict) -> list[str]:
    """A MuData source must be a file; its protein modality needs the obsm entry to fill."""
    mudata = dataset.get("mudata")
    if not mudata:
        return []
    problems = []
    if dataset["source"].startswith(("builtin:", "cellxgene:")):
        problems.append(
            f"{key}.dataset.mudata: the source {dataset['source']!r} is not a MuData file; "
            "name a .h5mu path or URL"
        )
    if mudata.get("protein") and not setup.get("protein_expression_obsm_key"):
        problems.append(
            f"{key}.dataset.mudata.protein: set model.setup.protein_expression_obsm_key, the "
            "obsm entry the proteins are written to (TOTALVI)"
        )
    if mudata.get("protein") and setup.get("protein_names_uns_key"):
        problems.append(
            f"{key}.model.setup.protein_names_uns_key: with dataset.mudata.protein the "
            "protein names are the modality's var names; leave it unset"
        )
    return problems


def _either(names: list[str]) -> str:
    return " or ".join(names)


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
    problems = [
        p
        for name, s in settings.items()
        for p in _check_model(name, s, config["models"][name], Path(workdir))
    ]
    problems += [p for name in settings for p in _check_pretrained_model(name, settings)]
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(annotate(f"invalid configuration:\n{lines}", origin))
    return {name: build(ModelSettings, s) for name, s in settings.items()}
