"""The tiny workflow through a real one-node SLURM cluster, with the shipped profiles/slurm.

tests/slurm/start_cluster.sh installs (if needed) and starts Debian's slurm on localhost with two
partitions, `debug` (the default) and `gpu`, and a fake GPU so `sbatch --gpus=1` schedules. The
workflow then runs with `--workflow-profile profiles/slurm`, unchanged; the command line only adds
what the test cluster needs (no slurmdbd, so `squeue` for status; 2 CPUs) and what the test reads
(`--verbose` logs every sbatch call; SLURM logs are kept). Then the assertions:

* every non-local job was submitted with sbatch, ran as its own SLURM job (its SLURM_JOB_ID is
  in the job's SLURM log) and finished COMPLETED with exit code 0 according to scontrol/squeue;
* the local rules (hub, publish) were not submitted;
* the training job's sbatch line asks for the GPU partition and `--gpus=1`, SLURM allocated the
  GPU to it, and training fell back to the CPU (`accelerator: auto` on a GPU-less machine);
* the CPU rules asked for no GPU and ran in the default partition.

Outside CI the test skips when the machine cannot host the cluster (not root, no apt-get, ...);
with CI=true that is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "tests" / "slurm"
CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
# One model is enough to send every rule through SLURM; the second would only double the time.
MODEL = "tiny-scvi"
TARGET = f"results/{MODEL}/publish.json"
CANNOT_RUN = 77  # start_cluster.sh: this machine cannot host the test cluster
IN_CI = os.environ.get("CI", "").lower() == "true"
WORKFLOW_TIMEOUT_S = 900

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
SBATCH_CALL = re.compile(r"sbatch call: (sbatch .*)")


def cannot_run(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true, so the SLURM test must run, but: {reason}")
    pytest.skip(reason)


def scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "--oneliner", job_id],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # `Key=Value` pairs separated by spaces; values here (paths, states, TRES) have no spaces.
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def cluster_job_ids() -> list[str]:
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i"],
        capture_output=True,
        text=True,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def cluster():
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        cannot_run("snakemake-executor-plugin-slurm is not installed")
    start = subprocess.run(
        ["bash", str(SLURM_DIR / "start_cluster.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if start.returncode == CANNOT_RUN:
        cannot_run(start.stderr.strip().splitlines()[-1])
    assert start.returncode == 0, f"cluster did not start:\n{start.stdout}\n{start.stderr}"
    run_dir = Path(os.environ.get("SCVI_HUB_SLURM_RUN_DIR", "/var/spool/scvi-hub-slurm-test"))
    pids = {name: (run_dir / f"{name}.pid").read_text().strip() for name in ("slurmctld", "slurmd")}
    try:
        yield run_dir
    finally:
        # Jobs outlive slurmd (slurmstepd runs them): cancel what a failed run left behind. Every
        # job on this private cluster is the test's.
        leftover = subprocess.run(
            ["squeue", "--noheader", "--format=%i"], capture_output=True, text=True
        ).stdout.split()
        if leftover:
            subprocess.run(["scancel", *leftover], check=False)
        stop = subprocess.run(
            ["bash", str(SLURM_DIR / "stop_cluster.sh")], capture_output=True, text=True
        )
        assert stop.returncode == 0, stop.stderr
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists(), f"{name} ({pid}) still running after stop"


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """Run the workflow through SLURM once; the tests below read what it left."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--workflow-profile",
        str(ROOT / "profiles" / "slurm"),
        "--configfile",
        str(CONFIG),
        "--directory",
        str(workdir),
        # What the test reads: every sbatch call, and the SLURM logs of successful jobs.
        "--verbose",
        "--slurm-keep-successful-logs",
        # No slurmdbd here, so sacct always fails and the plugin would wait forever; squeue sees
        # finished jobs for MinJobAge (3600) seconds.
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
        # The node has only a few CPUs; a job asking for more is rejected by sbatch.
        "--max-threads",
        str(os.cpu_count() or 1),
        # A retry doubles the memory, beyond this node's; fail at once instead.
        "--retries",
        "0",
        "--latency-wait",
        "10",
        TARGET,
    ]
    started = time.monotonic()
    # Its own session, so a hung run is killed with everything it started; SIGTERM is not
    # enough (the plugin can wait on a status query forever), hence SIGKILL.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=WORKFLOW_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--unlock", "--snakefile", str(ROOT / "Snakefile"),
             "--configfile", str(CONFIG), "--directory", str(workdir)],
            capture_output=True,
        )  # fmt: skip
        pytest.fail(f"workflow did not finish in {WORKFLOW_TIMEOUT_S} s:\n{output[-6000:]}")
    elapsed = time.monotonic() - started
    print(f"workflow through SLURM: {elapsed:.0f} s")
    (workdir / "snakemake.out").write_text(output)
    assert proc.returncode == 0, f"workflow failed under SLURM:\n{output[-8000:]}"
    return workdir, output


