import re
import sys
from pathlib import Path

# The rules' logic lives in the scvi_hub_workflow package next to the rule scripts. This process
# imports this checkout's copy of it, and so does every job it starts (put_package_first).
PACKAGE_DIR = Path(workflow.basedir).resolve() / "workflow" / "scripts"
sys.path.insert(0, str(PACKAGE_DIR))

from scvi_hub_workflow.job_env import put_package_first

put_package_first(PACKAGE_DIR)

from scvi_hub_workflow import config as config_model
from scvi_hub_workflow.checks import CHECKS, checks_for
from scvi_hub_workflow.config_files import check_config_files, read_config_file
from scvi_hub_workflow.layout import (
    BUILTIN_DATA,
    BUILTIN_DATASETS,
    CELLXGENE_DATA,
    CELLXGENE_RECORD,
    DOWNLOADED_DATA,
    HUB_FILES,
)
from scvi_hub_workflow.provenance import RECORDED_SETTINGS
from scvi_hub_workflow.settings import to_text
from scvi_hub_workflow.stopping import (
    record_lock_owner,
    remove_stale_locks,
    stop_jobs_on_interrupt,
)

# Ctrl-C (SIGINT) stops the running jobs at once instead of waiting for them to finish.
stop_jobs_on_interrupt()
# A run killed hard (SIGKILL) left its locks: the same command must start again without --unlock.
if _stale := remove_stale_locks():
    logger.warning(f"removed the locks of a killed run ({', '.join(_stale)}); continuing")

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


# A bare CELLxGENE dataset id keeps the version downloaded first. Say on every run, dry runs
# included, when a newer one exists: one short request per id (no retry), and nothing re-runs;
# offline, only that it could not check. Not in a cluster job's own process.
_records = [s.dataset.location.record_path for s in MODELS.values()]
_records = [path for path in _records if path and Path(path).exists()]
if _records and workflow.is_main_process:
    from functools import partial

    from scvi_hub_workflow.cellxgene import newest_version
    from scvi_hub_workflow.dataset_record import say_newer_versions

    say_newer_versions(
        _records,
        partial(newest_version, timeout_s=5.0),
        lambda message, *args: logger.warning(message % args),
    )


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


# A models.tsv of another config would reach a report built now (--report runs no job).
from scvi_hub_workflow.model_summary import stale_table_warning

_stale = stale_table_warning("results/models.tsv", MODELS)
if _stale:
    logger.warning(_stale)


onstart:
    if workflow.local_exec:
        # The locks are held now: record that they are this run's (see remove_stale_locks); a
        # cluster's jobs outlive a killed Snakemake, so only a local run records. Snakemake
        # names a run's own lock files only in its private `_lockfile`; without it nothing is
        # recorded, and a killed run's locks need `--unlock` as before.
        record_lock_owner(getattr(workflow.persistence, "_lockfile", {}).values())
        # Jobs on a cluster train where the scheduler puts them; only a local run trains here.
        warn_of_missing_gpu()


onerror:
    # models.tsv lists every model, a failed one with the step it failed in (model_summary
    # could not run: its inputs include the failed model's results).
    from scvi_hub_workflow.model_summary import write_states

    write_states(MODELS)


wildcard_constraints:
    model="|".join(sorted(map(re.escape, MODELS))) or "(?!)",
    name="|".join(BUILTIN_DATASETS),
    digest="[0-9a-f]{32}|[0-9a-f]{64}",
    cellxgene_id="[A-Za-z0-9][A-Za-z0-9-]*",


# --- settings: each rule names the keys it reads, next to itself --------------------------


def settings_of(*keys):
    """Params function: the model's settings `keys` (a section such as "train", a key such as
    "train.seed", or "name"), as stable text: a re-ordered config re-runs nothing, and a rule
    re-runs exactly when one of its keys changes. The script reads them with
    settings.from_text; reading any other key is an error."""

    def settings(wildcards):
        return to_text(MODELS[wildcards.model], keys)

    settings.keys = keys  # for the tests: which keys each rule declares
    return settings


# --- inputs -------------------------------------------------------------------------------


def get_dataset_inputs(wildcards):
    """The file the dataset step reads and, for CELLxGENE, the record of what it resolved to."""
    source = MODELS[wildcards.model].dataset.location
    inputs = {"data": source.workflow_path}
    if source.record_path:
        inputs["record"] = source.record_path
    return inputs


def _sources(kind):
    sources = (s.dataset.location for s in MODELS.values())
    return [source for source in sources if source.kind == kind]


def get_download_source(wildcards):
    for source in _sources("url"):
        if source.digest == wildcards.digest:
            return source
    raise WorkflowError(f"no model downloads a file with checksum {wildcards.digest}")


def get_cellxgene_source(wildcards):
    for source in _sources("cellxgene"):
        if source.location == wildcards.cellxgene_id:
            return source
    raise WorkflowError(f"no model reads cellxgene:{wildcards.cellxgene_id}")


def get_train_inputs(wildcards):
    """The HVG data and, with `model.from_scvi: <model>`, the trained model it starts from."""
    inputs = {"data": f"results/{wildcards.model}/hvg.h5ad"}
    pretrained = MODELS[wildcards.model].model.pretrained_model
    if pretrained:
        inputs["pretrained"] = f"results/{pretrained}/model"
    return inputs


