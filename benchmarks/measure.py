"""Wall time and peak RSS of one benchmark worker, each in a fresh interpreter.

The worker runs as ``python <script> --worker <args>`` under an intermediate parent started
for it alone, so RUSAGE_CHILDREN's peak is that worker's and no earlier one's. The time includes
interpreter start-up and imports, as a workflow job pays them.
"""

from __future__ import annotations

import json
import subprocess
import sys

# The intermediate parent: runs the worker, prints its last line of output, then the measurement.
_PARENT = """
import json, os, resource, subprocess, sys, time
timeout, script, *args = sys.argv[1:]
started = time.perf_counter()
out = subprocess.run([sys.executable, script, "--worker", *args], check=True,
                     timeout=float(timeout), capture_output=True, text=True)
print(json.dumps((out.stdout.strip().splitlines() or [""])[-1]))
print(json.dumps({
    "seconds": round(time.perf_counter() - started, 1),
    "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2),
    "load_average": os.getloadavg()[0],
}))
"""


def measured(script: str, *args: str, timeout: float = 1800) -> tuple[str, dict]:
    """Run the worker of ``script`` with ``args``; return (its last line of output,
    {"seconds", "peak_rss_gib", "load_average"})."""
    out = subprocess.run(
        [sys.executable, "-c", _PARENT, str(timeout), script, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    last_line, measurement = out.stdout.strip().splitlines()[-2:]
    return json.loads(last_line), json.loads(measurement)
