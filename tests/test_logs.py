"""The rule logs (rule_io.logged_to): plain text, each line once."""

from __future__ import annotations

import logging
import sys

from scvi_hub_workflow.rule_io import logged_to


def test_logs_hold_no_colour_codes_and_no_repeated_library_lines(tmp_path):
    log_path = tmp_path / "job.log"
    library = logging.getLogger("a_library")
    try:
        with logged_to(log_path) as log:
            # a library that, like Lightning, gives its logger a handler on stderr when imported
            own = logging.StreamHandler(sys.stderr)
            own.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
            library.addHandler(own)
            library.setLevel(logging.INFO)
            library.info("GPU available: False")
            print("\x1b[34mINFO    \x1b[0m Training for \x1b[1;36m2\x1b[0m epochs.      ")
            log.info("trained")
    finally:
        library.handlers.clear()
    text = log_path.read_text()
    assert "\x1b" not in text
    assert "INFO     Training for 2 epochs.\n" in text
    assert text.count("GPU available: False") == 1
    assert "scvi_hub_workflow: trained" in text
