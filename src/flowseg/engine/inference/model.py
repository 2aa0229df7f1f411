"""``Model``: a :class:`~flowseg.engine.inference.base.ModelBase` that segments images and
estimates object diameters.

Loading, saving and the metadata are in :mod:`flowseg.engine.inference.base`; segmentation
itself in :mod:`flowseg.engine.inference.segment` (2D, slice stacks) and
:mod:`flowseg.engine.inference.volume` (3D); the diameter estimate in
:mod:`flowseg.engine.inference.size`; the result is a
:class:`~flowseg.engine.inference.result.Segmentation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

from ..flows.params import MaskParams
from ..progress import CancelToken, ProgressCallback
from .base import ModelBase
from .checks import check_estimate_input, check_segment_input
from .prepare import WHOLE_MAX, Normalize
from .result import Segmentation
from .segment import segment
from .size import estimate_diameter

__all__ = ["Model"]


class Model(ModelBase):
    """A flow network with its metadata that segments images (see :class:`ModelBase`)."""

    def segment(self, image: np.ndarray, *, channels: Optional[Sequence] = None,
                channel_axis: Optional[int] = None, z_axis: Optional[int] = None,
                diameter: Optional[float] = None, do_3d: bool = False,
                anisotropy: Optional[float] = None,
                stitch_threshold: float = MaskParams.stitch_threshold,
                augment: bool = False, tile_overlap: float = 0.1, batch_size: int = 8,
                normalize: Normalize = True,
                cellprob_threshold: float = MaskParams.cellprob_threshold,
                flow_threshold: float = MaskParams.flow_threshold,
                min_size: int = MaskParams.min_size, niter: Optional[int] = MaskParams.niter,
                sampling: str = MaskParams.sampling, bsize: int = 224,
                whole_max: int = WHOLE_MAX, pad_extra: int = 8,
                progress: Optional[ProgressCallback] = None,
                cancel: CancelToken = None, check_memory: bool = True) -> Segmentation:
        """Segment a 2D image, a stack of 2D slices or a 3D volume.

        The input is checked first (:func:`flowseg.engine.inference.checks.check_segment_input`):
        every problem is an :class:`~flowseg.engine.errors.InputError` before any work.  A
        constant image (e.g. all zero) has no cells: the result is empty.

        Parameters
        ----------
        image : np.ndarray
            2D ``(Y, X)``, 2D with channels ``(Y, X, C)`` / ``(C, Y, X)``, or 3D
            ``(Z, Y, X[, C])``.
        channels : (int, int or None), optional
            0-based ``(cyto, nucleus)`` channel indices (see
            :mod:`flowseg.engine.inference.transforms`).
        channel_axis, z_axis : int, optional
            Axes of channels / z (auto-detected when None).
        diameter : float, optional
            Object diameter in pixels; None: estimated with the model's size model if it
            has one, else the model's ``diam_mean`` (recorded in
            ``params["diameter_source"]``).
        do_3d : bool
            Full 3D segmentation (three slice orientations, 3D dynamics).
        anisotropy : float, optional
            Z step / XY pixel size for 3D (e.g. 2.0 when z is sampled half as densely).
        stitch_threshold : float
            With ``do_3d=False`` on a volume: segment each slice in 2D and stitch masks
            across z when their IoU exceeds this threshold (0: independent slices).
        augment : bool
            Test-time augmentation (flipped tiles averaged).
        tile_overlap, batch_size, bsize, whole_max, pad_extra
            Tiling options (see :func:`flowseg.engine.network.tiling.run_tiled`): an image
            whose padded size is at most ``whole_max`` pixels (1024 x 1024) runs through the
            network in one piece; ``whole_max=0`` always uses overlapping ``bsize`` tiles.
        normalize : bool or (lo, hi)
            Percentile normalisation (True: the model's own percentiles).
        cellprob_threshold, flow_threshold, min_size, niter, sampling
            Mask parameters, see :class:`~flowseg.engine.flows.params.MaskParams` (where
            the defaults are defined); ``niter=None`` scales with the diameter (200 steps
            at the model's ``diam_mean``).
        progress, cancel
            Progress callback and cancel token (:mod:`flowseg.engine.progress`).
        check_memory : bool
            Refuse (:class:`~flowseg.engine.errors.NotEnoughMemoryError`) a run whose
            predicted peak memory (:func:`flowseg.engine.memory.estimate_segment_memory`)
            exceeds the memory free now; False runs anyway.

        Returns
        -------
        Segmentation
            Masks, flows, cell probability and styles at image resolution, with the
            parameters used in ``params`` (see :func:`flowseg.engine.inference.segment.segment`,
            which does the work).

        Raises
        ------
        flowseg.InputError
            (a ``ValueError``) For an image, diameter or parameter it cannot use (the
            message says which); :class:`flowseg.NotEnoughMemoryError` when it does not
            fit in the free memory.
        flowseg.Cancelled
            When ``cancel`` is set.
        """
        image = check_segment_input(
            self, image, channels=channels, channel_axis=channel_axis, z_axis=z_axis,
            diameter=diameter, do_3d=do_3d, anisotropy=anisotropy, batch_size=batch_size,
            augment=augment, memory=check_memory, stitch_threshold=stitch_threshold,
            cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
            min_size=min_size, niter=niter, sampling=sampling).array
        return segment(self, image, channels=channels, channel_axis=channel_axis,
                       z_axis=z_axis, diameter=diameter, do_3d=do_3d, anisotropy=anisotropy,
                       stitch_threshold=stitch_threshold, augment=augment,
                       tile_overlap=tile_overlap, batch_size=batch_size, normalize=normalize,
                       cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
                       min_size=min_size, niter=niter, sampling=sampling, bsize=bsize,
                       whole_max=whole_max, pad_extra=pad_extra, progress=progress,
                       cancel=cancel)

    def estimate_diameter(self, image: np.ndarray, *, channels: Optional[Sequence] = None,
                          channel_axis: Optional[int] = None, normalize: Normalize = True,
                          refine: bool = True, batch_size: int = 8,
                          progress: Optional[ProgressCallback] = None,
                          cancel: CancelToken = None) -> float:
        """Estimate the object diameter (pixels) of a 2D image (of a volume: its middle slice).

        Parameters
        ----------
        image : np.ndarray
            Any layout :meth:`segment` accepts.
        channels, channel_axis, normalize
            As for :meth:`segment`.
        refine : bool
            With a size model: follow the regression from the style vector by one
            segmentation at that diameter and return its median mask diameter.  Models
            without a size model always segment once at their ``diam_mean``.
        batch_size : int
            Network batch size.
        progress, cancel
            Progress callback and cancel token (:mod:`flowseg.engine.progress`).

        Returns
        -------
        float
            The diameter in pixels of ``image`` (see
            :func:`flowseg.engine.inference.size.estimate_diameter`).

        Raises
        ------
        flowseg.InputError
            For an image it cannot use, and for a constant (e.g. empty) image: there is
            no cell to measure (:func:`flowseg.engine.inference.checks.check_estimate_input`).
        """
        image = check_estimate_input(self, image, channels=channels,
                                     channel_axis=channel_axis).array
        return estimate_diameter(self, image, channels=channels, channel_axis=channel_axis,
                                 normalize=normalize, refine=refine, batch_size=batch_size,
                                 progress=progress, cancel=cancel)
