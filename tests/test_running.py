"""How the workflow behaves as a running program: file modes, which package a job imports,
GPU requests on SLURM, threads, stopping on a signal, progress in the log.

The SLURM requests are checked through a dry run with profiles/slurm and the SLURM plugin's own
partition choice; tests/test_slurm.py (`pytest -m slurm`) runs the profile on a real scheduler.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import (
    ROOT,
    SNAKEMAKE,
    TINY_CONFIG,
    declared_keys,
    rule_settings,
    running,
    wait_until,
)
from scvi_hub_workflow import config as config_model
from scvi_hub_workflow.rule_io import atomic_dir, atomic_path, write_json
from scvi_hub_workflow.settings import ModelSettings, to_text

SCRIPTS = ROOT / "workflow" / "scripts"


def tiny_settings(model: str = "tiny-scvi", **train) -> ModelSettings:
    """The train rule's settings for a model of the tiny config, with `train` overrides."""
    settings = config_model.resolve(yaml.safe_load(TINY_CONFIG.read_text()))[model]
    return rule_settings(settings.replace(train=settings.train.replace(**train)), "train")


# --- umask --------------------------------------------------------------------------------


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o002)  # a group-shared project folder
    try:
        with atomic_path(tmp_path / "table.tsv") as tmp:
            tmp.write_text("a\tb\n")
        write_json(tmp_path / "summary.json", {"a": 1})
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "model.pt").write_bytes(b"weights")
    finally:
        os.umask(old)
    assert (tmp_path / "table.tsv").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o664
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o775
    assert (tmp_path / "model" / "model.pt").stat().st_mode & 0o777 == 0o664


# --- import path of the jobs --------------------------------------------------------------


@pytest.mark.slow
def test_jobs_import_the_package_of_the_workflow_that_runs_them(tmp_path):
    # A second checkout, run with this venv, whose editable install points at this checkout.
    other = tmp_path / "other-checkout"
    other.mkdir()
    shutil.copy(ROOT / "Snakefile", other)
    for part in ("workflow", "config", "envs"):
        shutil.copytree(ROOT / part, other / part, ignore=shutil.ignore_patterns("__pycache__"))
    package = other / "workflow" / "scripts" / "scvi_hub_workflow"
    marker = tmp_path / "imported-from.txt"
    with open(package / "__init__.py", "a") as init:
        init.write(
            textwrap.dedent(
                f"""
                import sys as _sys
                if _sys.argv[0].endswith("builtin_dataset.py"):  # inside the job only
                    open({str(marker)!r}, "w").write(__file__)
                """
            )
        )
    workdir = tmp_path / "run"
    workdir.mkdir()
    result = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(other / "Snakefile"), "--directory", str(workdir),
         "--workflow-profile", "none", "--configfile", str(TINY_CONFIG), "--cores", "1",
         "resources/builtin/synthetic-iid.h5ad"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.is_file(), "the job imported scvi_hub_workflow from another checkout"
    assert Path(marker.read_text()).is_relative_to(other)


# --- who asks for the GPU on SLURM --------------------------------------------------------

ACCELERATOR_CONFIG = {
    "defaults": {"publish": {"enabled": False}},
    "models": {
        f"{accelerator}-model": {
            "description": f"accelerator {accelerator}",
            "dataset": {"source": "builtin:synthetic-iid"},
            "model": {"class": "SCVI"},
            "train": {"accelerator": accelerator},
        }
        for accelerator in ("cpu", "auto", "gpu")
    },
}


