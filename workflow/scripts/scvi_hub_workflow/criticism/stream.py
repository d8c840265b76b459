"""One pass of posterior samples, minibatch by minibatch, fed to the accumulators."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from .nonzeros import Nonzeros
from .observed import ObservedCounts
from .sampling import CountLikelihood, draw_counts, likelihood_blocks, sample_rng

log = logging.getLogger(__name__)


def stream(
    model,
    observed: ObservedCounts,
    accumulators: Sequence,
    *,
    n_samples: int,
    batch_size: int,
    seed: int,
    n_workers: int = 1,
    modality: str = "rna",
) -> None:
    """Draw posterior samples of ``modality`` ("rna", or a CITE-seq model's "protein")
    minibatch by minibatch and feed them, with the matching observed rows, to every
    accumulator.

    The forward passes run in one background thread (in order: they use torch's global RNG);
    drawing counts and the bookkeeping of up to ``n_workers`` minibatches run in worker threads
    (numpy releases the GIL there); contributions are merged in minibatch order.
    """
    n_features = model.adata.n_vars if modality == "rna" else model.summary_stats.n_proteins
    if observed.shape != (model.adata.n_obs, n_features):
        raise ValueError(
            f"observed {modality} counts {observed.shape} do not match the model's data "
            f"{(model.adata.n_obs, n_features)}"
        )
    started = time.perf_counter()
    blocks = likelihood_blocks(
        model, n_samples=n_samples, batch_size=batch_size, seed=seed, modality=modality
    )

    def contributions(start: int, stop: int, likelihood: CountLikelihood, counts: Nonzeros):
        drawn = draw_counts(likelihood, sample_rng(seed, start))
        sources = [counts, *(Nonzeros.from_dense(block) for block in drawn)]
        return [acc.contribution(start, stop, sources) for acc in accumulators]

    def merge(start: int, stop: int, future) -> None:
        for accumulator, contribution in zip(accumulators, future.result(), strict=True):
            accumulator.add(start, stop, contribution)

    pending: deque = deque()
    with ThreadPoolExecutor(n_workers) as pool:
        for start, stop, likelihood in _prefetched(blocks, depth=n_workers):
            counts = observed.nonzeros(start, stop)  # h5py reads stay in this thread
            pending.append(
                (start, stop, pool.submit(contributions, start, stop, likelihood, counts))
            )
            if len(pending) > n_workers:  # bounds the minibatches held in memory
                merge(*pending.popleft())
        while pending:
            merge(*pending.popleft())
    seconds = time.perf_counter() - started
    log.info("streamed %d cells (%s) in %.1f s", model.adata.n_obs, modality, seconds)


def _prefetched(iterator: Iterator, depth: int = 1) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead of the consumer."""
    done = object()
    items: queue.Queue = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for item in iterator:
                items.put(item)
            items.put(done)
        except BaseException as error:  # re-raised in the consumer
            items.put(error)

    threading.Thread(target=produce, daemon=True).start()
    while (item := items.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item
