"""Masks from flows and cell probabilities: 2D, 3D and stacks of 2D slices."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .dynamics import flows_to_masks
from .params import MaskParams
from .stitch import stitch_masks

__all__ = ["compute_masks"]

_DEFAULT = MaskParams()


def compute_masks(flows: np.ndarray, cellprob: np.ndarray, params: MaskParams = _DEFAULT, *,
                  progress: Optional[ProgressCallback] = None,
                  cancel: CancelToken = None) -> np.ndarray:
    """Masks from unit flows and cell-probability logits.

    Parameters
    ----------
    flows : np.ndarray
        ``(ndim, *spatial)`` unit flows.  For a stack segmented slice by slice
        (``params.stitch_threshold > 0`` or ``flows.shape[0] == 2`` with 3 spatial axes)
        the flows are ``(2, Z, Y, X)`` and masks are computed per slice: with
        ``stitch_threshold > 0`` stitched into 3D objects across z, else labelled
        independently with ids kept unique across the stack.
    cellprob : np.ndarray
        Logits, shape ``spatial``.
    params : MaskParams
        Thresholds, minimum size, Euler steps (None: 200), stitching and 3D sampling.
    progress, cancel
        See :mod:`flowseg.engine.progress`.

    Returns
    -------
    np.ndarray
        int32 labels, shape ``cellprob.shape``.
    """
    if not isinstance(params, MaskParams):
        raise TypeError(f"params must be a MaskParams, got {type(params).__name__}")
    stitch_threshold, min_size = params.stitch_threshold, params.min_size
    kw: dict[str, Any] = {"cellprob_threshold": params.cellprob_threshold,
              "flow_threshold": params.flow_threshold, "min_size": min_size, "niter": params.niter}
    if flows.shape[0] == cellprob.ndim:
        report(progress, "dynamics", 0, 1, "computing masks")
        masks = np.asarray(flows_to_masks(flows, cellprob, sampling=params.sampling, **kw),
                           dtype=np.int32)
        report(progress, "dynamics", 1, 1, "computing masks")
        return masks
    if flows.shape[0] != 2 or cellprob.ndim != 3:
        raise ValueError(f"flows of shape {flows.shape} do not fit cellprob {cellprob.shape}")
    masks = np.zeros(cellprob.shape, np.int32)
    offset = 0
    nz = cellprob.shape[0]
    for z in range(nz):
        check_cancel(cancel)
        per_slice = {**kw, "min_size": -1} if stitch_threshold > 0 else kw
        m = np.asarray(flows_to_masks(flows[:, z], cellprob[z], **per_slice), dtype=np.int32)
        if stitch_threshold <= 0:
            m = np.where(m > 0, m + offset, 0).astype(np.int32)
            offset = int(m.max(initial=offset))
        masks[z] = m
        report(progress, "dynamics", z + 1, nz, "computing masks per slice")
    if stitch_threshold > 0 and nz > 1:
        masks = np.asarray(stitch_masks(masks, iou_threshold=stitch_threshold, cancel=cancel),
                           dtype=np.int32)
        if min_size > 0:
            masks = _remove_small(masks, min_size)
    return masks


def _remove_small(masks: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects below ``min_size`` voxels and relabel 1..N."""
    ids, counts = np.unique(masks, return_counts=True)
    keep = ids[(ids > 0) & (counts >= min_size)]
    lut = np.zeros(int(masks.max(initial=0)) + 1, np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return lut[masks]