def planned_before_training(checkpoint, applies=lambda settings: True):
    """Input function of train: a model not trained yet waits for `checkpoint` (a plan of the
    criticism made from the data before training: a criticism key the data cannot serve stops
    the run there, not after training). Never an input of a trained model: a criticism change
    re-runs the plan and the checks that read it, never the training. Not an ancient() edge:
    Snakemake 9 then skips the params of every job downstream of train once the plan re-runs
    (snakemake#4166). As a checkpoint, the plan is no input of the train job that runs (the
    job is planned again once the plan exists), so the model's recorded inputs stay the same.
    A trained model that re-trains (a changed model key) does not wait: its plan, if it re-runs
    too, runs beside the training and stops the run when it fails, the new model kept."""

    def wait(wildcards):
        model = wildcards.model
        trained = all(Path(path).exists() for path in expand(rules.train.output, model=model))
        if not trained and applies(MODELS[model]):
            getattr(checkpoints, checkpoint).get(model=model)  # until it has run: its output
        return []

    return wait


def get_published_model(wildcards):
    """The model folder published to the Hub, whose data hold the latent posterior the
    criticism and the report read: minified/ (scvi-hub's form), or model/ with `minify: false`
    or for a class that cannot be minified."""
    return f"results/{wildcards.model}/{MODELS[wildcards.model].published_folder}"


def get_integration_inputs(wildcards):
    """The published model (latent means), the HVG counts (PCA baseline), dataset.json (can
    the data be measured: checks.skip_reason) and, without labels, the posterior predictive
    check's Leiden clusters."""
    model = wildcards.model
    inputs = {"model": get_published_model(wildcards), "data": f"results/{model}/hvg.h5ad"}
    inputs["dataset"] = f"results/{model}/dataset.json"
    if not MODELS[model].model.setup.labels_key:
        inputs["cells"] = f"results/{model}/criticism/cells.tsv"
    return inputs


def get_check_results(wildcards):
    """The results of the optional checks that apply to the model, named after the checks."""
    return {
        check.name: check.result(wildcards.model) for check in checks_for(MODELS[wildcards.model])
    }


def check_applies(name):
    """Whether the optional check `name` (checks.py) applies to a model's settings."""
    return next(check for check in CHECKS if check.name == name).applies


def models_checked_by(check):
    return sorted(name for name, s in MODELS.items() if check.applies(s))


def get_summary_inputs(wildcards):
    """Every model's training summary and criticism, and each optional check's results."""
    models = sorted(MODELS)  # the table (and whether it re-runs) ignores the config's key order
    inputs = {
        "training": expand(rules.train.output.summary, model=models),
        "cv": expand(rules.posterior_predictive_check.output.cv, model=models),
        "de": expand(rules.posterior_predictive_check.output.de_summary, model=models),
    }
    for check in CHECKS:
        inputs[check.name] = [check.result(model) for model in models_checked_by(check)]
    return inputs


def get_report_files(wildcards):
    """Every model's figures and result pages, every output of its optional checks, the table
    of all models."""
    files = expand(list(rules.figures.output), model=sorted(MODELS))
    files += expand(rules.result_pages.output, model=sorted(MODELS))
    for check in CHECKS:
        outputs = list(getattr(rules, check.name).output)
        files += expand(outputs, model=models_checked_by(check))
    return files + [rules.model_summary.output.page]


# The model's results the report shows as pages (besides the card, the figures, models.tsv).
RESULT_FILES = (
    "dataset.json",
    "hvg.tsv",
    "training/history.tsv",
    "training/summary.json",
    "criticism/cv.json",
    "criticism/de.tsv",
    "criticism/de.json",
    "provenance.json",
)


def get_result_files(wildcards):
    """Every TSV/JSON result of the model: the RESULT_FILES and those of its optional checks."""
    files = [f"results/{wildcards.model}/{name}" for name in RESULT_FILES]
    for check in checks_for(MODELS[wildcards.model]):
        outputs = expand(list(getattr(rules, check.name).output), model=wildcards.model)
        files += [f for f in outputs if f.endswith((".json", ".tsv"))]
    return files


def get_hub_files(wildcards):
    return expand("results/{model}/hub/{file}", model=wildcards.model, file=HUB_FILES)


# --- resources ----------------------------------------------------------------------------


def gpu_request(wildcards):
    # `auto` and `gpu` ask the scheduler for a GPU; locally the default profile caps it at 1.
    return 0 if MODELS[wildcards.model].train.accelerator == "cpu" else 1


def training_mem_mb(wildcards, input, attempt):
    # the training data in memory (a few times the .h5ad on disk), the model and the loader
    return (4000 + 6 * input.size_mb) * attempt


def training_runtime(wildcards, input, attempt):
    # minutes
    return (60 + input.size_mb // 10) * attempt


def model_mem_mb(wildcards, input, attempt):
    # a saved model with its data, loaded once
    return (2000 + 3 * input.size_mb) * attempt


def benchmark_of(rule):
    """Where a job records its time and memory (Snakemake `benchmark:`)."""
    return f"results/{{model}}/resource_usage/{rule}.tsv"
