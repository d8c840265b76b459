"""The CV ceiling against the truth: on negative-binomial counts with known means, what a model
that knows the means scores (cell-wise and gene-wise CV Pearson), what the ceiling of cv.json
estimates from the samples alone (metrics.replicate_ceiling), and what resampling the observed
counts would claim (the reference docs/metrics.md explains we do not use).

    .venv/bin/python benchmarks/cv_ceiling.py [--draws 3] [--samples 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))
from scvi_hub_workflow import metrics  # noqa: E402

N_CELLS, N_GENES, THETA = 1500, 800, 5.0


def cvs(x: np.ndarray, axis: int) -> np.ndarray:
    return metrics.cv_from_moments(x.sum(axis=axis), (x * x).sum(axis=axis), x.shape[axis])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--samples", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = rng.lognormal(-1.0, 1.2, N_GENES)
    types = rng.integers(6, size=N_CELLS)
    fold = np.where(rng.random((6, N_GENES)) < 0.03, 2 ** rng.uniform(1.5, 3, (6, N_GENES)), 1)
    library = rng.lognormal(np.log(1500), 0.35, N_CELLS)
    mean = base * fold[types]
    mean = mean / mean.sum(1, keepdims=True) * library[:, None]

    def nb(m):
        return rng.poisson(rng.gamma(THETA, m / THETA)).astype(np.float64)

    for name, axis in (("cell-wise", 1), ("gene-wise", 0)):
        rows = {"model knowing the means": [], "ceiling (cv.json)": [], "NB resample": []}
        rows["Poisson resample"] = []
        for _ in range(args.draws):
            observed = nb(mean)
            samples = np.stack([cvs(nb(mean), axis) for _ in range(args.samples)])
            seen = cvs(observed, axis)
            rows["model knowing the means"].append(metrics.pearson(samples.mean(0), seen))
            rows["ceiling (cv.json)"].append(metrics.replicate_ceiling(samples)["pearson"])
            floor = np.maximum(observed, 1e-8)
            resampled = [cvs(nb(floor), axis) for _ in range(args.samples)]
            rows["NB resample"].append(metrics.pearson(np.mean(resampled, 0), seen))
            poisson = [cvs(rng.poisson(observed).astype(float), axis) for _ in range(args.samples)]
            rows["Poisson resample"].append(metrics.pearson(np.mean(poisson, 0), seen))
        for label, values in rows.items():
            print(f"{name:10s} {label:24s} Pearson " + " ".join(f"{v:.2f}" for v in values))


if __name__ == "__main__":
    main()
