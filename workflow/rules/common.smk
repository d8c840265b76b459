import re
import sys
from pathlib import Path

# The rules' logic lives in the scvi_hub_workflow package next to the rule scripts; every job
# imports this copy of it, whatever checkout the venv's editable install points to.
_package_dir = Path(workflow.basedir) / "workflow" / "scripts"
sys.path.insert(0, str(_package_dir))

from scvi_hub_workflow import config as config_model
from scvi_hub_workflow.config_files import check_config_files, read_config_file
from scvi_hub_workflow.job_env import put_package_first
from scvi_hub_workflow.layout import BUILTIN_DATASETS, HUB_FILES
from scvi_hub_workflow.stopping import stop_jobs_on_interrupt

put_package_first(_package_dir)
# Ctrl-C (SIGINT) stops the running jobs at once instead of waiting for them to finish.
stop_jobs_on_interrupt()

DEFAULT_CONFIG = "config/config.yaml"

# Files given with --configfile replace the default config instead of being merged into it, so
# a run trains exactly the models they list. Decided by the command line, not by the config's
# content: a given file whose `models:` is empty is an error, never the default models.
if not workflow.overwrite_configfiles:
    try:
        read_config_file(DEFAULT_CONFIG)  # a YAML error names the file and line
    except config_model.ConfigError as error:
        raise WorkflowError(str(error)) from None

    configfile: DEFAULT_CONFIG


# Validate the whole config now, before any job runs; errors name the offending key or file.
try:
    check_config_files(workflow.configfiles, config)
    MODELS = config_model.resolve(config)
except config_model.ConfigError as error:
    raise WorkflowError(str(error)) from None

# Publishing needs a token before anything expensive starts (it is read from the
# environment inside the publish job, never passed through params).
_publishing = {name: s for name, s in MODELS.items() if s.publish.enabled}
if _publishing:
    from scvi_hub_workflow.publish import require_token_for

    try:
        require_token_for({name: s.publish for name, s in _publishing.items()})
    except ValueError as error:
        raise WorkflowError(str(error)) from None


def warn_of_missing_gpu():
    """Say before the first job, not after the dataset and HVG jobs, that training will fail."""
    from scvi_hub_workflow.training import models_missing_a_gpu

    if not models_missing_a_gpu(MODELS, cuda_available=False):
        return  # torch costs seconds to import: only when a model requires a GPU
    import torch

    for name in models_missing_a_gpu(MODELS, torch.cuda.is_available()):
        logger.warning(
            f"models.{name}.train.accelerator is 'gpu' but this machine has no CUDA GPU and "
            "the jobs run locally: its train job will fail. Run with a cluster profile, set "
            "train.accelerator: auto, or train.allow_cpu_fallback: true."
        )


onstart:
    # Jobs on a cluster train where the scheduler puts them; only a local run trains here.
    if workflow.local_exec:
        warn_of_missing_gpu()


wildcard_constraints:
    model="|".join(sorted(map(re.escape, MODELS))) or "(?!)",
    name="|".join(BUILTIN_DATASETS),
    digest="[0-9a-f]{32}|[0-9a-f]{64}",
    cellxgene_id="[A-Za-z0-9][A-Za-z0-9-]*",


def settings_of(step):
    """Params function: the settings the rule of `step` reads, as stable text (a re-ordered
    config re-runs nothing); the rule script turns it back with config.from_text."""

    def settings(wildcards):
        return config_model.to_text(config_model.step_settings(MODELS[wildcards.model], step))

    return settings


def dataset_inputs(wildcards):
    """The file the dataset step reads and, for CELLxGENE, the record of what it resolved to."""
    source = MODELS[wildcards.model].dataset.location
    inputs = {"data": source.workflow_path}
    if source.record_path:
        inputs["record"] = source.record_path
    return inputs


def _sources(kind):
    sources = (s.dataset.location for s in MODELS.values())
    return [source for source in sources if source.kind == kind]


def download_source(wildcards):
    for source in _sources("url"):
        if source.digest == wildcards.digest:
            return source
    raise WorkflowError(f"no model downloads a file with checksum {wildcards.digest}")


def cellxgene_source(wildcards):
    for source in _sources("cellxgene"):
        if source.location == wildcards.cellxgene_id:
            return source
    raise WorkflowError(f"no model reads cellxgene:{wildcards.cellxgene_id}")


def gpu_request(wildcards):
    # `auto` and `gpu` ask the scheduler for a GPU; locally the default profile caps it at 1.
    return 0 if MODELS[wildcards.model].train.accelerator == "cpu" else 1


# Models with a label classifier: the label-transfer rule and the card's section run for them.
SCANVI_MODELS = [name for name, s in MODELS.items() if s.model.model_class == "SCANVI"]


# Models set up with a batch key: the integration rule and the card's section run for them.
BATCH_MODELS = [name for name, s in MODELS.items() if s.model.setup.batch_key]


def integration_inputs(wildcards):
    """The minified model (latent means), the HVG counts (PCA baseline) and, without labels,
    the PPC's Leiden clusters."""
    inputs = {
        "model": f"results/{wildcards.model}/minified",
        "data": f"results/{wildcards.model}/hvg.h5ad",
    }
    if not MODELS[wildcards.model].model.setup.labels_key:
        inputs["cells"] = f"results/{wildcards.model}/criticism/cells.tsv"
    return inputs


# Models the query mapping check can hold a batch out of: a batch key, and not switched off
# (criticism.query_check: false). With `auto`, a dataset above query_check_max_cells writes
# a query_check.json saying it was skipped: cell counts are known only after the dataset step.
QUERY_CHECK_MODELS = [
    name
    for name, s in MODELS.items()
    if s.model.setup.batch_key and s.criticism.query_check is not False
]


def only_for(models, path):
    """Input function: `path` (with {model}) for the models in `models`, no file for the
    others (the card's optional sections: label transfer, integration, query mapping)."""

    def input_of(wildcards):
        return path.format(model=wildcards.model) if wildcards.model in models else []

    return input_of


def report_files(wildcards):
    """Every model's figures (label transfer, integration), query checks, and the table of
    all models."""
    figures = ["training", "latent", "ppc", "de"]
    files = expand("results/{model}/report/{figure}.png", model=MODELS, figure=figures)
    files += expand(
        "results/{model}/report/{figure}.png",
        model=SCANVI_MODELS,
        figure=["confusion", "calibration"],
    )
    files += expand("results/{model}/report/integration.png", model=BATCH_MODELS)
    files += expand("results/{model}/criticism/query_check.json", model=QUERY_CHECK_MODELS)
    return files + ["results/models.tsv"]


def published_model_dir(wildcards):
    # scvi-hub publishes the minified model; `minify: false` ships the full training data.
    kind = "minified" if MODELS[wildcards.model].minify else "model"
    return f"results/{wildcards.model}/{kind}"


def hub_files(wildcards):
    return expand("results/{model}/hub/{file}", model=wildcards.model, file=HUB_FILES)
