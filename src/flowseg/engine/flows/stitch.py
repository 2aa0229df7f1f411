"""Stitch per-slice 2D masks into 3D objects by IoU across z."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .diffusion import check_labels
from .metrics import iou_pairs

__all__ = ["stitch_masks"]


def stitch_masks(masks_stack: Union[np.ndarray, Sequence[np.ndarray]],
                 iou_threshold: float = 0.25, *,
                 progress: Optional[ProgressCallback] = None,
                 cancel: CancelToken = None) -> np.ndarray:
    """Link 2D masks of consecutive z slices into 3D objects.

    Slice ``z + 1`` is matched to the already stitched slice ``z``: masks are paired by
    optimal assignment (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) on their
    IoU, and a pair with ``IoU >= iou_threshold`` shares the id of the slice-``z`` mask.
    Every unmatched mask gets a fresh id (the next unused one, in increasing order of the
    slice's own ids), so the ids of the first slice become ``1..n``.

    Parameters
    ----------
    masks_stack : np.ndarray or sequence of np.ndarray
        ``(Z, Y, X)`` labels with independent ids per slice, or a list of 2D label images
        of equal shape.
    iou_threshold : float
        Minimum IoU, in (0, 1], for two masks to be linked.
    progress, cancel
        See :mod:`flowseg.engine.progress` (stage ``"stitch"``).

    Returns
    -------
    np.ndarray
        int32 ``(Z, Y, X)`` labels with consecutive ids ``1..n``.

    Raises
    ------
    ValueError
        Not a stack of 2D labels, or threshold outside (0, 1].
    """
    if not isinstance(masks_stack, np.ndarray):
        slices = [np.asarray(m) for m in masks_stack]
        if len({m.shape for m in slices}) > 1:
            raise ValueError("all slices of masks_stack must have the same shape, got "
                             f"{sorted({m.shape for m in slices})}")
        if not slices:
            raise ValueError("masks_stack is empty")
        masks_stack = np.stack(slices)
    stack = np.asarray(masks_stack)
    if stack.ndim != 3:
        raise ValueError(f"masks_stack must be (Z, Y, X) (a stack of 2D masks), got shape "
                         f"{stack.shape}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    stack = check_labels(stack, "masks_stack")
    out = np.zeros(stack.shape, np.int32)
    nxt = 0
    for z in range(stack.shape[0]):
        check_cancel(cancel)
        cur = stack[z]
        ids = np.unique(cur)
        ids = ids[ids > 0]
        new_ids = np.zeros(ids.size, np.int64)
        if z > 0 and ids.size and out[z - 1].any():
            ids_p, ids_c, ip, ic, inter, union, _, _ = iou_pairs(out[z - 1], cur)
            iou = inter / np.maximum(union, 1)
            sel = iou >= iou_threshold
            if sel.any():
                ip, ic, iou = ip[sel], ic[sel], iou[sel]
                up, jp = np.unique(ip, return_inverse=True)
                uc, jc = np.unique(ic, return_inverse=True)
                cost = np.zeros((up.size, uc.size))
                cost[jp, jc] = -iou
                r, c = linear_sum_assignment(cost)
                ok = cost[r, c] < 0
                # ids_c are the ids of cur in ascending order, as is ids
                new_ids[uc[c[ok]]] = ids_p[up[r[ok]]]
        fresh = new_ids == 0
        new_ids[fresh] = nxt + 1 + np.arange(int(fresh.sum()))
        nxt += int(fresh.sum())
        if ids.size:
            lut_pos = np.searchsorted(ids, cur)
            vals = np.concatenate([new_ids, [0]])
            out[z] = np.where(cur > 0, vals[np.minimum(lut_pos, ids.size)], 0)
        report(progress, "stitch", z + 1, stack.shape[0])
    return out
