"""Posterior samples: the decoder's count likelihood per minibatch, and exact numpy samplers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..compat import data_loader


@dataclass(frozen=True)
class CountLikelihood:
    """The model's count distribution for one minibatch; arrays (samples, cells, genes) float32,
    or broadcastable to that shape.

    ``kind`` is "poisson" (``mean`` only), "nb" (``mean``, ``theta``: inverse dispersion),
    "zinb" (also ``zero_prob``, the probability of an extra zero) or "nb_mixture" (TOTALVI's
    proteins: NB of mean ``mean`` with probability ``mix_prob`` (the background), else of mean
    ``mean2`` (the foreground), both of inverse dispersion ``theta``).
    """

    kind: str
    mean: np.ndarray
    theta: np.ndarray | None = None
    zero_prob: np.ndarray | None = None
    mean2: np.ndarray | None = None
    mix_prob: np.ndarray | None = None


# Same clip scvi-tools applies to Poisson rates before sampling; numpy refuses huge rates.
MAX_POISSON_RATE = 1e8


def likelihood_blocks(
    model, *, n_samples: int, batch_size: int, seed: int, modality: str = "rna"
) -> Iterator[tuple[int, int, CountLikelihood]]:
    """Yield ``(start, stop, likelihood)`` of ``modality`` ("rna", or "protein" for TOTALVI)
    for consecutive cell minibatches, in cell order.

    Only the forward pass runs in torch (latent draw from the stored posterior, then the
    decoder); the counts themselves are drawn by ``draw_counts``, in numpy, because torch's CPU
    gamma and Poisson samplers are single-threaded and about half as fast.
    """
    import torch

    torch.manual_seed(seed)
    loader = data_loader(model, batch_size)
    model.module.eval()
    # TOTALVAE outputs zero-inflation logits whatever its likelihood: only ZINB uses them
    zinb = getattr(model.module, "gene_likelihood", None) == "zinb"
    start = 0
    with torch.inference_mode():
        for tensors in loader:
            _, generative = model.module.forward(
                tensors, inference_kwargs={"n_samples": n_samples}, compute_loss=False
            )
            likelihood = _modality_likelihood(generative, modality, n_samples, zinb)
            stop = start + likelihood.mean.shape[1]
            yield start, stop, likelihood
            start = stop


def _array(tensor, n_samples: int) -> np.ndarray:
    import torch

    # scvi drops the sample axis when n_samples is 1
    values = tensor.detach().to("cpu", torch.float32).numpy()
    return values[None] if n_samples == 1 else values


def _modality_likelihood(
    generative: dict, modality: str, n_samples: int, zinb: bool = False
) -> CountLikelihood:
    """The count distribution of one modality from the module's generative outputs: a
    distribution under "px" (SCVI, SCANVI, CondSCVI), or TOTALVAE's parameter dicts "px_"
    (RNA: NB or ZINB) and "py_" (proteins: the background/foreground NB mixture its
    `sample` draws from)."""
    import torch

    if "px" in generative and modality == "rna":
        return _count_likelihood(generative["px"], n_samples)
    if "px_" not in generative:
        raise ValueError(f"the model has no {modality!r} likelihood to sample")
    if modality == "rna":
        px = generative["px_"]
        mean, theta = _array(px["rate"], n_samples), _array(px["r"], n_samples)
        if zinb:
            zero_prob = _array(torch.sigmoid(px["dropout"]), n_samples)
            return CountLikelihood("zinb", mean, theta, zero_prob)
        return CountLikelihood("nb", mean, theta)
    py = generative["py_"]
    return CountLikelihood(
        "nb_mixture",
        _array(py["rate_back"], n_samples),
        _array(py["r"], n_samples),
        mean2=_array(py["rate_fore"], n_samples),
        mix_prob=_array(torch.sigmoid(py["mixing"]), n_samples),
    )


def _count_likelihood(px, n_samples: int) -> CountLikelihood:
    import torch
    from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

    def array(tensor: torch.Tensor) -> np.ndarray:
        # scvi drops the sample axis when n_samples is 1
        values = tensor.detach().to("cpu", torch.float32).numpy()
        return values[None] if n_samples == 1 else values

    if isinstance(px, ZeroInflatedNegativeBinomial):
        return CountLikelihood("zinb", array(px.mu), array(px.theta), array(px.zi_probs))
    if isinstance(px, NegativeBinomial):
        return CountLikelihood("nb", array(px.mu), array(px.theta))
    if isinstance(px, torch.distributions.Poisson):
        return CountLikelihood("poisson", np.minimum(array(px.rate), MAX_POISSON_RATE))
    raise ValueError(f"no count sampler for the model's likelihood {type(px).__name__}")


# Means up to this are sampled by inverting the NB distribution function (about 1 + mean steps,
# most entries settle on the first: single-cell means are mostly well below 1); larger means by
# the gamma-Poisson mixture, whose cost does not grow with the mean.
INVERSION_MAX_MEAN = 4.0
# A loop guard: the inversion of a mean <= 4 ends long before this unless rounding stalls the
# running sum of probabilities below the uniform draw; such entries go to the gamma-Poisson path.
MAX_INVERSION_STEPS = 2000


def draw_counts(likelihood: CountLikelihood, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One (cells, genes) float32 block of sampled counts per posterior sample.

    Exact samplers in numpy, about three times faster than torch's on CPU (and they release the
    GIL, so minibatches sample in parallel threads); zero inflation zeroes each count with
    probability ``zero_prob``.
    """
    for i, mean in enumerate(likelihood.mean):
        if likelihood.kind == "poisson":
            counts = rng.poisson(mean.astype(np.float64)).astype(np.float32)
        elif likelihood.kind == "nb_mixture":
            # the component first (background with mix_prob), as scvi-tools' sampler does
            background = rng.random(mean.shape, dtype=np.float32) < likelihood.mix_prob[i]
            mean = np.where(background, mean, likelihood.mean2[i])
            theta = likelihood.theta[i] if likelihood.theta.ndim == 3 else likelihood.theta
            counts = negative_binomial(mean, np.broadcast_to(theta, mean.shape), rng)
        else:
            theta = likelihood.theta[i] if likelihood.theta.ndim == 3 else likelihood.theta
            counts = negative_binomial(mean, np.broadcast_to(theta, mean.shape), rng)
        if likelihood.kind == "zinb":
            counts[rng.random(mean.shape, dtype=np.float32) < likelihood.zero_prob[i]] = 0
        yield counts


