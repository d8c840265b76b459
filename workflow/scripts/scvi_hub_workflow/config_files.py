"""Reading the workflow's YAML config files strictly.

PyYAML keeps the last of two equal keys in a mapping, so a model pasted twice under `models:`
silently trains one of them. Here a duplicate key, a syntax error or a missing file is a
ConfigError naming the file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError
from .layout import OUTPUT_FOLDERS


class _DuplicateKey(yaml.MarkedYAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<:` merges may override, as YAML intends
                key = self.construct_object(key_node, deep=True)
                if key in first_line:
                    raise _DuplicateKey(
                        problem=f"duplicate key {key!r} (first set on line {first_line[key]})",
                        problem_mark=key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping
)


def read_config_file(path: str | os.PathLike) -> Any:
    """The content of a YAML (or JSON) config file; ConfigError naming file and line if bad."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as error:
        raise ConfigError(f"config file {path} cannot be read: {error.strerror}") from None
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = error.problem or "syntax error"
        if not isinstance(error, _DuplicateKey):
            problem = f"not valid YAML: {problem}"
        raise ConfigError(f"config file {where}: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path}: not valid YAML: {error}") from None


def check_config_files(paths: list[str | os.PathLike], config: dict) -> None:
    """Every config file the run read is strict YAML, and together they list some models.

    Snakemake has already loaded (and merged) the files into ``config``; this names the file
    and line of what its loader lets through, the files when no model is listed, and a target
    that Snakemake took for a config file.
    """
    for path in paths:
        check_not_a_target(path)
    for path in paths:
        read_config_file(path)
    models = config.get("models")
    if (not isinstance(models, dict) or not models) and not config.get("templates"):
        files = ", ".join(str(p) for p in paths) or "no config file"
        state = "is empty" if "models" in config else "is missing"
        given = [str(p) for p in paths] != ["config/config.yaml"]
        note = (
            " (a file given with --configfile replaces config/config.yaml, it is not merged "
            "into it)"
            if given
            else ""
        )
        raise ConfigError(
            f"config key models {state} in {files}: list at least one model under `models:`{note}"
        )


def check_not_a_target(path: str | os.PathLike) -> None:
    """A file given as a config file that is one of this workflow's outputs is a target written
    after ``--configfile`` (which takes every word up to the next option): say so and how to
    write it. A target that does not exist yet never gets here: Snakemake fails opening it."""
    given = Path(path)
    try:
        relative = given.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        relative = given
    if len(relative.parts) > 1 and relative.parts[0] in OUTPUT_FOLDERS:
        raise ConfigError(
            f"--configfile was given {path}, an output of this workflow ({relative.parts[0]}/), "
            "not a config file: Snakemake reads every word after --configfile as another "
            "config file, so a target written after it is read as one. End the config files "
            f"with `--` before the target (`snakemake --configfile my.yaml -- {relative}`) or "
            "put the target first"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m scvi_hub_workflow.config_files FILE...``: check config files before a run.

    Snakemake reads ``--configfile`` files before any workflow code runs, and names neither the
    file nor the line of a missing file or a YAML error; this does.
    """
    import sys

    paths = sys.argv[1:] if argv is None else argv
    try:
        for path in paths:
            read_config_file(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
