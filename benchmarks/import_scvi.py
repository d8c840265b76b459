"""Benchmark: `import scvi` with and without jax hidden (compat.import_scvi), as a job pays it.

scvi-tools 1.4.2 imports jax at start-up whenever it is installed; every job but the integration
metrics runs without it. Each variant runs in a fresh interpreter, interleaved, so machine load
affects both alike; the table gives the median wall time and the ratio.

    python benchmarks/import_scvi.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

VARIANTS = {
    "import scvi": "import scvi",
    "compat.import_scvi()": (
        "from scvi_hub_workflow.compat import import_scvi; import_scvi(); import scvi.hub"
    ),
}
CHECK = "; import sys; assert ('jax' in sys.modules) == {jax}"


def wall_s(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    load = os.getloadavg()[0]
    for _ in range(runs):
        for (name, code), jax in zip(VARIANTS.items(), (True, False), strict=True):
            times[name].append(wall_s(code + CHECK.format(jax=jax)))
    base = statistics.median(times["import scvi"])
    print(f"{runs} runs each, interleaved; load average {load:.1f} at the start\n")
    print("| variant | median wall (s) | min-max (s) | ratio |")
    print("|---|---|---|---|")
    for name, found in times.items():
        median = statistics.median(found)
        print(
            f"| {name} | {median:.2f} | {min(found):.2f}-{max(found):.2f} | {median / base:.2f} |"
        )


if __name__ == "__main__":
    main()
