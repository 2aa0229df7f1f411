"""Per-frame object measurements and frame-to-frame overlaps (numpy only, vectorised).

A frame is a 2D or 3D integer label image; its objects are its non-zero label values.
:func:`measure_frame` gives their ids, sizes and centroids with ``np.bincount`` (no Python
loop over objects); :func:`overlap_matrix` counts the pixels shared by every pair of objects
of two frames in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FrameObjects", "measure_frame", "median_diameter", "overlap_matrix"]


@dataclass(frozen=True)
class FrameObjects:
    """The objects of one label frame.

    Attributes
    ----------
    ids : np.ndarray
        ``(N,)`` int64 label values, increasing.
    sizes : np.ndarray
        ``(N,)`` float64 pixel (voxel) counts.
    centroids : np.ndarray
        ``(N, ndim)`` float64 centroids in pixel coordinates (times ``spacing`` when given).
    """

    ids: np.ndarray
    sizes: np.ndarray
    centroids: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.size)

    def index_lut(self, max_label: int) -> np.ndarray:
        """Lookup table label value -> row index (-1 for absent labels)."""
        lut = np.full(int(max_label) + 1, -1, np.int64)
        lut[self.ids] = np.arange(self.ids.size)
        return lut


def _dense_labels(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Labels as non-negative int64 small enough for ``np.bincount``.

    Returns the (possibly compacted) labels and, when compacted, the original values of the
    compact ids (index 0 = background).
    """
    flat = np.asarray(frame).ravel()
    if flat.size and flat.min() < 0:
        raise ValueError("label images must not contain negative values")
    top = int(flat.max(initial=0))
    if top <= 4 * flat.size + 1024:
        return flat.astype(np.int64, copy=False), None
    values, inverse = np.unique(flat, return_inverse=True)
    if values[0] != 0:
        values = np.concatenate([[0], values])
        inverse = inverse + 1
    return inverse.astype(np.int64), values.astype(np.int64)


def measure_frame(frame: np.ndarray, spacing: Sequence[float] | None = None) -> FrameObjects:
    """Ids, sizes and centroids of the objects of a label frame.

    Parameters
    ----------
    frame : np.ndarray
        2D or 3D integer labels, 0 = background.
    spacing : sequence of float, optional
        Physical size of a pixel along each axis (centroids are multiplied by it).

    Returns
    -------
    FrameObjects
    """
    frame = np.asarray(frame)
    if frame.ndim not in (2, 3):
        raise ValueError(f"a label frame must be 2D or 3D, got shape {frame.shape}")
    if not (np.issubdtype(frame.dtype, np.integer) or frame.dtype == bool):
        raise ValueError(f"label frames must be integer images, got dtype {frame.dtype}")
    flat, values = _dense_labels(frame)
    counts = np.bincount(flat)
    present = np.flatnonzero(counts)
    present = present[present > 0]
    sizes = counts[present].astype(np.float64)
    cents = np.empty((present.size, frame.ndim), np.float64)
    for ax, n in enumerate(frame.shape):
        shape = [1] * frame.ndim
        shape[ax] = n
        coord = np.broadcast_to(np.arange(n, dtype=np.float64).reshape(shape), frame.shape)
        sums = np.bincount(flat, weights=coord.ravel(), minlength=counts.size)
        cents[:, ax] = sums[present] / sizes
    if spacing is not None:
        sp = np.asarray(spacing, np.float64)
        if sp.shape != (frame.ndim,) or not np.all(sp > 0):
            raise ValueError(f"spacing must be {frame.ndim} positive numbers, got {spacing!r}")
        cents *= sp
    ids = present.astype(np.int64) if values is None else values[present]
    return FrameObjects(ids=ids, sizes=sizes, centroids=cents)


def overlap_matrix(frame_a: np.ndarray, frame_b: np.ndarray, objs_a: FrameObjects,
                   objs_b: FrameObjects) -> np.ndarray:
    """Pixels shared by every object of ``frame_a`` with every object of ``frame_b``.

    Returns
    -------
    np.ndarray
        ``(len(objs_a), len(objs_b))`` int64 counts.
    """
    a = np.asarray(frame_a).ravel()
    b = np.asarray(frame_b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {np.shape(frame_a)} vs {np.shape(frame_b)}")
    na, nb = len(objs_a), len(objs_b)
    out = np.zeros((na, nb), np.int64)
    if na == 0 or nb == 0:
        return out
    both = (a > 0) & (b > 0)
    ia = _rows(a[both], objs_a)
    ib = _rows(b[both], objs_b)
    code = ia * nb + ib
    if na * nb <= 4 * code.size + (1 << 20):
        out = np.bincount(code, minlength=na * nb).reshape(na, nb)
    else:
        u, c = np.unique(code, return_counts=True)
        out[u // nb, u % nb] = c
    return out


def _rows(values: np.ndarray, objs: FrameObjects) -> np.ndarray:
    """Row index in ``objs`` of each label value (all values must be objects of it)."""
    top = int(objs.ids[-1])
    if top <= 4 * values.size + 1024:
        return objs.index_lut(top)[values]
    return np.searchsorted(objs.ids, values.astype(np.int64))


def median_diameter(objects: Sequence[FrameObjects],
                    spacing: Sequence[float] | None = None) -> float:
    """Median equivalent-circle (2D) or -sphere (3D) diameter over all objects of all frames
    (in the units of ``spacing`` when given, else pixels)."""
    sizes = [o.sizes for o in objects if len(o)]
    if not sizes:
        return 0.0
    s = np.concatenate(sizes)
    if spacing is not None:
        s = s * float(np.prod(np.asarray(spacing, np.float64)))
    ndim = next(o.centroids.shape[1] for o in objects if len(o))
    if ndim == 3:
        return float(np.median((6.0 * s / np.pi) ** (1.0 / 3.0)))
    return float(np.median(2.0 * np.sqrt(s / np.pi)))
