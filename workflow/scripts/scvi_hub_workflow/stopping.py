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
from collections.abc import Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class JobStopped(BaseException):
    """A stop signal arrived. A BaseException, so no `except Exception` swallows it, and every
    temp-then-rename block in flight (rule_io.atomic_path/atomic_dir) discards its output."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; no output was written")


def _raise_stopped(signum, _frame):
    # Later signals must not interrupt the cleanup this one starts.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
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
