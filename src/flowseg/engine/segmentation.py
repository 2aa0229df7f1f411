"""The result of :meth:`flowseg.Model.segment`, re-thresholdable without the network."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .progress import CancelToken, ProgressCallback, check_cancel, report

__all__ = ["Segmentation", "compute_masks"]


def compute_masks(flows: np.ndarray, cellprob: np.ndarray, *, cellprob_threshold: float = 0.0,
                  flow_threshold: float = 0.4, min_size: int = 15, niter: Optional[int] = None,
                  stitch_threshold: float = 0.0, sampling: str = "exact",
                  progress: Optional[ProgressCallback] = None,
                  cancel: CancelToken = None) -> np.ndarray:
    """Masks from unit flows and cell-probability logits.

    Parameters
    ----------
    flows : np.ndarray
        ``(ndim, *spatial)`` unit flows.  For a stack segmented slice by slice
        (``stitch_threshold > 0`` or ``flows.shape[0] == 2`` with 3 spatial axes) the flows
        are ``(2, Z, Y, X)`` and masks are computed per slice.
    cellprob : np.ndarray
        Logits, shape ``spatial``.
    stitch_threshold : float
        For stacks of 2D results: IoU threshold to stitch slices into 3D objects
        (0: slices labelled independently, ids kept unique across the stack).
    sampling : {"exact", "cellpose3"}
        3D flow sampling of the dynamics, see :func:`flowseg.engine.dynamics.flows_to_masks`.

    Returns
    -------
    np.ndarray
        int32 labels, shape ``cellprob.shape``.
    """
    from .dynamics import flows_to_masks

    kw = dict(cellprob_threshold=float(cellprob_threshold), flow_threshold=float(flow_threshold),
              min_size=int(min_size), niter=niter)
    if flows.shape[0] == cellprob.ndim:
        report(progress, "dynamics", 0, 1, "computing masks")
        masks = np.asarray(flows_to_masks(flows, cellprob, sampling=sampling, **kw),
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
        m = np.asarray(flows_to_masks(flows[:, z], cellprob[z],
                                      **{**kw, "min_size": -1 if stitch_threshold > 0 else kw["min_size"]}),
                       dtype=np.int32)
        if stitch_threshold <= 0:
            m = np.where(m > 0, m + offset, 0).astype(np.int32)
            offset = int(m.max(initial=offset))
        masks[z] = m
        report(progress, "dynamics", z + 1, nz, "computing masks per slice")
    if stitch_threshold > 0 and nz > 1:
        from .stitch import stitch_masks

        masks = np.asarray(stitch_masks(masks, iou_threshold=float(stitch_threshold),
                                              cancel=cancel),
                           dtype=np.int32)
        if min_size > 0:
            masks = _remove_small(masks, int(min_size))
    return masks


def _remove_small(masks: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects below ``min_size`` voxels and relabel 1..N."""
    ids, counts = np.unique(masks, return_counts=True)
    keep = ids[(ids > 0) & (counts >= min_size)]
    lut = np.zeros(int(masks.max(initial=0)) + 1, np.int32)
    lut[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    return lut[masks]


@dataclass
class Segmentation:
    """Masks plus the network outputs they came from.

    Attributes
    ----------
    masks : np.ndarray
        int32 labels at image resolution (0 = background).
    flows : np.ndarray
        float32 unit flows at image resolution, ``(ndim, *spatial)`` (for a stack segmented
        slice by slice: ``(2, Z, Y, X)``).
    cellprob : np.ndarray
        float32 cell-probability logits at image resolution.
    styles : np.ndarray
        Style vector(s): ``(S,)`` for a 2D image or 3D volume, ``(Z, S)`` for a stack.
    diameter : float
        Object diameter (pixels) the image was processed at.
    params : dict
        Mask parameters used (``cellprob_threshold``, ``flow_threshold``, ``min_size``,
        ``niter``, ``stitch_threshold``, ``sampling``) and how the diameter was chosen.
    """

    masks: np.ndarray
    flows: np.ndarray
    cellprob: np.ndarray
    styles: np.ndarray
    diameter: float
    params: dict = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        """Number of labelled objects."""
        return int(len(np.unique(self.masks[self.masks > 0])))

    def recompute(self, cellprob_threshold: Optional[float] = None,
                  flow_threshold: Optional[float] = None, min_size: Optional[int] = None,
                  niter: Optional[int] = None, stitch_threshold: Optional[float] = None,
                  sampling: Optional[str] = None,
                  progress: Optional[ProgressCallback] = None,
                  cancel: CancelToken = None) -> "Segmentation":
        """New masks from the stored flows and probabilities (no network run).

        Parameters left as None keep their previous value.  Returns a new
        :class:`Segmentation` sharing ``flows``, ``cellprob`` and ``styles`` (not copied).
        """
        p: dict[str, Any] = dict(self.params)
        for k, v in (("cellprob_threshold", cellprob_threshold),
                     ("flow_threshold", flow_threshold), ("min_size", min_size),
                     ("niter", niter), ("stitch_threshold", stitch_threshold),
                     ("sampling", sampling)):
            if v is not None:
                p[k] = v
        masks = compute_masks(self.flows, self.cellprob,
                              cellprob_threshold=p.get("cellprob_threshold", 0.0),
                              flow_threshold=p.get("flow_threshold", 0.4),
                              min_size=p.get("min_size", 15), niter=p.get("niter"),
                              stitch_threshold=p.get("stitch_threshold", 0.0),
                              sampling=p.get("sampling", "exact"),
                              progress=progress, cancel=cancel)
        return dataclasses.replace(self, masks=masks, params=p)
