"""Training batches, made in the training process or ahead of it by worker processes.

With ``workers=0`` every crop draws from the training loop's own random generator, in order
(the stream the bundled CPU recipes were trained with).  With ``workers >= 1`` each batch
gets its own seed, drawn from that generator at the start of the epoch, so a batch is the
same whichever process makes it: ``workers=1`` (in-process) and ``workers=14`` give
identical batches, and a run resumed at an epoch boundary continues exactly.  Worker
processes are forked (copy-on-write access to the cached samples); where ``fork`` is not
available the batches are made in-process, with the same result.

With an intensity augmentation (:class:`~flowseg.engine.training.intensity.IntensityAug`),
each batch's crops are changed after they are cut, from the same random stream; without one
(the default) nothing more is drawn, so the batches are exactly those of earlier versions.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Optional

import numpy as np

from .augment import make_batch
from .intensity import IntensityAug, augment_batch

__all__ = ["BatchMaker"]

# the samples a forked worker reads (set in the parent just before the fork)
_SHARED: Optional[tuple] = None


def _make(data: tuple, idx: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    images, flows, fgs, scales, crop, intensity, scale_range = data
    x, y = make_batch(images, flows, fgs, scales, idx, rng, crop, scale_range=scale_range)
    return augment_batch(x, rng, intensity), y


def _make_seeded(data: tuple, idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return _make(data, idx, np.random.default_rng(seed))


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
    intensity : IntensityAug, optional
        Intensity augmentation of each crop (None: none, the default).
    scale_range : (float, float)
        Random zoom around each image's base scale
        (:func:`~flowseg.engine.training.augment.random_transform`).
    """

    def __init__(self, images: Sequence[np.ndarray], flows: Sequence[np.ndarray],
                 fgs: Sequence[np.ndarray], scales: Sequence[float], crop: int,
                 workers: int = 0, intensity: Optional[IntensityAug] = None,
                 scale_range: tuple[float, float] = (0.75, 1.25)) -> None:
        if int(workers) < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        if intensity is not None and not isinstance(intensity, IntensityAug):
            raise ValueError(f"intensity must be an IntensityAug or None, got {intensity!r}")
        lo, hi = (float(v) for v in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got "
                             f"{scale_range}")
        self.data = (images, flows, fgs, scales, int(crop), intensity, (lo, hi))
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
            for idx in batches:
                yield (idx, *_make(self.data, idx, rng))
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
