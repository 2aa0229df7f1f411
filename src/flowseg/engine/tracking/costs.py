"""Linking costs from mask overlap (IoU) and centroid distance, as laptrack metrics.

laptrack calls a metric on pairs of *coordinates*; we give it ``(t, i)`` (frame, row of
the object in that frame's :class:`~flowseg.engine.tracking.objects.FrameObjects`) and look
the cost up in small dense matrices computed with numpy for each pair of frames
(:func:`~flowseg.engine.tracking.objects.overlap_matrix`), cached because laptrack asks for
one pair of frames at a time.

With ``D`` the median cell diameter and ``k`` the number of frames between the two objects:

* link / gap closing:  ``(1 - IoU) + d**2 / (k * D**2)``  (Brownian-like scaling of the
  allowed displacement with the gap);
* division (mother at ``t``, daughter at ``t + 1``):  ``(1 - |m & c| / |c|) + d**2 / D**2``:
  a daughter lies mostly inside its mother's last mask, close to its centre.

Both are 0 for a perfect match and about ``1 + (d / D)**2`` for objects that do not overlap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .objects import FrameObjects, overlap_matrix

__all__ = ["PairCosts"]


class PairCosts:
    """Cost lookups for laptrack, with per-frame-pair matrices computed on demand.

    Parameters
    ----------
    frames : sequence of np.ndarray
        Label frames (each with its own label values).
    objects : sequence of FrameObjects
        :func:`~flowseg.engine.tracking.objects.measure_frame` of each frame.
    diameter : float
        Distance scale ``D`` (same units as the centroids).
    progress, cancel
        Reported / checked when laptrack starts linking a new pair of consecutive frames.
    cache_size : int
        Frame pairs kept in memory.
    """

    def __init__(self, frames: Sequence[np.ndarray], objects: Sequence[FrameObjects],
                 diameter: float, *, progress: ProgressCallback | None = None,
                 cancel: CancelToken = None, cache_size: int = 8) -> None:
        if not diameter > 0:
            raise ValueError(f"the distance scale must be > 0, got {diameter}")
        self.frames = frames
        self.objects = objects
        self.d2 = float(diameter) ** 2
        self.progress = progress
        self.cancel = cancel
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._linked: set[int] = set()
        # fast path: laptrack asks for one pair of frames at a time, (N1 x N2) calls in a row
        self._fast_key: tuple[float, float] = (-1.0, -1.0)
        self._fast_rows: list = []

    def matrices(self, t1: int, t2: int) -> tuple[np.ndarray, np.ndarray]:
        """``(link cost, division cost)`` matrices between frames ``t1 < t2``."""
        key = (int(t1), int(t2))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        a, b = self.objects[key[0]], self.objects[key[1]]
        inter = overlap_matrix(self.frames[key[0]], self.frames[key[1]], a, b).astype(np.float64)
        union = a.sizes[:, None] + b.sizes[None, :] - inter
        iou = inter / np.maximum(union, 1.0)
        inside = inter / np.maximum(b.sizes[None, :], 1.0)
        dist2 = (cdist(a.centroids, b.centroids, "sqeuclidean") / self.d2
                 if len(a) and len(b) else np.zeros((len(a), len(b))))
        k = float(key[1] - key[0])
        out = ((1.0 - iou) + dist2 / k, (1.0 - inside) + dist2)
        self._cache[key] = out
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    @staticmethod
    def _unpack(u: np.ndarray, v: np.ndarray) -> tuple[int, int, int, int]:
        t1, i1, t2, i2 = int(u[0]), int(u[1]), int(v[0]), int(v[1])
        if t1 > t2:
            t1, i1, t2, i2 = t2, i2, t1, i1
        return t1, i1, t2, i2

    def link(self, u: np.ndarray, v: np.ndarray, **_: object) -> float:
        """Frame-to-frame and gap-closing cost between nodes ``u = (t, i)`` and ``v``."""
        (ta, ia), (tb, ib) = u.tolist(), v.tolist()
        if (ta, tb) == self._fast_key:
            return self._fast_rows[int(ia)][int(ib)]
        t1, i1, t2, i2 = self._unpack(u, v)
        if t2 == t1 + 1 and t1 not in self._linked:
            self._linked.add(t1)
            check_cancel(self.cancel)
            report(self.progress, "linking", len(self._linked), len(self.frames) - 1,
                   "linking frames")
        if t1 == t2:
            return np.inf
        cost = self.matrices(t1, t2)[0]
        if t2 == t1 + 1 and ta < tb:  # the frame-to-frame step: many calls for this pair
            self._fast_key, self._fast_rows = (ta, tb), cost.tolist()
        return float(cost[i1, i2])

    def division(self, u: np.ndarray, v: np.ndarray, **_: object) -> float:
        """Cost of the later node being a daughter of the earlier one (one frame apart)."""
        t1, i1, t2, i2 = self._unpack(u, v)
        if t2 != t1 + 1:
            return np.inf
        check_cancel(self.cancel)
        return float(self.matrices(t1, t2)[1][i1, i2])
