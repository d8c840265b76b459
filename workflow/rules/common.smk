import re
import sys
from pathlib import Path

# The rules' logic lives in the scvi_hub_workflow package next to the rule scripts.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))

from scvi_hub_workflow import config as config_model
from scvi_hub_workflow.hub import HUB_FILES

# Validate the whole config now, before any job runs; errors name the offending key.
try:
    MODELS = config_model.resolve(config)
except config_model.ConfigError as error:
    raise WorkflowError(str(error)) from None

# Publishing needs a token before anything expensive starts (it is read from the
# environment inside the publish job, never passed through params).
_publishing = {name: s for name, s in MODELS.items() if s["publish"]["enabled"]}
if _publishing:
    from scvi_hub_workflow.publish import require_token_for

    try:
        require_token_for(_publishing)
    except ValueError as error:
        raise WorkflowError(str(error)) from None


wildcard_constraints:
    model="|".join(sorted(map(re.escape, MODELS))) or "(?!)",
    name="|".join(config_model.BUILTIN_DATASETS),
    sha256="[0-9a-f]{64}",


def publish_settings(wildcards):
    return MODELS[wildcards.model]["publish"]


def source_file(wildcards):
    return config_model.dataset_source(MODELS[wildcards.model]).workflow_path


def url_of(wildcards):
    for settings in MODELS.values():
        source = config_model.dataset_source(settings)
        if source.kind == "url" and source.sha256.lower() == wildcards.sha256:
            return source.location
    raise WorkflowError(f"no model downloads a file with sha256 {wildcards.sha256}")


def dataset_settings(wildcards):
    s = MODELS[wildcards.model]
    return {
        "name": s["name"],
        "dataset": s["dataset"],
        "model": {"setup": s["model"]["setup"]},
        "train": {"seed": s["train"]["seed"]},
    }


def hvg_settings(wildcards):
    s = MODELS[wildcards.model]
    return {"hvg": s["hvg"], "model": {"setup": s["model"]["setup"]}}


def train_settings(wildcards):
    s = MODELS[wildcards.model]
    return {"name": s["name"], "model": s["model"], "train": s["train"]}


def gpu_request(wildcards):
    # `auto` and `gpu` ask the scheduler for a GPU; locally the default profile caps it at 1.
    return 0 if MODELS[wildcards.model]["train"]["accelerator"] == "cpu" else 1


def criticism_settings(wildcards):
    s = MODELS[wildcards.model]
    setup, c = s["model"]["setup"], s["criticism"]
    return {
        "layer": setup["layer"],
        "labels_key": setup["labels_key"],
        "unlabeled_category": setup["unlabeled_category"],
        "seed": s["train"]["seed"],
        **{k: c[k] for k in sorted(c)},
    }


def card_settings(wildcards):
    s = MODELS[wildcards.model]
    return {
        "name": s["name"],
        "description": s["description"],
        "tissues": s["tissues"],
        "card": s["card"],
        "model": {"setup": s["model"]["setup"]},
    }


def published_model_dir(wildcards):
    # scvi-hub publishes the minified model; `minify: false` ships the full training data.
    kind = "minified" if MODELS[wildcards.model]["minify"] else "model"
    return f"results/{wildcards.model}/{kind}"


def hub_files(wildcards):
    return expand("results/{model}/hub/{file}", model=wildcards.model, file=HUB_FILES)