@pytest.fixture(scope="module")
def slurm_dry_run_jobs(tmp_path_factory) -> dict[tuple[str, str], dict[str, str]]:
    """(rule, model) -> resources of each job, from a dry run with profiles/slurm as shipped."""
    workdir = tmp_path_factory.mktemp("slurm-dry-run")
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(ACCELERATOR_CONFIG))
    result = subprocess.run(
        [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--workflow-profile", str(ROOT / "profiles" / "slurm"), "--configfile", str(config),
         "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", result.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        model = re.search(r"^\s+wildcards: .*?model=([\w-]+)", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        if rule and model and resources:
            pairs = (item.split("=", 1) for item in resources.group(1).split(", "))
            jobs[rule.group(1), model.group(1)] = dict(pairs)
    assert ("train", "cpu-model") in jobs, result.stdout[-3000:]
    return jobs


def slurm_partition_for(resources: dict[str, str], threads: int = 1) -> str | None:
    """The partition the SLURM plugin picks for a job with these resources, from the shipped
    profiles/slurm/partitions.yaml (what it does at submission, without a cluster)."""
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile_dir = ROOT / "profiles" / "slurm"
    partitions = read_partition_file(profile_dir / profile["slurm-partition-config"])
    job = SimpleNamespace(name="job", threads=threads, resources=resources)
    return get_best_partition(partitions, job, logging.getLogger("slurm-plugin"))


def test_a_cpu_model_requests_no_gpu_on_slurm(slurm_dry_run_jobs):
    cpu = slurm_dry_run_jobs["train", "cpu-model"]
    assert cpu.get("gpu", "0") == "0", cpu
    assert "slurm_partition" not in cpu, "the profile, not the plugin, chose the partition"
    for accelerator in ("auto", "gpu"):
        assert slurm_dry_run_jobs["train", f"{accelerator}-model"]["gpu"] == "1"


def test_each_job_lands_in_the_partition_its_gpu_request_fits(slurm_dry_run_jobs):
    partitions = yaml.safe_load((ROOT / "profiles" / "slurm" / "partitions.yaml").read_text())
    gpu_partitions = {n for n, p in partitions["partitions"].items() if p.get("max_gpu", 0) > 0}
    assert gpu_partitions == {"gpu"}  # the name tests/test_slurm.py's cluster has
    for (rule, model), resources in slurm_dry_run_jobs.items():
        wants_gpu = rule == "train" and model != "cpu-model"
        chosen = slurm_partition_for(resources, threads=4 if rule == "train" else 1)
        assert chosen is not None, (rule, model)
        assert (chosen in gpu_partitions) == wants_gpu, (rule, model, chosen)


# --- criticism threads --------------------------------------------------------------------


def test_criticism_declares_threads_and_records_them(workflow_rules, minified_model):
    from scvi_hub_workflow import criticism

    rule = next(r for r in workflow_rules if r.name == "posterior_predictive_check")
    assert rule.resources["_cores"].value > 1, "posterior_predictive_check declares no threads"
    model = criticism.load_minified_model(minified_model / "minified")
    grouping = criticism.resolve_groups(
        model, labels_key="cell_type", unlabeled_category=None, min_cells=10, cluster_resolution=1
    )
    cv, _, _, _ = criticism.criticise(
        model, minified_model / "hvg.h5ad", grouping, layer=None, n_samples=2, batch_size=100,
        seed=0, alpha=0.05, top_n=5, n_workers=3,
    )  # fmt: skip
    assert cv["threads"] == 3


# --- stopping -----------------------------------------------------------------------------


def wait_for(path: Path, text: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    def text_of() -> str:
        return path.read_text() if path.is_file() else ""

    wait_until(lambda: text in text_of(), proc, f"{text!r} in {path}", timeout_s=timeout_s,
               output=text_of, interval_s=0.5)  # fmt: skip


def stop_and_time(proc: subprocess.Popen, signum: int, timeout_s: float = 30) -> float:
    started = time.monotonic()
    os.kill(proc.pid, signum)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout_s} s after {signal.Signals(signum).name}")
    return time.monotonic() - started


@pytest.mark.slow
def test_sigterm_stops_a_training_job_within_seconds(tmp_path):
    # The train rule's script, run as SLURM runs it, with training that would take hours.
    settings = tiny_settings(max_epochs=100_000, early_stopping=False)
    long_training = to_text(settings, declared_keys("train"))
    log, model_dir, summary_path = (str(tmp_path / n) for n in ("train.log", "model", "summary"))
    driver = tmp_path / "train_job.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            import scvi
            from scvi_hub_workflow.settings import from_text
            from scvi_hub_workflow.rule_io import atomic_dir, logged_to, write_json
            from scvi_hub_workflow.training import train_model

            with logged_to({log!r}):
                settings = from_text({long_training!r})
                model, history, summary = train_model(scvi.data.synthetic_iid(), settings)
                with atomic_dir({model_dir!r}) as tmp:
                    model.save(str(tmp), overwrite=True)
                write_json({summary_path!r}, summary)
            """
        )
    )
    with running([sys.executable, str(driver)]) as proc:
        wait_for(tmp_path / "train.log", "epoch 1/", proc)
        assert stop_and_time(proc, signal.SIGTERM) < 15
    assert proc.returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.log", "train_job.py"]
    assert "stopped by SIGTERM" in (tmp_path / "train.log").read_text()


@pytest.mark.slow
def test_sigint_to_snakemake_stops_training_within_seconds(tmp_path):
    import psutil

    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"publish": {"enabled": False}},
                "models": {
                    "long": {
                        "description": "training that would take hours",
                        "dataset": {"source": "builtin:synthetic-iid"},
                        "model": {"class": "SCVI"},
                        "train": {"max_epochs": 100_000, "early_stopping": False},
                    }
                },
            }
        )
    )
    command = [
        *SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
        "--workflow-profile", "none", "--configfile", str(config), "--cores", "2",
        "results/long/training/summary.json",
    ]  # fmt: skip
    with running(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        wait_for(tmp_path / "logs" / "long" / "train.log", "epoch 1/", proc)
        jobs = psutil.Process(proc.pid).children(recursive=True)
        # To Snakemake alone, as `kill -INT` does (Ctrl-C would reach the jobs too). Before the
        # fix it was still waiting for training after 45 s.
        assert stop_and_time(proc, signal.SIGINT) < 20
        assert not [p for p in jobs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    training = tmp_path / "results" / "long"
    for output in ("model", "training/history.tsv", "training/summary.json"):
        assert not (training / output).exists(), f"{output} looks complete after the stop"
    assert not list(training.glob(".model.*")), "a temporary model folder was left behind"


# --- training progress in the log ---------------------------------------------------------


def test_training_logs_each_epoch_with_losses_elapsed_and_eta(caplog):
    import scvi
    from scvi_hub_workflow.training import train_model

    caplog.set_level(logging.INFO)
    train_model(scvi.data.synthetic_iid(batch_size=100), tiny_settings(max_epochs=3))
    lines = [r.getMessage() for r in caplog.records if r.name == "scvi_hub_workflow.progress"]
    epochs = [line for line in lines if re.search(r"epoch \d+/3:", line)]
    assert len(epochs) == 3, lines
    for k, line in enumerate(epochs, start=1):
        assert f"SCVI: epoch {k}/3:" in line
        assert re.search(r"elbo_train [\d.]+", line) and re.search(r"elbo_validation [\d.]+", line)
        assert re.search(r"elapsed \d+s, ETA \d+s$", line), line


def test_a_long_epoch_logs_every_few_seconds(caplog):
    from scvi_hub_workflow.progress import ProgressLog

    caplog.set_level(logging.INFO)
    trainer = SimpleNamespace(max_epochs=10, current_epoch=0, num_training_batches=500)
    progress = ProgressLog("SCVI", every_s=0.05)
    progress.on_train_start(trainer, None)
    progress.on_train_batch_end(trainer, None, None, None, 0)  # too soon: silent
    time.sleep(0.1)
    progress.on_train_batch_end(trainer, None, None, None, 41)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "SCVI: training for at most 10 epochs"
    assert len(lines) == 2
    assert re.fullmatch(r"SCVI: epoch 1/10, batch 42/500; elapsed \ds", lines[1]), lines[1]


def test_the_console_gets_the_first_and_last_epochs_and_a_line_a_minute_between(
    tmp_path, monkeypatch
):
    import io

    from scvi_hub_workflow import progress as progress_module
    from scvi_hub_workflow.progress import ProgressLog
    from scvi_hub_workflow.rule_io import logged_to

    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    clock = iter(range(0, 10_000, 20))  # every epoch takes 20 s
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    trainer = SimpleNamespace(max_epochs=10, current_epoch=0, callback_metrics={})
    with logged_to(tmp_path / "logs" / "m" / "train.log"):
        progress = ProgressLog("SCVI")
        progress.on_train_start(trainer, None)
        for epoch in range(10):
            trainer.current_epoch = epoch
            progress.on_train_epoch_end(trainer, None)
    lines = console.getvalue().splitlines()
    # epochs 1, 4 and 7 (a minute apart), then the last: never one per epoch
    assert [re.search(r"epoch (\d+)/10", line).group(1) for line in lines] == ["1", "4", "7", "10"]
    assert all(line.startswith(f"{tmp_path}/logs/m/train.log: SCVI: epoch") for line in lines)
    assert (tmp_path / "logs/m/train.log").read_text().count("SCVI: epoch") == 10


# --- a target with --configfile -------------------------------------------------------------


def test_a_config_file_under_the_outputs_is_a_target_given_after_configfile(tmp_path, monkeypatch):
    from scvi_hub_workflow.config_files import check_not_a_target

    monkeypatch.chdir(tmp_path)
    for target in ("results/m/dataset.json", tmp_path / "logs/m/train.log"):
        with pytest.raises(config_model.ConfigError) as error:
            check_not_a_target(target)
        message = str(error.value)
        assert f"--configfile was given {target}" in message
        assert "`snakemake --configfile my.yaml -- " in message and "target first" in message
    check_not_a_target("config/config.yaml")  # a config file
    check_not_a_target(tmp_path / "my.yaml")


@pytest.mark.slow
def test_one_models_target_after_configfile_in_the_documented_form(tmp_path):
    """`--configfile f.yaml -- <target>` plans that model's jobs only; without `--`, an existing
    target is named as such (a missing one fails in Snakemake's own argument parsing)."""
    target = "results/tiny-scvi/card/README.md"
    run = [*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--workflow-profile", "none", "-n", "--cores", "1",
           "--configfile", str(TINY_CONFIG)]  # fmt: skip
    done = subprocess.run([*run, "--", target], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = set(re.findall(r"model=([\w-]+)", done.stdout))
    assert planned == {"tiny-scvi"}, planned
    output = tmp_path / "results/tiny-scvi/dataset.json"
    output.parent.mkdir(parents=True)
    output.write_text('{"source": "builtin:synthetic-iid", "n_cells": 600}')
    done = subprocess.run(
        [*run, "results/tiny-scvi/dataset.json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"--configfile was given {output}, an output of this workflow" in said
    assert "-- results/tiny-scvi/dataset.json`" in said


def test_a_stop_signal_swallowed_by_a_finaliser_still_ends_the_job(tmp_path):
    # A signal handler's exception raised inside a __del__ (garbage collection runs them at any
    # bytecode of training) is printed and dropped by Python: the job trains on, and with the
    # stop signals ignored from then on it could only be killed hard.
    driver = tmp_path / "job.py"
    driver.write_text(
        textwrap.dedent(
            """
            import gc, os, signal, sys, time
            from scvi_hub_workflow.stopping import stop_on_signals

            class Finalised:
                def __del__(self):
                    os.kill(os.getpid(), signal.SIGTERM)
                    for _ in range(10_000):  # bytecode: the handler runs in here
                        pass

            with stop_on_signals():
                Finalised()
                gc.collect()
                print("trained on", flush=True)
                time.sleep(600)
            """
        )
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(driver)], capture_output=True, text=True, timeout=60)
    assert "Exception ignored" in done.stderr  # the signal landed in the finaliser
    assert done.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - started < 30
