"""The result of :meth:`flowseg.Model.segment`, re-thresholdable without the network."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..flows.masks import compute_masks
from ..progress import CancelToken, ProgressCallback

__all__ = ["Segmentation"]


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