@pytest.fixture(scope="module")
def jobs(slurm_run):
    """One record per submitted SLURM job: rule, SLURM job id, sbatch line, log, scontrol view."""
    workdir, output = slurm_run
    calls = {}
    for call in SBATCH_CALL.findall(output):
        log_pattern = re.search(r"--output (\S+)", call).group(1).strip("'\"")
        calls[log_pattern] = call
    records = []
    for job_id, log in SUBMITTED.findall(output):
        log_path = Path(log)
        rule = next(p for p in log_path.parts if p.startswith("rule_")).removeprefix("rule_")
        call = calls[str(log_path.with_name("%j.log"))]
        records.append(
            {
                "rule": rule,
                "id": job_id,
                "sbatch": call,
                "log": log_path,
                "scontrol": scontrol_job(job_id),
            }
        )
    return records


def by_rule(jobs, rule):
    found = [job for job in jobs if job["rule"] == rule]
    assert len(found) == 1, f"expected one {rule} job, got {found}"
    return found[0]


def test_every_cluster_job_ran_through_slurm(slurm_run, jobs):
    workdir, output = slurm_run
    assert (workdir / TARGET).is_file()
    # Snakemake heads each job with `rule X:` (sent to the executor) or `localrule X:`.
    remote_rules = set(re.findall(r"^rule (\w+):$", output, flags=re.MULTILINE))
    local_rules = set(re.findall(r"^localrule (\w+):$", output, flags=re.MULTILINE))
    assert {"dataset", "hvg", "train", "minify"} <= remote_rules
    # Local rules run on the login node (compute nodes often have no internet).
    assert {"hub", "publish"} <= local_rules
    submitted = {job["rule"] for job in jobs}
    assert submitted == remote_rules, "a non-local job bypassed sbatch"
    assert not submitted & local_rules, "a local rule was submitted to SLURM"
    assert len({job["id"] for job in jobs}) == len(jobs), "two jobs shared a SLURM job"

    known_to_slurm = set(cluster_job_ids())
    for job in jobs:
        sc = job["scontrol"]
        assert job["id"] in known_to_slurm, f"{job['rule']}: job {job['id']} not in squeue"
        assert sc["JobId"] == job["id"]
        assert sc["JobState"] == "COMPLETED", (job["rule"], sc["JobState"])
        assert sc["ExitCode"] == "0:0", (job["rule"], sc["ExitCode"])
        assert sc["Comment"].startswith(f"rule_{job['rule']}")
        assert sc["WorkDir"] == str(workdir)
        assert Path(sc["StdOut"]) == job["log"]
        log = job["log"].read_text()
        # The job's own environment, printed by Snakemake inside the job (--verbose).
        assert f"'SLURM_JOB_ID': '{job['id']}'" in log, f"{job['rule']}: no SLURM_JOB_ID in log"
        assert re.search(rf"^rule {job['rule']}:$", log, flags=re.MULTILINE)


def test_training_job_asks_for_and_gets_the_gpu(jobs):
    train = by_rule(jobs, "train")
    sbatch = train["sbatch"]
    assert "--gpus=1" in sbatch.split(), sbatch
    assert re.search(r" -p '?gpu'? ", sbatch), sbatch
    assert train["scontrol"]["Partition"] == "gpu"
    assert train["scontrol"]["TresPerJob"] == "gres:gpu:1"
    # SLURM hands the (fake) device to the job.
    assert "'SLURM_JOB_GPUS': '0'" in train["log"].read_text()


def test_cpu_jobs_ask_for_no_gpu(jobs):
    default_partition = subprocess.run(
        ["sinfo", "--noheader", "--format=%P"], capture_output=True, text=True, check=True
    ).stdout.split()
    default_partition = next(p.rstrip("*") for p in default_partition if p.endswith("*"))
    for job in jobs:
        if job["rule"] == "train":
            continue
        assert "--gpus" not in job["sbatch"], job["sbatch"]
        assert job["scontrol"]["Partition"] == default_partition, job["rule"]
        assert job["scontrol"].get("TresPerJob", "(null)") in ("(null)", ""), job["rule"]


def test_training_fell_back_to_cpu(slurm_run):
    workdir, _ = slurm_run
    summary = json.loads((workdir / f"results/{MODEL}/training/summary.json").read_text())
    assert summary["device"] == "cpu", summary
    assert "trained on device cpu" in (workdir / f"logs/{MODEL}/train.log").read_text()


def test_memory_and_runtime_come_from_the_profile(jobs):
    # profiles/slurm sizes train at >= 16 GB and >= 120 min on attempt 1; tiny inputs hit the floor.
    train = by_rule(jobs, "train")
    assert "--mem 16000" in train["sbatch"], train["sbatch"]
    assert " -t 120 " in train["sbatch"], train["sbatch"]
    hvg = by_rule(jobs, "hvg")
    assert "--mem 4000" in hvg["sbatch"], hvg["sbatch"]