def negative_binomial(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NB(mean, inverse dispersion theta) counts, float32, same shape as ``mean``."""
    shape = mean.shape
    mean = mean.astype(np.float64).ravel()
    counts = np.zeros(mean.size, dtype=np.float32)
    u = rng.random(mean.size)
    # P(X > 0) <= E[X], so u <= 1 - mean settles on 0 without computing P(X = 0): at single-cell
    # means that skips most entries. Entries with means >= 1 always go on.
    going = np.flatnonzero(u > 1 - mean)
    mean, theta, u = mean[going], theta.ravel()[going], u[going]
    low = mean <= INVERSION_MAX_MEAN
    inverted, stalled = _inverted_negative_binomial(u[low], mean[low], theta[low])
    counts[going[low]] = inverted
    high = np.flatnonzero(~low)
    high = np.concatenate([high, np.flatnonzero(low)[stalled]]) if stalled.size else high
    counts[going[high]] = _gamma_poisson(mean[high], theta[high], rng)
    return counts.reshape(shape)


def _inverted_negative_binomial(
    u: np.ndarray, mean: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest k with P(X <= k) >= u for each entry, and the positions where rounding stalled.

    P(X = 0) = (1 - q)^theta and P(X = k) = P(X = k - 1) (k - 1 + theta) / k q with
    q = mean / (theta + mean); only entries not settled yet are carried to the next k.
    """
    mean = mean.astype(np.float64)
    theta = theta.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.nan_to_num(mean / (theta + mean))
    probability = np.exp(theta * np.log1p(-q))
    counts = np.zeros(u.size, dtype=np.float32)
    active = np.flatnonzero(u > probability)  # the others are 0
    u, cdf, probability, q, theta = (
        x[active] for x in (u, probability.copy(), probability, q, theta)
    )
    for k in range(1, MAX_INVERSION_STEPS + 1):
        if not active.size:
            break
        probability *= (k - 1 + theta) / k * q
        cdf += probability
        settled = u <= cdf
        counts[active[settled]] = k
        going = ~settled
        active, u, cdf, probability, q, theta = (
            x[going] for x in (active, u, cdf, probability, q, theta)
        )
    return counts, active


def _gamma_poisson(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NB as a Poisson whose rate is Gamma(theta, theta / mean) distributed."""
    gamma = rng.standard_gamma(theta, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.nan_to_num(gamma.astype(np.float64) * (mean / theta))
    return rng.poisson(np.minimum(rate, MAX_POISSON_RATE)).astype(np.float32)


def sample_rng(seed: int, start: int) -> np.random.Generator:
    """The generator of the minibatch starting at cell ``start``: draws do not depend on which
    thread samples which minibatch, or in what order."""
    return np.random.default_rng([seed, start])
