"""Training progress in the job log, so `tail -f logs/<model>/train.log` shows where training is.

The progress bar is off (it fills logs with carriage returns), and Lightning prints nothing else.
This logs one line per epoch (epoch, losses, elapsed, ETA), and one every `every_s` seconds
inside an epoch that takes longer. The console (the job's stderr, which Snakemake shows) gets
the first and last epoch and at most one line a minute between, so a long training is never
silent and a short one never floods it. The log file is line-buffered (rule_io.logged_to), so each
line reaches the file, also on a SLURM node, as it is written.
"""

from __future__ import annotations

import logging
import math
import time

from lightning.pytorch.callbacks import Callback

from .rule_io import to_console

log = logging.getLogger(__name__)


def duration(seconds: float) -> str:
    """'42s', '3m05s', '1h02m'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def losses(metrics: dict) -> str:
    """The scalar metrics Lightning holds (ELBO, losses; train and validation), sorted by name."""
    values = []
    for name in sorted(metrics):
        value = metrics[name]
        if getattr(value, "numel", lambda: 1)() == 1:
            values.append(f"{name} {float(value):.5g}")
    return ", ".join(values)


class ProgressLog(Callback):
    """Log each training epoch of one `model.train()` call, labelled with its `phase`."""

    def __init__(self, phase: str, every_s: float = 30.0, console_every_s: float = 60.0):
        self.phase = phase
        self.every_s = every_s
        self.console_every_s = console_every_s
        self.started = self.last = self.last_console = 0.0

    def on_train_start(self, trainer, pl_module):
        self.started = self.last = time.monotonic()
        log.info("%s: training for at most %d epochs", self.phase, trainer.max_epochs)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.info(
                "%s: epoch %d/%d, batch %d/%s; elapsed %s",
                self.phase,
                trainer.current_epoch + 1,
                trainer.max_epochs,
                batch_idx + 1,
                trainer.num_training_batches,
                duration(now - self.started),
            )

    def on_train_epoch_end(self, trainer, pl_module):
        now = time.monotonic()
        self.last = now
        done = trainer.current_epoch + 1
        elapsed = now - self.started
        left = max(trainer.max_epochs - done, 0)
        # Early stopping can end sooner: the ETA is for the remaining epochs at the mean pace.
        eta = elapsed / done * left if done else math.nan
        log.info(
            "%s: epoch %d/%d: %s; elapsed %s, ETA %s",
            self.phase,
            done,
            trainer.max_epochs,
            losses(trainer.callback_metrics),
            duration(elapsed),
            duration(eta) if math.isfinite(eta) else "unknown",
        )
        # The console gets the first epoch, the last, and at most one line a minute between.
        if done in (1, trainer.max_epochs) or now - self.last_console >= self.console_every_s:
            self.last_console = now
            to_console(
                f"{self.phase}: epoch {done}/{trainer.max_epochs}, elapsed {duration(elapsed)}, "
                f"ETA {duration(eta) if math.isfinite(eta) else 'unknown'}"
            )
