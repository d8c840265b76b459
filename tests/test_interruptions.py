"""A run killed hard (SIGKILL to Snakemake and every job: the OOM killer, a lost node, `kill -9`)
and then started again with the same command completes, redoes only the jobs that had not
finished, and leaves no partial file that a later step trusts.

One run of a tiny model is killed four times, each time at a later point: during the download
(a slow loopback CELLxGENE file server), during training, during the criticism
(posterior_predictive_check) and during publishing (after the commit reached the loopback Hub,
before the receipt was written). After each kill the same command starts again; the last run
completes. The command is what a user types: the default workflow profile, which reruns
incomplete jobs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import anndata as ad
import pytest
import yaml
from cellxgene_server import CellxgeneServer, Version
from helpers import ROOT, SNAKEMAKE, TOKEN, hub_env, running, wait_until
from hub_server import HubServer
from scvi_hub_workflow.builtin_datasets import simulated_atlas

VERSION_ID = "7a6b5c4d-0000-4000-8000-0000000d1e00"
REPO_ID = "alice/killed"
MODEL = "killed"


def _config(source: str) -> dict:
    return {
        "models": {
            MODEL: {
                "description": "killed four times, then finished",
                "dataset": {"source": source},
                "model": {"class": "SCVI", "params": {"n_hidden": 16, "n_latent": 4}},
                "hvg": {"n_top_genes": None},
                # Long enough to be killed after the first epoch, short enough for CI.
                "train": {"max_epochs": 15, "early_stopping": False, "accelerator": "cpu"},
                "criticism": {"n_samples": 2, "min_cells": 5},
                "publish": {"enabled": True, "repo_id": REPO_ID, "verify": True},
            }
        }
    }


def _jobs(output: str) -> dict[str, set[str]]:
    """Rules whose jobs started and finished, from Snakemake's log (`rule x:` ... `jobid: N`)."""
    started = dict(re.findall(r"rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)", output))
    started = {jobid: rule for rule, jobid in started.items()}
    finished = set(re.findall(r"Finished jobid: (\d+)", output))
    return {
        "started": set(started.values()),
        "finished": {started[j] for j in finished if j in started},
    }


