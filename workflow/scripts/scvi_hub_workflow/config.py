"""The config model: validation against the JSON schema, defaults, and per-model settings.

The schema (`workflow/schemas/config.schema.yaml`) is the single source of keys, types and
built-in defaults. A model's settings are the schema defaults, overlaid with the config's
`defaults:` block, overlaid with the model's own keys.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"

# Sections of a model entry that take workflow-wide defaults.
DEFAULTED_SECTIONS = ("hvg", "train", "criticism", "card", "publish", "minify")

BUILTIN_DATASETS = ("synthetic-iid", "simulated-atlas")


class ConfigError(ValueError):
    """A config problem, with the dotted key at fault in the message."""


@functools.cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _describe(error: jsonschema.ValidationError) -> str:
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
    """Where a model's data comes from: `builtin`, `url` or `path`."""

    kind: str
    location: str
    sha256: str | None

    @property
    def workflow_path(self) -> str:
        """The file the `dataset` rule reads (built-ins and downloads land in resources/)."""
        if self.kind == "builtin":
            return f"resources/builtin/{self.location}.h5ad"
        if self.kind == "url":
            return f"resources/downloads/{self.sha256.lower()}.h5ad"
        return self.location


def parse_source(source: str, sha256: str | None) -> DatasetSource:
    if source.startswith("builtin:"):
        return DatasetSource("builtin", source.removeprefix("builtin:"), sha256)
    if source.startswith(("http://", "https://")):
        return DatasetSource("url", source, sha256)
    return DatasetSource("path", source, sha256)


def model_settings(config: dict, name: str) -> dict:
    """The complete settings of one model: built-in defaults < `defaults:` < the model's keys."""
    schema = load_schema()
    entry = config["models"][name]
    workflow_defaults = config.get("defaults") or {}
    settings = {"name": name}
    entry_schema = schema["$defs"]["model_entry"]
    for key, sub in entry_schema["properties"].items():
        value = _schema_defaults(sub, schema)
        if key in DEFAULTED_SECTIONS and key in workflow_defaults:
            value = _merge(value, workflow_defaults[key])
        if key in entry:
            value = _merge(value, entry[key])
        settings[key] = value
    settings.setdefault("description", "")
    settings["tissues"] = settings.get("tissues") or []
    return _key_sorted(settings)


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
    source = parse_source(s["dataset"]["source"], s["dataset"].get("sha256"))
    if source.kind == "builtin" and source.location not in BUILTIN_DATASETS:
        problems.append(
            f"{key}.dataset.source: unknown built-in dataset {source.location!r}; "
            f"choose one of {', '.join(BUILTIN_DATASETS)}"
        )
    if source.kind == "url" and not source.sha256:
        problems.append(f"{key}.dataset.sha256: a URL source needs its SHA-256 checksum")
    if source.kind == "path" and not (workdir / source.location).is_file():
        problems.append(f"{key}.dataset.source: file not found: {source.location}")
    if s["publish"]["enabled"] and not s["publish"].get("repo_id"):
        problems.append(f"{key}.publish.repo_id: publishing is enabled but no repo_id is set")
    return problems


def resolve(config: dict, workdir: str | os.PathLike = ".") -> dict[str, dict]:
    """Validate the whole config and return every model's complete settings by name.

    Raises ConfigError naming each offending key before any job runs.
    """
    validate_config(config)
    settings = {name: model_settings(config, name) for name in config["models"]}
    problems = [p for name, s in settings.items() for p in _check_model(name, s, Path(workdir))]
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
    return settings


def dataset_source(settings: dict) -> DatasetSource:
    return parse_source(settings["dataset"]["source"], settings["dataset"].get("sha256"))
