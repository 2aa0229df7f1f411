"""Instance-segmentation metrics: matching by IoU, average precision, aggregated Jaccard.

Definitions
-----------
* Objects are the distinct non-zero ids of a label image (ids need not be consecutive).
* At an IoU threshold ``t``, ground-truth and predicted objects are matched one-to-one so
  that the number of pairs with ``IoU >= t`` is maximal (ties broken by the larger total
  IoU), by optimal assignment (:func:`scipy.optimize.linear_sum_assignment`) on each
  connected group of overlapping objects.  Matched pairs are true positives (TP),
  unmatched predictions false positives (FP), unmatched ground truth false negatives (FN).
* ``AP = TP / (TP + FP + FN)`` (the Cellpose papers' "average precision").  When both
  images hold no object, AP is 1.
* Aggregated Jaccard index (Kumar et al. 2017): every ground-truth object is paired with
  the prediction of highest IoU; ``AJI = sum(intersections) / (sum(unions) + area of the
  predictions never paired)``; 1 when both images are empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .diffusion import check_labels

__all__ = ["MatchStats", "iou_pairs", "match_stats", "average_precision",
           "aggregated_jaccard"]

ArrayOrList = Union[np.ndarray, Sequence[np.ndarray]]


@dataclass
class MatchStats:
    """Matching results; arrays are ``(n_thresholds,)`` for one image pair or
    ``(n_images, n_thresholds)`` for lists (``n_true``, ``n_pred``, ``aji``: scalar or
    ``(n_images,)``).

    Attributes
    ----------
    thresholds : np.ndarray
        The IoU thresholds.
    ap, tp, fp, fn : np.ndarray
        Average precision and the counts behind it.
    n_true, n_pred : np.ndarray or int
        Number of ground-truth / predicted objects.
    aji : np.ndarray or float
        Aggregated Jaccard index.
    """

    thresholds: np.ndarray
    ap: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    n_true: Union[np.ndarray, int]
    n_pred: Union[np.ndarray, int]
    aji: Union[np.ndarray, float]


def iou_pairs(gt: np.ndarray, pred: np.ndarray):
    """Overlapping object pairs of two label images.

    Returns
    -------
    ids_true, ids_pred : np.ndarray
        Ids of the objects present in each image (ascending).
    it, ip : np.ndarray
        For each overlapping pair, indices into ``ids_true`` / ``ids_pred``.
    inter, union : np.ndarray
        Pixel counts of the intersection and union of each pair.
    area_true, area_pred : np.ndarray
        Areas of the objects (aligned with ``ids_true`` / ``ids_pred``).
    """
    a = gt.ravel().astype(np.int64, copy=False)
    b = pred.ravel().astype(np.int64, copy=False)
    ids_t, area_t = np.unique(a[a > 0], return_counts=True)
    ids_p, area_p = np.unique(b[b > 0], return_counts=True)
    both = (a > 0) & (b > 0)
    if ids_t.size == 0 or ids_p.size == 0 or not both.any():
        e = np.zeros(0, np.int64)
        return ids_t, ids_p, e, e, e, e, area_t, area_p
    it = np.searchsorted(ids_t, a[both])
    ip = np.searchsorted(ids_p, b[both])
    key, inter = np.unique(it * ids_p.size + ip, return_counts=True)
    it, ip = key // ids_p.size, key % ids_p.size
    union = area_t[it] + area_p[ip] - inter
    return ids_t, ids_p, it, ip, inter, union, area_t, area_p


def _n_matches(it, ip, iou, n_t, n_p, th) -> int:
    """Maximum number of one-to-one pairs with IoU >= th."""
    sel = iou >= th
    if not sel.any():
        return 0
    it, ip, iou = it[sel], ip[sel], iou[sel]
    # a bipartite graph: nodes 0..n_t-1 true, n_t..n_t+n_p-1 predicted
    g = coo_matrix((np.ones(it.size), (it, ip + n_t)), shape=(n_t + n_p, n_t + n_p))
    _, comp = connected_components(g, directed=False)
    ct = comp[it]
    tp = 0
    order = np.argsort(ct, kind="stable")
    bounds = np.flatnonzero(np.diff(ct[order])) + 1
    for grp in np.split(order, bounds):
        if grp.size == 1:
            tp += 1
            continue
        ut, jt = np.unique(it[grp], return_inverse=True)
        up, jp = np.unique(ip[grp], return_inverse=True)
        if ut.size == 1 or up.size == 1:
            tp += 1
            continue
        cost = np.zeros((ut.size, up.size))
        n_min = min(ut.size, up.size)
        cost[jt, jp] = -1.0 - iou[grp] / (2 * n_min)
        r, c = linear_sum_assignment(cost)
        tp += int((cost[r, c] < 0).sum())
    return tp


def _aji(it, ip, inter, union, area_t, area_p) -> float:
    if area_t.size == 0 and area_p.size == 0:
        return 1.0
    iou = inter / np.maximum(union, 1)
    tot_i = 0.0
    tot_u = float(area_t.sum())  # unpaired ground truth counts with its own area
    used = np.zeros(area_p.size, bool)
    if it.size:
        order = np.lexsort((-iou, it))  # per true object, best IoU first
        first = np.ones(order.size, bool)
        first[1:] = it[order][1:] != it[order][:-1]
        best = order[first]
        tot_i = float(inter[best].sum())
        tot_u += float((union[best] - area_t[it[best]]).sum())
        used[ip[best]] = True
    tot_u += float(area_p[~used].sum())
    return tot_i / tot_u if tot_u > 0 else 1.0


def _one(gt, pred, ths):
    g = check_labels(gt, "gt")
    p = check_labels(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt and pred must have the same shape, got {g.shape} and {p.shape}")
    ids_t, ids_p, it, ip, inter, union, area_t, area_p = iou_pairs(g, p)
    iou = inter / np.maximum(union, 1)
    n_t, n_p = ids_t.size, ids_p.size
    tp = np.array([_n_matches(it, ip, iou, n_t, n_p, th) for th in ths], np.float64)
    fp, fn = n_p - tp, n_t - tp
    den = tp + fp + fn
    ap = np.where(den > 0, tp / np.maximum(den, 1), 1.0)
    return ap, tp, fp, fn, n_t, n_p, _aji(it, ip, inter, union, area_t, area_p)


def match_stats(gt: ArrayOrList, pred: ArrayOrList,
                thresholds: Union[float, Sequence[float]] = (0.5, 0.75, 0.9)) -> MatchStats:
    """Match ground truth and predictions; AP, TP, FP, FN and AJI.

    Parameters
    ----------
    gt, pred : np.ndarray or list of np.ndarray
        2D or 3D label images (0 = background), one pair or two lists of equal length.
    thresholds : float or sequence of float
        IoU thresholds in (0, 1].

    Returns
    -------
    MatchStats
    """
    ths = np.atleast_1d(np.asarray(thresholds, np.float64))
    if ths.ndim != 1 or ths.size == 0 or np.any(~(ths > 0)) or np.any(ths > 1):
        raise ValueError(f"thresholds must be IoU values in (0, 1], got {thresholds!r}")
    single = isinstance(gt, np.ndarray) and isinstance(pred, np.ndarray)
    if single:
        ap, tp, fp, fn, nt, npred, aji = _one(gt, pred, ths)
        return MatchStats(ths, ap, tp, fp, fn, nt, npred, aji)
    if isinstance(gt, np.ndarray) or isinstance(pred, np.ndarray):
        raise ValueError("gt and pred must both be arrays or both be lists of arrays")
    gt, pred = list(gt), list(pred)
    if len(gt) != len(pred):
        raise ValueError(f"gt and pred lists differ in length: {len(gt)} and {len(pred)}")
    res = [_one(g, p, ths) for g, p in zip(gt, pred)]
    cols = list(zip(*res)) if res else [[]] * 7
    arr = [np.asarray(c, np.float64).reshape(len(res), ths.size) for c in cols[:4]]
    return MatchStats(ths, *arr, np.asarray(cols[4], np.int64), np.asarray(cols[5], np.int64),
                      np.asarray(cols[6], np.float64))


def average_precision(gt: ArrayOrList, pred: ArrayOrList,
                      thresholds: Union[float, Sequence[float]] = (0.5, 0.75, 0.9)
                      ) -> np.ndarray:
    """Average precision ``TP / (TP + FP + FN)`` at IoU thresholds.

    Parameters
    ----------
    gt, pred : np.ndarray or list of np.ndarray
        Ground-truth and predicted 2D/3D labels: one pair, or two lists of equal length.
    thresholds : float or sequence of float
        IoU thresholds.

    Returns
    -------
    np.ndarray
        ``(n_thresholds,)`` for one pair, ``(n_images, n_thresholds)`` for lists.  Use
        :func:`match_stats` for TP / FP / FN and the aggregated Jaccard index.
    """
    return match_stats(gt, pred, thresholds).ap


def aggregated_jaccard(gt: ArrayOrList, pred: ArrayOrList) -> Union[float, np.ndarray]:
    """Aggregated Jaccard index of one pair (float) or of lists (array per image)."""
    return match_stats(gt, pred, 0.5).aji
