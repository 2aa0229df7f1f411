"""Training batches, made in the training process or ahead of it by worker processes.

With ``workers=0`` every crop draws from the training loop's own random generator, in order
(the stream the bundled CPU recipes were trained with).  With ``workers >= 1`` each batch
gets its own seed, drawn from that generator at the start of the epoch, so a batch is the
same whichever process makes it: ``workers=1`` (in-process) and ``workers=14`` give
identical batches, and a run resumed at an epoch boundary continues exactly.  Worker
processes are forked (copy-on-write access to the cached samples); where ``fork`` is not
available the batches are made in-process, with the same result.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Optional

import numpy as np

from .augment import make_batch

__all__ = ["BatchMaker"]

# the samples a forked worker reads (set in the parent just before the fork)
_SHARED: Optional[tuple] = None


def _make_seeded(data: tuple, idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images, flows, fgs, scales, crop = data
    return make_batch(images, flows, fgs, scales, idx, np.random.default_rng(seed), crop)


def _worker_make(idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return _make_seeded(_SHARED, idx, seed)  # type: ignore[arg-type]


class BatchMaker:
    """Makes the augmented batches of each epoch.

    Parameters
    ----------
    images, flows, fgs, scales
        The cached training samples (see :func:`flowseg.engine.training.augment.make_batch`).
    crop : int
        Crop side.
    workers : int
        0: in-process, crops drawn from the loop's generator; >= 1: per-batch seeds, made by
        that many forked processes (1: in-process).
    """

    def __init__(self, images: Sequence[np.ndarray], flows: Sequence[np.ndarray],
                 fgs: Sequence[np.ndarray], scales: Sequence[float], crop: int,
                 workers: int = 0) -> None:
        if int(workers) < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.data = (images, flows, fgs, scales, int(crop))
        self.workers = int(workers)
        self._pool = None

    def _get_pool(self):
        global _SHARED
        if self._pool is None and self.workers > 1 and "fork" in mp.get_all_start_methods():
            _SHARED = self.data
            self._pool = mp.get_context("fork").Pool(self.workers)
        return self._pool

    def epoch(self, rng: np.random.Generator, order: np.ndarray,
              batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``(indices, x, y)`` for the batches of one epoch, in order.

        Per-batch seeds (``workers >= 1``) are all drawn from ``rng`` before the first batch.
        """
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        if self.workers == 0:
            images, flows, fgs, scales, crop = self.data
            for idx in batches:
                yield (idx, *make_batch(images, flows, fgs, scales, idx, rng, crop))
            return
        seeds = [int(s) for s in rng.integers(0, 2 ** 63 - 1, size=len(batches))]
        pool = self._get_pool()
        if pool is None:
            for idx, seed in zip(batches, seeds):
                yield (idx, *_make_seeded(self.data, idx, seed))
            return
        # keep 2 batches per worker in flight, handed out in order
        todo = iter(zip(batches, seeds))
        pending: deque = deque()

        def submit() -> None:
            nxt = next(todo, None)
            if nxt is not None:
                pending.append((nxt[0], pool.apply_async(_worker_make, nxt)))

        for _ in range(2 * self.workers):
            submit()
        while pending:
            idx, res = pending.popleft()
            x, y = res.get()
            submit()
            yield idx, x, y

    def close(self) -> None:
        """Stop the worker processes (safe to call more than once)."""
        global _SHARED
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
            _SHARED = None

    def __enter__(self) -> BatchMaker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
