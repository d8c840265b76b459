"""Stopping a run promptly: a job ends within seconds of SIGTERM or SIGINT, writing nothing.

Two sides, because neither stops on its own:

* in a job, Lightning replaces the SIGTERM handler with one that only sets a flag, so training
  runs on to its last epoch and writes outputs that look complete (SLURM sends SIGTERM at the
  time limit, then SIGKILL);
* in Snakemake, SIGINT cancels the local executor by waiting for its running jobs to finish
  (training: minutes), without signalling them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class JobStopped(BaseException):
    """A stop signal arrived. A BaseException, so no `except Exception` swallows it, and every
    temp-then-rename block in flight (rule_io.atomic_path/atomic_dir) discards its output."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; no output was written")


# Seconds a stopped job may take to unwind before it is ended hard.
STOP_GRACE_S = 10.0


def _raise_stopped(signum, _frame):
    # Later signals must not interrupt the cleanup this one starts.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # Python drops an exception raised in a finaliser (__del__, which garbage collection runs
    # at any point of training): the job would train on, deaf to signals. So the stop is also
    # made certain: unless the job has unwound by then, it exits hard (its outputs are still
    # only temporary names, never the real ones).
    watchdog = threading.Timer(STOP_GRACE_S, os._exit, args=(128 + signum,))
    watchdog.daemon = True
    watchdog.start()
    raise JobStopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into JobStopped for the block, then exit with 128 + signal.

    Installed before Lightning registers its own SIGTERM handler: Lightning keeps a handler
    that is already there and calls it after its own, so this one still runs during training.
    """
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        yield
    except JobStopped as stopped:
        log.error("%s", stopped)
        raise SystemExit(128 + stopped.signum) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_jobs_on_interrupt() -> None:
    """In the Snakemake process: on SIGINT, send SIGTERM to every process it started (the
    running jobs, which then stop as above), then interrupt Snakemake as usual."""
    previous = signal.getsignal(signal.SIGINT)
    if getattr(previous, "forwards_to_jobs", False):
        return  # the Snakefile was parsed before in this process

    def forward(signum, frame):
        import psutil  # a dependency of Snakemake, which runs this

        children = psutil.Process(os.getpid()).children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    forward.forwards_to_jobs = True
    # Outside the main thread (Snakemake's API used from a thread) there is nothing to forward.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, forward)


# --- a run killed hard (SIGKILL, the OOM killer) leaves Snakemake's locks behind -----------
# Snakemake's lock files name the files a run writes, not the process that wrote them, so the
# next run refuses to start until someone runs `--unlock` (which also unlocks a run that is
# alive). Each local run therefore records, once it holds its locks, which lock files are its own,
# which process it is and its process group (its jobs'); the next run removes only the lock files
# of a recorded run whose Snakemake has ended and whose jobs have too. Lock files without a record
# (a cluster run, whose jobs outlive Snakemake; an older workflow; `--no-hooks`) are left to
# Snakemake.

LOCK_DIR = ".snakemake/locks"
OWNER_GLOB = "owner.*.json"


def record_lock_owner(lock_files, lock_dir: str | os.PathLike = LOCK_DIR) -> None:
    """In the Snakemake process holding `lock_files` (its onstart): say whose they are."""
    import json
    import socket
    from pathlib import Path

    import psutil  # a dependency of Snakemake, which runs this

    names = sorted(Path(f).name for f in lock_files)
    if not names:
        return
    me = psutil.Process()
    record = {
        "host": socket.gethostname(),
        "pid": me.pid,
        "create_time": me.create_time(),
        "pgid": os.getpgid(0),
        "locks": names,
    }
    path = Path(lock_dir) / f"owner.{me.pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _gone(record: dict) -> bool:
    """The run of `record` has ended: its Snakemake process and every job in its process group
    (a run on another host counts as alive: it cannot be checked from here)."""
    import socket

    import psutil

    if record.get("host") != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(record["pid"]))
        # A reused pid belongs to a process started later.
        if abs(process.create_time() - float(record["create_time"])) <= 1e-3:
            return False
    except psutil.NoSuchProcess:
        pass
    return not _group_alive(int(record["pgid"]))


def _group_alive(pgid: int) -> bool:
    """A process of group `pgid` runs: a job that outlived its Snakemake (killed alone).
    This process and its ancestors do not count: a shell script that runs the same command
    again can share the group of the run that was killed."""
    import psutil

    me = psutil.Process()
    ours = {me.pid, *(p.pid for p in me.parents())}
    for process in psutil.process_iter():
        try:
            if process.pid in ours or os.getpgid(process.pid) != pgid:
                continue
            # A killed job nobody has reaped yet (an orphan waits for init) runs no more.
            if process.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


def remove_stale_locks(lock_dir: str | os.PathLike = LOCK_DIR) -> list[str]:
    """Before a run locks: remove the lock files of recorded runs whose process has ended."""
    import json
    from pathlib import Path

    removed = []
    for path in sorted(Path(lock_dir).glob(OWNER_GLOB)):
        try:
            record = json.loads(path.read_text())
            stale = _gone(record)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: leave it, and its locks, to Snakemake's --unlock
        if not stale:
            continue
        for name in record.get("locks", []):
            lock = Path(lock_dir) / Path(name).name
            if lock.is_file():
                lock.unlink()
                removed.append(name)
        path.unlink(missing_ok=True)
    return removed
