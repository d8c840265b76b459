"""The CV ceiling against the truth: on negative-binomial counts with known means, what a model
that knows the means scores with n samples (the four CV metrics, cell-wise and gene-wise), what
the ceiling of cv.json estimates from the n samples alone (metrics.replicate_ceiling), what the
leave-one-out scores it starts from give (a model of n - 1 samples), and what resampling the
observed counts would claim (the reference docs/metrics.md explains we do not use).

Each draw of the data is scored by the truth-knowing model and by the ceiling; the table gives
the mean over draws and the mean paired difference with its standard error.

    .venv/bin/python benchmarks/cv_ceiling.py [--draws 30] [--samples 3]
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
    parser.add_argument("--draws", type=int, default=30)
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

    print(f"{N_CELLS} cells x {N_GENES} genes, theta {THETA}, {args.samples} samples, "
          f"{args.draws} draws of the data")  # fmt: skip
    for name, axis in (("cell-wise", 1), ("gene-wise", 0)):
        scores = {"model": [], "ceiling": [], "leave-one-out": [], "NB": [], "Poisson": []}
        for _ in range(args.draws):
            observed = nb(mean)
            seen = cvs(observed, axis)
            samples = np.stack([cvs(nb(mean), axis) for _ in range(args.samples)])
            scores["model"].append(metrics.compare_cv(samples.mean(0), seen))
            scores["ceiling"].append(metrics.replicate_ceiling(samples))
            scores["leave-one-out"].append(metrics.leave_one_out_scores(samples))
            floor = np.maximum(observed, 1e-8)
            resampled = np.mean([cvs(nb(floor), axis) for _ in range(args.samples)], axis=0)
            scores["NB"].append(metrics.compare_cv(resampled, seen))
            poisson = [cvs(rng.poisson(observed).astype(float), axis) for _ in range(args.samples)]
            scores["Poisson"].append(metrics.compare_cv(np.mean(poisson, 0), seen))
        for key in metrics.CV_METRICS:
            values = {k: np.array([row[key] for row in v]) for k, v in scores.items()}
            line = f"{name} {key:8s} model knowing the means {values['model'].mean():.4f}"
            for other in ("ceiling", "leave-one-out"):
                gap = values["model"] - values[other]
                se = gap.std(ddof=1) / np.sqrt(len(gap))
                line += f" | {other} {values[other].mean():.4f} (model - it {gap.mean():+.4f}"
                line += f" ± {se:.4f})"
            line += f" | resampled NB {values['NB'].mean():.2f}, Poisson "
            line += f"{values['Poisson'].mean():.2f}"
            print(line)


if __name__ == "__main__":
    main()
