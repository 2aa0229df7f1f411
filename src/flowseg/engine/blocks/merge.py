"""Global labels: unique ids across blocks, and objects cut by block faces merged into one.

Each block numbers the objects that own pixels of its core ``1..n``.  Two neighbouring
blocks both segment the region where their padded extents overlap (at least 4 object
diameters thick across the face), so an object cut by their common face appears whole in
both.  :func:`match_labels` pairs the objects of the two segmentations of that region by
IoU; the pairs are edges of a graph over all objects of the image, and its connected
components (:func:`scipy.sparse.csgraph.connected_components`) are the final objects
(:func:`global_luts`), numbered ``1..N`` in block order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

__all__ = ["DEFAULT_MATCH_IOU", "global_luts", "keep_core_objects", "match_labels"]

#: Two segmentations of an object in the overlap of two blocks are the same object when
#: their IoU there reaches this (IoU > 0.5 pairs each object with at most one other).
DEFAULT_MATCH_IOU = 0.5
_INT32_MAX = np.iinfo(np.int32).max


def keep_core_objects(masks: np.ndarray, core: Sequence[slice]) -> tuple[np.ndarray, int]:
    """Keep the objects owning pixels of ``core`` (the rest of the padded block: 0).

    Returns
    -------
    labels : np.ndarray
        int32, the padded block's labels renumbered ``1..n`` (in order of their old ids).
    n : int
        Number of objects kept.
    """
    masks = np.asarray(masks)
    top = int(masks.max(initial=0))
    if top == 0:
        return np.zeros(masks.shape, np.int32), 0
    present = np.bincount(masks[tuple(core)].ravel(), minlength=top + 1) > 0
    present[0] = False
    ids = np.flatnonzero(present)
    lut = np.zeros(top + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[masks], int(ids.size)


def match_labels(a: np.ndarray, b: np.ndarray, threshold: float = DEFAULT_MATCH_IOU
                 ) -> np.ndarray:
    """Pairs ``(label in a, label in b)`` whose IoU over this region is >= ``threshold``.

    Parameters
    ----------
    a, b : np.ndarray
        Two label images of the same region (0 = background).
    threshold : float
        IoU in (0, 1].

    Returns
    -------
    np.ndarray
        int64 ``(k, 2)``.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"match threshold must be in (0, 1], got {threshold}")
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label regions differ in size: {a.size} vs {b.size}")
    both = (a > 0) & (b > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    area_a = np.bincount(a)
    area_b = np.bincount(b)
    nb = area_b.size
    key = a[both].astype(np.int64) * nb + b[both]
    pairs, inter = np.unique(key, return_counts=True)
    pa, pb = pairs // nb, pairs % nb
    iou = inter / (area_a[pa] + area_b[pb] - inter)
    keep = iou >= float(threshold)
    return np.stack([pa[keep], pb[keep]], 1).astype(np.int64)


def global_luts(counts: Sequence[int], edges: np.ndarray) -> tuple[list[np.ndarray], int]:
    """Lookup tables from each block's local ids to the final global ids.

    Parameters
    ----------
    counts : sequence of int
        Objects per block (block order).
    edges : np.ndarray
        ``(k, 2)`` pairs of provisional global ids (block offset + local id, from 1) of
        the same object.

    Returns
    -------
    luts : list of np.ndarray
        Per block, int32 of length ``counts[i] + 1`` (``lut[0] == 0``).
    n_objects : int
        Number of final objects.
    """
    counts = [int(c) for c in counts]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    if n > _INT32_MAX:
        raise ValueError(f"{n} objects do not fit int32 labels")
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 1 or edges.max() > n):
        raise ValueError("edge ids outside the provisional id range")
    if n == 0:
        return [np.zeros(1, np.int32) for _ in counts], 0
    g = sparse.coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0] - 1, edges[:, 1] - 1)),
                          shape=(n, n))
    n_comp, comp = connected_components(g, directed=False)
    final = (comp + 1).astype(np.int32)
    luts = [np.concatenate([[0], final[offsets[i]:offsets[i + 1]]]).astype(np.int32)
            for i in range(len(counts))]
    return luts, int(n_comp)
