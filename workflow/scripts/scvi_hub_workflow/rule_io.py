"""Small helpers shared by the thin rule scripts: logging into the rule's log, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .stopping import stop_on_signals

# Terminal control sequences (colours, cursor moves) that rich and tqdm write.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


class PlainText(io.TextIOBase):
    """A text stream that writes to ``target`` without terminal control sequences, and
    without the blanks rich pads its lines with."""

    def __init__(self, target):
        self.target = target
        self.blanks = ""  # trailing blanks held back until it is known whether a line ends

    def write(self, text: str) -> int:
        plain = self.blanks + ANSI_ESCAPE.sub("", text)
        body = plain.rstrip(" \t")
        self.blanks = plain[len(body) :]
        self.target.write(re.sub(r"[ \t]+\n", "\n", body))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False  # libraries then leave colours out themselves

    def fileno(self) -> int:
        return self.target.fileno()


class NotWrittenYet(logging.Filter):
    """Drop a record that a handler of its own logger (Lightning's, for one) already wrote to
    the same log: the root's copy would repeat the line."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def filter(self, record: logging.LogRecord) -> bool:
        logger = logging.getLogger(record.name)
        while logger is not None and logger is not logging.root:
            if any(getattr(h, "stream", None) is self.stream for h in logger.handlers):
                return False
            if not logger.propagate:
                break
            logger = logger.parent
        return True


# While a job runs in logged_to: its own stderr (the console Snakemake shows) and the log's path.
_console: list[tuple[Any, str]] = []


def to_console(message: str) -> None:
    """One line on the job's stderr, where the user running Snakemake looks (the log file has
    everything): prefixed with the log's path. Outside logged_to, nothing."""
    if _console:
        stream, log_path = _console[-1]
        try:
            stream.write(f"{log_path}: {message}\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken console never fails the job


@contextlib.contextmanager
def logged_to(log_path: str | os.PathLike) -> Iterator[logging.Logger]:
    """Send stdout, stderr and the ``logging`` module to the rule's log file, as plain text
    (no colour codes) and each record once.

    Exceptions are logged with their traceback before they propagate, so the log
    alone explains a failed job. SIGTERM and SIGINT stop the job at once (see stopping.py).
    """
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as file:
        handle = PlainText(file)
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = handle
        root = logging.getLogger()
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(NotWrittenYet(handle))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        _console.append((old_err, str(log_path)))
        try:
            with stop_on_signals():
                yield logging.getLogger("scvi_hub_workflow")
        except SystemExit:
            raise  # a stop signal, already logged
        except BaseException:
            logging.getLogger("scvi_hub_workflow").exception("job failed")
            raise
        finally:
            _console.pop()
            root.removeHandler(handler)
            sys.stdout, sys.stderr = old_out, old_err


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only on success.

    Readers never see a half-written file: either the old one (or none) or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp creates the file 0600; give it the mode any new file gets, so results on a
    # shared project folder are as readable as the user's umask allows.
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary siblings of `path` that a killed job left behind.

    SIGKILL (the OOM killer, a lost node, `kill -9`) runs no cleanup, so a job killed while
    writing leaves `.<name>.<random>.tmp`. Snakemake runs one job per output at a time, so a
    temporary sibling that exists when the next job starts writing `path` is stale.
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp")
    for stale in path.parent.iterdir():
        if not pattern.fullmatch(stale.name):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; NaN is written as null (valid JSON)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_nan_to_none(data), indent=2, sort_keys=False) + "\n")


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 would hide the model from the group
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (datasets and models can be many GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
