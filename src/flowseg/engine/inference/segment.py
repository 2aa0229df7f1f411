"""``Model.segment``: image -> normalised channels -> network (tiled) -> flows -> masks.

The pipeline follows the Cellpose method:

1. pick the cytoplasm (+ nucleus) channels
   (:func:`~flowseg.engine.inference.transforms.prepare_channels`) and normalise each
   channel to its 1st..99th percentiles (over the whole volume for 3D);
2. resize by ``diam_mean / diameter`` so objects have the size the network was trained for;
3. run the network in overlapping, taper-blended tiles (:mod:`flowseg.engine.network.tiling`);
4. resize the outputs back to the image, divide the flow maps by 5 (the network predicts 5x
   unit flows) and follow the flows to masks (:func:`flowseg.engine.flows.dynamics.flows_to_masks`),
   with ``niter = 200 * diameter / diam_mean`` Euler steps unless ``niter`` is given.

3D volumes go through :mod:`flowseg.engine.inference.volume`; a stack with ``do_3d=False`` is
segmented slice by slice and, with ``stitch_threshold > 0``, stitched across z.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np

from ..flows.masks import compute_masks
from ..flows.params import MaskParams
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .prepare import WHOLE_MAX, Normalize, check_diameter, default_niter, prepare_input, run_2d
from .result import Segmentation
from .size import (
    Refinement,
    can_estimate,
    estimate_diameter_prepared,
    initial_diameter,
    min_estimate,
    pass_fits,
    refine_estimate,
)
from .volume import run_3d

__all__ = ["segment"]


_EMPTY_LOGIT = -20.0
_MAX_WORK_PIXELS = 1 << 28  # 268 M pixels (1 GiB per float32 channel) at the model's scale


def _check_work_size(spatial: Sequence[int], rescale: float, zf: float, diameter: float,
                     diam_mean: float) -> None:
    """Refuse a diameter that would blow the image up beyond any sensible memory use."""
    n = float(np.prod(spatial[-2:])) * rescale ** 2
    if len(spatial) == 3:
        n *= spatial[0] * zf
    if n > _MAX_WORK_PIXELS:
        raise ValueError(f"diameter={diameter:g} would resize the image by {rescale:.3g}x (to "
                         f"{n / 1e6:.0f} M pixels) to reach the model's {diam_mean:g}-pixel "
                         "objects; check the diameter (it is in pixels of this image)")


def _is_constant(x: np.ndarray) -> bool:
    """Whether every channel of ``x`` is constant (no information: nothing to segment)."""
    flat = x.reshape(-1, x.shape[-1])
    return bool(np.all(flat.max(0) == flat.min(0)))


def _empty(model: ModelBase, x: np.ndarray, sdim: int, diameter: Optional[float],
           params: dict) -> Segmentation:
    """The well-defined result for an image without content: no objects."""
    spatial = x.shape[:-1]
    nflow = 3 if params["do_3d"] else 2
    styles = np.zeros(model.net.nbase[-1], np.float32)
    if sdim == 3 and not params["do_3d"]:
        styles = np.zeros((spatial[0], styles.size), np.float32)
    return Segmentation(masks=np.zeros(spatial, np.int32),
                        flows=np.zeros((nflow, *spatial), np.float32),
                        cellprob=np.full(spatial, _EMPTY_LOGIT, np.float32), styles=styles,
                        diameter=float(diameter or model.diam_mean), params=params)


def _estimate_2d(model: ModelBase, x: np.ndarray, opts: dict[str, Any]
                 ) -> tuple[float, Optional[Refinement], dict[str, Any]]:
    """Estimate the diameter of a prepared 2D image, keeping the estimate's pass if it fits.

    The size model's diameter (:func:`~flowseg.engine.inference.size.regression_diameter`;
    without one, the training objects' median of a fine-tuned model,
    :func:`~flowseg.engine.inference.size.start_diameter`) is refined
    (:func:`~flowseg.engine.inference.size.refine_estimate`, with the caller's network
    options): a large image is first measured on a sample of crops at it, then the whole
    image is segmented once at the crops' median (a small image: at the start diameter) and
    the estimate is the median diameter of its masks.  When the pass was made
    near enough the estimate (:func:`~flowseg.engine.inference.size.pass_fits`: at most 10 %
    above or 20 % below it) the pass is the segmentation (no second network pass).  Returns
    the diameter to segment at, the pass to keep (or None) and the record for ``params``.
    """
    progress, cancel = opts["progress"], opts["cancel"]
    report(progress, "size", 0, 1, "estimating the object size")
    d_reg = initial_diameter(model, x, batch_size=opts["batch_size"], cancel=cancel)
    _check_work_size(x.shape[:-1], model.diam_mean / d_reg, 1.0, d_reg, model.diam_mean)
    check_cancel(cancel)
    measured, ref, record = refine_estimate(model, x, d_reg, **opts)
    est = max(min_estimate(model), measured) if measured > 0 else ref.at
    keep = pass_fits(ref.at, est)
    report(progress, "size", 1, 1, "estimating the object size")
    record.update({"diameter_estimate": float(est), "estimate_pass_kept": bool(keep),
                   ("diameter_size_model" if model.size_model is not None
                    else "diameter_start"): float(d_reg)})
    return (ref.at, ref, record) if keep else (est, None, record)


def segment(model: ModelBase, image: np.ndarray, *, channels=None, channel_axis=None,
            z_axis=None, diameter: Optional[float] = None, do_3d: bool = False,
            anisotropy: Optional[float] = None,
            stitch_threshold: float = MaskParams.stitch_threshold,
            augment: bool = False, tile_overlap: float = 0.1, batch_size: int = 8,
            normalize: Normalize = True,
            cellprob_threshold: float = MaskParams.cellprob_threshold,
            flow_threshold: float = MaskParams.flow_threshold,
            min_size: int = MaskParams.min_size, niter: Optional[int] = MaskParams.niter,
            bsize: int = 224, whole_max: int = WHOLE_MAX, pad_extra: int = 8,
            sampling: str = MaskParams.sampling,
            progress: Optional[ProgressCallback] = None,
            cancel: CancelToken = None) -> Segmentation:
    """Segment a 2D image, a stack of 2D slices or a 3D volume.

    Parameters
    ----------
    model : Model
    image : np.ndarray
        2D ``(Y, X)``, 2D with channels ``(Y, X, C)`` / ``(C, Y, X)``, or 3D ``(Z, Y, X[, C])``.
    channels : (int, int or None), optional
        0-based ``(cyto, nucleus)`` channel indices (see
        :mod:`flowseg.engine.inference.transforms`).
    channel_axis, z_axis : int, optional
        Axes of channels / z (auto-detected when None).
    diameter : float, optional
        Object diameter in pixels; None: estimated with the model's size model if it has one,
        else the model's ``diam_mean`` (no resizing; recorded in ``params["diameter_source"]``).
    do_3d : bool
        Full 3D segmentation (three slice orientations, 3D dynamics).
    anisotropy : float, optional
        Z step / XY pixel size for 3D (e.g. 2.0 when z is sampled half as densely).
    stitch_threshold : float
        With ``do_3d=False`` on a volume: segment each slice in 2D and stitch masks across z
        when their IoU exceeds this threshold (0: independent slices).
    sampling : {"exact", "cellpose3"}
        How the 3D dynamics sample the flows (see
        :func:`flowseg.engine.flows.dynamics.flows_to_masks`).  ``"cellpose3"`` reproduces
        Cellpose 3.1's 3D masks from the same flows exactly, but it is worse on sharp flow
        fields (exact flows of known labels: AP@0.5 0.68 against 0.99), hence not the default.
    augment, tile_overlap, batch_size, bsize, whole_max, pad_extra
        Tiling options (see :func:`flowseg.engine.network.tiling.run_tiled`).  By default an image
        whose padded size is at most ``whole_max`` pixels (1024 x 1024) runs through the
        network in one piece, which avoids the tile-overlap overhead; ``whole_max=0`` always
        uses overlapping ``bsize`` tiles exactly like Cellpose.
    normalize : bool or (lo, hi)
        Percentile normalisation (True: the model's own percentiles).
    cellprob_threshold, flow_threshold, min_size, niter
        Mask parameters (see :func:`flowseg.flows_to_masks`); ``niter=None`` scales with the
        diameter (200 steps at the model's ``diam_mean``).
    progress, cancel
        Progress callback and cancel token (:mod:`flowseg.engine.progress`).

    Returns
    -------
    Segmentation
    """
    diameter = check_diameter(diameter)
    mask = MaskParams(cellprob_threshold=cellprob_threshold, flow_threshold=flow_threshold,
                      min_size=min_size, niter=niter, stitch_threshold=stitch_threshold,
                      sampling=sampling)  # validated before the network runs
    if do_3d and mask.stitch_threshold > 0:
        raise ValueError("use either do_3d=True or stitch_threshold > 0, not both")
    if anisotropy is not None and not (math.isfinite(float(anisotropy)) and anisotropy > 0):
        raise ValueError(f"anisotropy must be a finite number > 0, got {anisotropy!r}")
    report(progress, "prepare", 0, 1, "normalising")
    x, sdim = prepare_input(model, image, channels=channels, channel_axis=channel_axis,
                            z_axis=z_axis, do_3d=do_3d, stitch_threshold=mask.stitch_threshold,
                            normalize=normalize)
    report(progress, "prepare", 1, 1, "normalising")
    check_cancel(cancel)
    if _is_constant(x):
        return _empty(model, x, sdim, diameter, dict(
            mask.as_dict(), diameter_source="constant image: nothing to segment",
            do_3d=bool(do_3d and sdim == 3)))
    source = "given"
    opts: dict[str, Any] = {"bsize": bsize, "tile_overlap": tile_overlap, "batch_size": batch_size,
            "augment": augment, "whole_max": int(whole_max), "pad_extra": int(pad_extra),
            "progress": progress, "cancel": cancel}
    kept: Optional[Refinement] = None
    estimate: dict[str, Any] = {}
    if diameter is None:
        if not can_estimate(model):
            diameter = model.diam_mean
            source = "model diam_mean (no size model; pass diameter to resize)"
        elif sdim == 2:
            diameter, kept, estimate = _estimate_2d(model, x, opts)
            source = "estimated"
        else:
            diameter = estimate_diameter_prepared(model, x[x.shape[0] // 2],
                                                  batch_size=batch_size, progress=progress,
                                                  cancel=cancel)
            source = "estimated (middle slice)"
    rescale = model.diam_mean / diameter
    zf = rescale * float(anisotropy or 1.0) if (sdim == 3 and do_3d) else 1.0
    _check_work_size(x.shape[:-1], rescale, zf, diameter, model.diam_mean)
    if mask.niter is None:
        mask = mask.replace(niter=default_niter(diameter, model.diam_mean))
    params: dict[str, Any] = dict(mask.as_dict(), diameter_source=source,
                                  do_3d=bool(do_3d and sdim == 3), rescale=rescale, **estimate)
    if kept is not None:  # the estimate's own pass was at this diameter: its flows are final
        del x
        flows = np.ascontiguousarray(kept.y[:2]) * np.float32(0.2)
        cellprob, styles = np.ascontiguousarray(kept.y[2]), kept.style
        masks = (kept.masks if mask == kept.params else
                 compute_masks(flows, cellprob, mask, progress=progress, cancel=cancel))
        return Segmentation(masks=masks, flows=flows, cellprob=cellprob, styles=styles,
                            diameter=float(diameter), params=params)
    if sdim == 3 and do_3d:
        flows, cellprob, styles = run_3d(model, x, rescale, anisotropy=anisotropy, **opts)
        del x  # free the normalised volume before the 3D dynamics
        params["anisotropy"] = None if anisotropy is None else float(anisotropy)
    else:
        stack = x if sdim == 3 else x[None]
        y, styles = run_2d(model, stack, rescale, **opts)
        del stack, x
        flows = np.ascontiguousarray(np.moveaxis(y[:, :2], 1, 0)) * np.float32(0.2)
        cellprob = np.ascontiguousarray(y[:, 2])
        del y
        if sdim == 2:
            flows, cellprob, styles = flows[:, 0], cellprob[0], styles[0]
    check_cancel(cancel)
    masks = compute_masks(flows, cellprob, mask, progress=progress, cancel=cancel)
    return Segmentation(masks=masks, flows=flows, cellprob=cellprob, styles=styles,
                        diameter=float(diameter), params=params)
