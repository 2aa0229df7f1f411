"""The result of :meth:`flowseg.Model.segment`, re-thresholdable without the network."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..flows.masks import compute_masks
from ..flows.params import MaskParams
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
        Mask parameters used (the fields of
        :class:`~flowseg.engine.flows.params.MaskParams`, also as :attr:`mask_params`) and
        how the image was processed (``diameter_source``, ``do_3d``, ``rescale``, ...).
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

    @property
    def mask_params(self) -> MaskParams:
        """The :class:`~flowseg.engine.flows.params.MaskParams` the masks were made with."""
        return MaskParams.from_dict(self.params)

    def recompute(self, cellprob_threshold: Optional[float] = None,
                  flow_threshold: Optional[float] = None, min_size: Optional[int] = None,
                  niter: Optional[int] = None, stitch_threshold: Optional[float] = None,
                  sampling: Optional[str] = None, *,
                  progress: Optional[ProgressCallback] = None,
                  cancel: CancelToken = None) -> Segmentation:
        """New masks from the stored flows and probabilities (no network run).

        Parameters
        ----------
        cellprob_threshold, flow_threshold, min_size, niter, stitch_threshold, sampling
            The mask parameters to change (see
            :class:`~flowseg.engine.flows.params.MaskParams`); None keeps the value the
            masks were made with.
        progress, cancel
            See :mod:`flowseg.engine.progress`.

        Returns
        -------
        Segmentation
            A new result sharing ``flows``, ``cellprob`` and ``styles`` (not copied), with
            the parameters used in ``params``.

        Raises
        ------
        ValueError
            For a parameter out of range.
        """
        mp = self.mask_params.replace(cellprob_threshold=cellprob_threshold,
                                      flow_threshold=flow_threshold, min_size=min_size,
                                      niter=niter, stitch_threshold=stitch_threshold,
                                      sampling=sampling)
        masks = compute_masks(self.flows, self.cellprob, mp, progress=progress, cancel=cancel)
        params: dict[str, Any] = {**self.params, **mp.as_dict()}
        return dataclasses.replace(self, masks=masks, params=params)
