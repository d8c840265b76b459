"""Command line: ``python -m scvi_hub_workflow.publish --hub DIR --model DIR ...``."""

from __future__ import annotations

import argparse
import json
import logging

from ..config import section_settings
from ..layout import ATTEMPTS, FIRST_WAIT_S
from .errors import PublishError
from .manifest import HUB_MAX_FILE_BYTES
from .step import run

log = logging.getLogger("scvi_hub_workflow.publish")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m scvi_hub_workflow.publish --hub DIR --model DIR ...``."""
    parser = argparse.ArgumentParser(description="Publish a hub folder to the Hugging Face Hub.")
    parser.add_argument("--hub", required=True, help="the hub folder to publish")
    parser.add_argument("--model", required=True, help="the trained model folder (verification)")
    parser.add_argument("--settings", required=True, help="the publish settings, as JSON")
    parser.add_argument("--receipt", required=True, help="where to write the receipt")
    parser.add_argument(
        "--certification", help="where to record the certification (kept when it fails)"
    )
    parser.add_argument("--max-file-bytes", type=int, default=HUB_MAX_FILE_BYTES)
    parser.add_argument("--attempts", type=int, default=ATTEMPTS)
    parser.add_argument(
        "--wait", type=float, default=FIRST_WAIT_S, help="first retry wait (seconds)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        receipt = run(
            args.hub,
            args.model,
            section_settings("publish", json.loads(args.settings)),
            args.receipt,
            args.certification,
            max_file_bytes=args.max_file_bytes,
            attempts=args.attempts,
            wait_s=args.wait,
        )
    except PublishError as error:
        log.error("%s", error)
        return 1
    log.info("receipt written to %s (published: %s)", args.receipt, receipt["published"])
    return 0
