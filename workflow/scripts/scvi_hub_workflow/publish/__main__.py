"""``python -m scvi_hub_workflow.publish``: see cli.py."""

from .cli import main

raise SystemExit(main())