class Run:
    """The same Snakemake command each time, in its own process group, output to a file."""

    def __init__(self, workdir: Path, env: dict):
        self.workdir, self.env, self.number = workdir, env, 0
        self.command = [
            *SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2",
            # The model's last step: the report's figures would add a minute and no new point.
            f"results/{MODEL}/publish.json",
        ]  # fmt: skip

    @contextlib.contextmanager
    def started(self):
        self.number += 1
        self.log = self.workdir / f"snakemake-{self.number}.out"
        with (
            open(self.log, "w") as out,
            running(
                self.command, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT
            ) as proc,
        ):
            yield proc

    def kill_when(self, proc: subprocess.Popen, ready, what: str, timeout_s: float = 240):
        """SIGKILL Snakemake and every job once `ready()`; the rules started and finished."""
        wait_until(ready, proc, what, timeout_s=timeout_s, output=self.output)
        os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and every job, at once
        proc.wait()
        return _jobs(self.output())

    def to_the_end(self) -> dict[str, set[str]]:
        with self.started() as proc:
            proc.wait(timeout=600)
        assert proc.returncode == 0, self.output()[-6000:]
        return _jobs(self.output())

    def output(self) -> str:
        return self.log.read_text()

    def found_stale_locks(self) -> bool:
        return "removed the locks of a killed run" in self.output()


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _temp_names(root: Path) -> list[str]:
    """Files and folders the workflow writes under a temporary name before renaming them."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*.tmp"))


@pytest.mark.slow
def test_killed_four_times_then_the_same_command_completes(tmp_path):
    started = time.monotonic()
    data = tmp_path / "data.h5ad"
    simulated_atlas(n_cells=300, n_genes=200, seed=1).write_h5ad(data)
    payload = data.read_bytes()
    cxg = CellxgeneServer([Version("d", VERSION_ID, payload)])
    # About 2 s for the file: the first run is killed a third of the way through it.
    cxg.bytes_per_s = len(payload) / 2
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(_config(f"cellxgene:{VERSION_ID}")))
    results, logs = workdir / "results" / MODEL, workdir / "logs" / MODEL
    download = workdir / "resources" / "cellxgene" / f"{VERSION_ID}.h5ad"

    with HubServer(tmp_path / "hub", TOKEN) as hub:
        env = hub_env(hub, tmp_path / "hf-home", "lfs")
        env |= {"CELLXGENE_API_URL": cxg.base, "OMP_NUM_THREADS": "1"}
        run = Run(workdir, env)

        # 1. During the download: some bytes are in, the file is not complete.
        with run.started() as proc:
            jobs = run.kill_when(proc, lambda: cxg.sent > len(payload) // 3, "a third of the file")
        assert jobs["finished"] == set(), jobs
        assert not download.exists()

        # 2. During training: an epoch is done, the model is not.
        with run.started() as proc:
            jobs = run.kill_when(proc, lambda: "epoch 1/" in _text(logs / "train.log"), "epoch 1")
        assert run.found_stale_locks()  # it started without --unlock
        assert "cellxgene_download" in jobs["finished"], jobs  # the download started again
        assert download.read_bytes() == payload
        assert not (results / "model").exists()
        assert not [p for p in (results / "training").rglob("*") if p.is_file()]
        after_training = jobs["finished"]

        # 3. During the posterior predictive check.
        ppc_log = logs / "posterior_predictive_check.log"
        with run.started() as proc:
            jobs = run.kill_when(proc, lambda: ppc_log.is_file(), "the criticism")
        assert not jobs["started"] & after_training, jobs  # nothing finished ran again
        assert "train" in jobs["finished"], jobs
        assert not (results / "criticism" / "cv.json").exists()
        after_criticism = after_training | jobs["finished"]

        # 4. During publishing: the commit reached the Hub, the receipt is not written yet.
        with run.started() as proc:
            jobs = run.kill_when(
                proc, lambda: hub.commit_count(REPO_ID) >= 2, "the commit on the Hub"
            )
        assert not jobs["started"] & after_criticism, jobs
        assert "posterior_predictive_check" in jobs["finished"], jobs
        assert not (results / "publish.json").exists()
        after_publish = after_criticism | jobs["finished"]

        # 5. The same command again, to the end: only what had not finished runs.
        jobs = run.to_the_end()
        assert run.found_stale_locks()
        assert "publish" in jobs["finished"]
        assert not jobs["started"] & after_publish, jobs

        # No partial file left that a later step could trust.
        assert _temp_names(workdir) == []
        receipt = json.loads((results / "publish.json").read_text())
        repo = hub.repo(REPO_ID)
        assert len(repo.commits) == 2, [c.title for c in repo.commits]  # committed once
        assert (
            receipt["commit"] == repo.head.oid
            and receipt["certification"]["verification"]["passed"]
        )
        assert not receipt["new_commit"]  # the rerun found its files already there
        for entry in receipt["files"]:
            assert (
                hub.file_bytes(REPO_ID, entry["path"])
                == (results / "hub" / entry["path"]).read_bytes()
            )
        for h5ad in (download, results / "hvg.h5ad", results / "model" / "adata.h5ad"):
            assert ad.read_h5ad(h5ad).n_obs == 300
        assert ad.read_h5ad(results / "hub" / "adata.h5ad").n_obs == 300
        assert json.loads((results / "criticism" / "cv.json").read_text())["cell_wise"]
        assert not list((workdir / ".snakemake" / "incomplete").rglob("*[!/]"))
    cxg.close()
    print(f"kill-and-rerun: {time.monotonic() - started:.0f} s")


# --- the two faults the kills showed, one at a time ------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _locks(lock_dir: Path, *names: str) -> None:
    lock_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (lock_dir / name).write_text("results/a/model\n")


def test_locks_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    """SIGKILL to Snakemake left its locks; the same command then stopped with LockException."""
    import psutil
    from scvi_hub_workflow import stopping

    lock_dir = tmp_path / ".snakemake" / "locks"
    _locks(lock_dir, *(f"{n}.{kind}.lock" for n in range(5) for kind in ("input", "output")))
    # Run 0 holds 0.*: this process, alive, as its onstart records it.
    stopping.record_lock_owner([lock_dir / "0.input.lock", lock_dir / "0.output.lock"], lock_dir)
    mine = json.loads((lock_dir / f"owner.{os.getpid()}.json").read_text())
    assert mine["pid"] == os.getpid() and mine["locks"] == ["0.input.lock", "0.output.lock"]
    assert mine["pgid"] == os.getpgid(0)

    def record(name: str, n: int, **fields) -> None:
        locks = [f"{n}.input.lock", f"{n}.output.lock"]
        (lock_dir / f"owner.{name}.json").write_text(json.dumps(mine | {"locks": locks} | fields))

    dead = _dead_pid()
    gone = {"pid": dead, "pgid": dead}  # neither the process nor any job of its group runs
    record(str(dead), 1, create_time=psutil.Process().create_time(), **gone)  # killed
    record("reused", 2, create_time=1.0, pgid=dead)  # its pid now belongs to a later process
    record("elsewhere", 3, host="another-node", **gone)  # cannot be checked from here
    # Snakemake alone was killed; a job it started runs on in its process group.
    job = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        record("orphaned", 4, pid=dead, pgid=job.pid)
        removed = stopping.remove_stale_locks(lock_dir)
    finally:
        job.kill()  # not reaped yet: a zombie, as a killed job is until init reaps it
    assert sorted(removed) == [
        "1.input.lock", "1.output.lock", "2.input.lock", "2.output.lock",
    ]  # fmt: skip
    left = {p.name for p in lock_dir.iterdir()}
    assert left == {
        "0.input.lock", "0.output.lock", "3.input.lock", "3.output.lock", "4.input.lock",
        "4.output.lock", "owner.elsewhere.json", "owner.orphaned.json",
        f"owner.{os.getpid()}.json",
    }  # fmt: skip
    # Once the job has ended too, the run is gone.
    time.sleep(0.2)
    assert sorted(stopping.remove_stale_locks(lock_dir)) == ["4.input.lock", "4.output.lock"]
    job.wait()
    assert stopping.remove_stale_locks(lock_dir) == []
    assert stopping.remove_stale_locks(tmp_path / "none") == []


def test_temporary_files_of_a_killed_job_are_removed_by_the_next_writer(tmp_path):
    """SIGKILL runs no cleanup: `.<name>.<random>.tmp` stayed beside the outputs for good."""
    from scvi_hub_workflow.rule_io import atomic_dir, atomic_path

    (tmp_path / ".x.h5ad.k1ll3d_1.tmp").write_bytes(b"half a file")
    (tmp_path / ".model.k1ll3d_2.tmp").mkdir()
    (tmp_path / ".model.k1ll3d_2.tmp" / "model.pt").write_bytes(b"half a model")
    other = tmp_path / ".x.h5ad.json.k1ll3d_3.tmp"  # another output's: not ours to remove
    other.write_text("{")
    with atomic_path(tmp_path / "x.h5ad") as tmp:
        tmp.write_bytes(b"whole")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "model.pt").write_bytes(b"whole")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [other.name, "model", "x.h5ad"]
