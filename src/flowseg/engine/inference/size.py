"""Object-size estimation: style vector -> log diameter, refined by segmenting the image.

A model may carry a *size model* in its metadata, ``meta["size_model"] = {"A": [...],
"b": float}``, a linear regression ``log(diameter) = A . style + b`` from the network's style
vector (computed on the image at its own resolution) to the object diameter in pixels.
:func:`estimate_diameter` applies it (:func:`regression_diameter`: the style of a few tiles
spread over the image, from the encoder alone, as many as cost at most :data:`STYLE_BUDGET`
of a segmentation pass), then refines it (:func:`refine_estimate`): a large image is first
measured on a sample of crops at that diameter
(:func:`~flowseg.engine.inference.crops.refine_on_crops`, at most about a quarter of a pass);
then the whole image is segmented once, at the crops' median (a small image: at the size
model's diameter) (:func:`refine_at`), and the estimate is the median diameter of its masks
(the diameter the pass was made at if nothing was found).  ``Model.segment(diameter=None)``
keeps that segmentation when it was made at most :data:`REUSE_TOLERANCE` above or
:data:`REUSE_FINER` below the estimate (:func:`pass_fits`; no second network pass).
Estimates never go below ``diam_mean / MAX_UPSCALE`` (:func:`min_estimate`): a wrong model
or an unusual image must not make the passes enlarge the image 10x (minutes per image).

The size model is fitted by :func:`~flowseg.engine.inference.size_fit.fit_size_model` (and
calibrated after fine-tuning by :func:`~flowseg.engine.inference.size_fit.calibrate_size_model`),
re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..flows.masks import compute_masks
from ..flows.params import MaskParams
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .crops import CROP, mask_diameters, refine_on_crops
from .prepare import WHOLE_MAX, default_niter, prepare_input, run_2d
from .size_fit import calibrate_size_model, fit_size_model, zoomed_views
from .style import ENCODER_SHARE, tiles_style

__all__ = ["MAX_UPSCALE", "REUSE_FINER", "REUSE_TOLERANCE", "SMALL_CROPS", "STYLE_BUDGET",
           "STYLE_FAR", "STYLE_FIRST", "STYLE_TILES", "UNCERTAIN", "Refinement",
           "calibrate_size_model", "estimate_diameter", "estimate_diameter_prepared",
           "can_estimate", "fitted_range", "initial_diameter", "pass_fits", "start_diameter",
           "fit_size_model", "mask_diameters", "min_estimate", "refine_at", "refine_estimate",
           "regression_diameter", "style_diameter", "zoomed_views"]

_MIN_DIAM = 5.0
#: tiles (224 px, spread over the image) whose styles the size model reads.  On 102 real
#: images (the 38 Usiigaci images with ``cyto``; 64 DSB images with ``nuclei``: 5 of ~1 MP and
#: the validation split) the estimates with 9 tiles stay within 5 % of those from every tile
#: on 100 (the two others move 7-14 % with any small change of scale); with 4 tiles on 97
STYLE_TILES = 9
#: tiles read first; more (up to :data:`STYLE_TILES`) only while the style costs at most
#: :data:`STYLE_BUDGET` of the segmentation pass at the first tiles' diameter (objects twice
#: ``diam_mean`` make that pass 4x smaller than the image, and 9 tiles would cost about as
#: much as it on a 1 MP image)
STYLE_FIRST = 2
STYLE_BUDGET = 0.1
#: ... but all :data:`STYLE_TILES` when the first tiles predict objects outside the sizes
#: the size model was fitted on (:func:`fitted_range`): there two tiles were not enough
#: (e.g. 134 px for 85-px cells, which a refinement at that scale did not correct).  A size
#: model that does not record its range was fitted on ``diam_mean / STYLE_FAR`` to
#: ``STYLE_FAR * diam_mean`` (the bundled ones before their refit over 6-200 px; with that
#: fixed rule the refitted ``cyto`` read 9 tiles for every 65-75-px Usiigaci cell, 1.1
#: passes' work)
STYLE_FAR = 2.0
#: an estimate never asks to enlarge the image more than this per side: estimated
#: diameters are at least ``diam_mean / MAX_UPSCALE``
MAX_UPSCALE = 3.0
#: ``Model.segment`` keeps the estimate's own segmentation when the diameter it was made at
#: is at most this fraction above the estimate (the median diameter of its masks) ...
REUSE_TOLERANCE = 0.1
#: ... and at most this fraction below it.  Measured AP against the labels when segmenting
#: at 0.8 / 0.9 / 1.1 x the labels' median diameter (38 Usiigaci images with ``cyto``, the 60
#: DSB validation images with ``nuclei``): AP@0.5 -0.007 / +0.005 / -0.005 and -0.008 /
#: +0.001 / -0.006 (standard errors 0.003-0.008); AP@0.75 +0.001 / +0.010 / -0.035 and
#: -0.015 / -0.005 / -0.004.  A finer pass (objects drawn larger than the network's
#: ``diam_mean``) loses no more at -20 % than a coarser one at +10 %
REUSE_FINER = 0.2
#: the crops' median is *uncertain* when the standard error of its log exceeds half the
#: width of the window in which the pass is kept (log 1.1 - log 0.8) / 2 = 0.16: the crops
#: then cannot place the pass inside it.  An uncertain median below the size model's
#: diameter does not make the pass finer than that: a pass made too fine costs the square of
#: the error (DSB ``c395870a``: 9 whole objects, error 0.33, median 9.4 px for 18-px nuclei,
#: a pass at 3.7 times the pixels of the final one), one made too coarse less, and both
#: measure the objects (a pass 1.2-1.5x too coarse measured 2-7 % above the final estimate
#: on 6 DSB images)
UNCERTAIN = 0.5 * float(np.log((1.0 + REUSE_TOLERANCE) / (1.0 - REUSE_FINER)))
#: an image of at most this many crop areas (:data:`~flowseg.engine.inference.crops.CROP`
#: squared) at the network's scale is refined whole (the pass may then be kept); a larger
#: one on a sample of crops (:func:`~flowseg.engine.inference.crops.refine_on_crops`)
SMALL_CROPS = 2.0


def style_diameter(size_model: dict, style: np.ndarray) -> float:
    """Diameter predicted by a size model from a style vector."""
    A = np.asarray(size_model["A"], np.float64)
    if A.shape != style.shape:
        raise ValueError(f"size model expects styles of length {A.size}, got {style.shape}")
    return float(max(_MIN_DIAM, np.exp(A @ style.astype(np.float64) + float(size_model["b"]))))


@dataclass
class Refinement:
    """One segmentation pass at a trial diameter and the median diameter of its masks.

    Attributes
    ----------
    diameter : float
        Median equivalent-circle diameter of the masks (0 if none were found).
    at : float
        The diameter the image was processed at.
    y : np.ndarray
        float32 ``(3, H, W)`` network outputs at image resolution (5x flows, logit).
    style : np.ndarray
        float32 ``(S,)`` style of the pass.
    masks : np.ndarray
        int32 masks made with :attr:`params`.
    params : MaskParams
        The default mask parameters with ``niter`` for ``at``.
    """

    diameter: float
    at: float
    y: np.ndarray
    style: np.ndarray
    masks: np.ndarray
    params: MaskParams


def fitted_range(model: ModelBase) -> tuple[float, float]:
    """Apparent diameters the size model was fitted on: ``size_model["fit"]["diameters"]``,
    else ``diam_mean / STYLE_FAR`` to ``STYLE_FAR * diam_mean``."""
    try:
        lo, hi = (float(v) for v in (model.size_model or {})["fit"]["diameters"])
        if 0 < lo < hi:
            return lo, hi
    except (KeyError, TypeError, ValueError):
        pass
    return model.diam_mean / STYLE_FAR, model.diam_mean * STYLE_FAR


def pass_fits(at: float, estimate: float) -> bool:
    """Whether a segmentation made at diameter ``at`` may stand for one at ``estimate``:
    ``(1 - REUSE_FINER) * estimate <= at <= (1 + REUSE_TOLERANCE) * estimate``."""
    r = float(at) / float(estimate)
    return (1.0 - REUSE_FINER) * (1 - 1e-12) <= r <= (1.0 + REUSE_TOLERANCE) * (1 + 1e-12)


def _diam_train(model: ModelBase) -> float | None:
    d = (getattr(model, "meta", None) or {}).get("diam_train")
    try:
        return float(d) if d is not None and np.isfinite(float(d)) and float(d) > 0 else None
    except (TypeError, ValueError):
        return None


def start_diameter(model: ModelBase) -> float:
    """Where an estimate without a size model starts: the median object diameter of the
    model's training images (``meta["diam_train"]``, recorded by fine-tuning -- Cellpose 2.0
    segments with it by default), else ``diam_mean``."""
    d = _diam_train(model)
    return float(model.diam_mean) if d is None else max(min_estimate(model), d)


def can_estimate(model: ModelBase) -> bool:
    """Whether ``diameter=None`` estimates: with a size model, or, without one, from the
    training objects' median (``meta["diam_train"]``) by segmenting and measuring."""
    return model.size_model is not None or _diam_train(model) is not None


def min_estimate(model: ModelBase) -> float:
    """Smallest diameter an estimate may return: ``diam_mean / MAX_UPSCALE`` (at least 5)."""
    return max(_MIN_DIAM, model.diam_mean / MAX_UPSCALE)


def regression_diameter(model: ModelBase, x: np.ndarray, *, batch_size: int = 8,
                        budget: bool = True, cancel: CancelToken = None) -> float:
    """The size model's diameter for a prepared 2D image ``(H, W, C)``.

    The style is that of 224-pixel tiles of the image at its own resolution, spread over it
    (:func:`flowseg.engine.inference.style.tiles_style`, encoder only): :data:`STYLE_TILES`
    tiles, or with ``budget`` (when a refinement follows, which corrects the regression's
    error) first :data:`STYLE_FIRST` tiles and then only as many more as cost at most
    :data:`STYLE_BUDGET` of the segmentation pass at their diameter (none when the image at
    that diameter is large enough to be measured on crops, :data:`SMALL_CROPS`: 2 tiles
    moved the regression by a few % against 9 on most images and by 20-30 % on some, its
    own error is ~10-20 % on the validation images, and the crops
    measure objects at any scale within the network's range), or all
    :data:`STYLE_TILES` when that diameter is outside the sizes the size model was fitted
    on (:func:`fitted_range`).  The result is raised to
    :func:`min_estimate`.  Needs ``model.size_model``.
    """
    if model.size_model is None:
        raise ValueError("the model has no size model")
    k, n = STYLE_TILES, 0
    if budget:
        style, n = tiles_style(model.net, x, max_tiles=STYLE_FIRST, batch_size=batch_size,
                               cancel=cancel)
        d = max(min_estimate(model), style_diameter(model.size_model, style))
        work = x.shape[0] * x.shape[1] * (model.diam_mean / d) ** 2  # pixels of the pass
        k = min(STYLE_TILES, int(STYLE_BUDGET * work / (ENCODER_SHARE * 224 * 224)))
        if work > SMALL_CROPS * CROP * CROP:
            k = n  # crops follow: they measure the size; the regression only sets their scale
        lo, hi = fitted_range(model)
        if not lo <= d <= hi:
            k = STYLE_TILES
    if k > n:
        style, _ = tiles_style(model.net, x, max_tiles=k, batch_size=batch_size, cancel=cancel)
    return max(min_estimate(model), style_diameter(model.size_model, style))


def initial_diameter(model: ModelBase, x: np.ndarray, *, batch_size: int = 8,
                     budget: bool = True, cancel: CancelToken = None) -> float:
    """Where an estimate of a prepared 2D image starts: the size model's reading
    (:func:`regression_diameter`) or, without a size model, :func:`start_diameter`."""
    if model.size_model is None:
        return start_diameter(model)
    return regression_diameter(model, x, batch_size=batch_size, budget=budget, cancel=cancel)


def refine_at(model: ModelBase, x: np.ndarray, at: float, *, bsize: int = 224,
              tile_overlap: float = 0.1, batch_size: int = 8, augment: bool = False,
              whole_max: int = WHOLE_MAX, pad_extra: int = 8,
              progress: ProgressCallback | None = None, cancel: CancelToken = None
              ) -> Refinement:
    """Segment a prepared 2D image ``(H, W, C)`` at diameter ``at``; measure its masks.

    The network pass reports progress with stage ``"size"``; the masks use the default
    :class:`~flowseg.engine.flows.params.MaskParams` with ``niter`` for ``at``, so the
    measured diameter does not depend on the caller's thresholds.
    """
    y, styles = run_2d(model, x[None], model.diam_mean / float(at), bsize=bsize,
                       tile_overlap=tile_overlap, batch_size=batch_size, augment=augment,
                       progress=progress, cancel=cancel, whole_max=whole_max,
                       pad_extra=pad_extra, stage="size")
    check_cancel(cancel)
    mp = MaskParams(niter=default_niter(at, model.diam_mean))
    masks = compute_masks(y[0, :2] * np.float32(0.2), y[0, 2], mp)
    d, _ = mask_diameters(masks)
    return Refinement(diameter=d, at=float(at), y=y[0], style=styles[0], masks=masks,
                      params=mp)


def refine_estimate(model: ModelBase, x: np.ndarray, at: float, *, bsize: int = 224,
                    tile_overlap: float = 0.1, batch_size: int = 8, augment: bool = False,
                    whole_max: int = WHOLE_MAX, pad_extra: int = 8,
                    progress: ProgressCallback | None = None, cancel: CancelToken = None
                    ) -> tuple[float, Refinement, dict[str, Any]]:
    """Median object diameter of a prepared 2D image ``(H, W, C)``, starting from ``at``.

    The image is segmented whole once (:func:`refine_at`) and the median diameter of its
    masks returned.  An image of at most :data:`SMALL_CROPS` crop areas at the network's
    scale is segmented at ``at``; a larger one first on a sample of crops at ``at``
    (:func:`~flowseg.engine.inference.crops.refine_on_crops`, at most about a quarter of a
    pass), then at the crops' median (an :data:`UNCERTAIN` one below ``at``: at ``at``),
    which is usually near enough the final estimate (:func:`pass_fits`) for
    ``Model.segment`` to keep the pass.  The size model is not
    weighed in: weighing it against the crops by their errors kept fewer passes (module
    docstring of :mod:`~flowseg.engine.inference.crops`).

    Returns
    -------
    diameter : float
        The median diameter of the whole-image pass (0 if no object was found).
    refinement : Refinement
        That pass (its ``at`` is the diameter it was made at).
    record : dict
        ``diameter_crops`` (the crops' median, or None when not used or nothing was found),
        ``crops_objects`` (whole objects measured on them), ``crops_se`` (the standard error
        of the log of their median), ``diameter_objects`` (objects in the pass).
    """
    H, W = x.shape[:2]
    r = model.diam_mean / float(at)
    record: dict[str, Any] = {"diameter_crops": None, "crops_objects": None, "crops_se": None}
    if H * W * r * r > SMALL_CROPS * CROP * CROP:
        ce = refine_on_crops(model, x, at, batch_size=batch_size, augment=augment,
                             whole_max=whole_max, progress=progress, cancel=cancel)
        record.update(crops_objects=int(ce.n_objects))
        if ce.diameter > 0:
            record.update(diameter_crops=float(ce.diameter), crops_se=float(ce.se))
            d = float(ce.diameter)
            if ce.se > UNCERTAIN:
                d = max(d, float(at))  # uncertain: not a finer, dearer pass than the regression's
            at = max(min_estimate(model), d)
    ref = refine_at(model, x, at, bsize=bsize, tile_overlap=tile_overlap,
                    batch_size=batch_size, augment=augment, whole_max=whole_max,
                    pad_extra=pad_extra, progress=progress, cancel=cancel)
    record["diameter_objects"] = int(np.count_nonzero(np.bincount(ref.masks.ravel())[1:]))
    return ref.diameter, ref, record


def estimate_diameter_prepared(model: ModelBase, x: np.ndarray, *, batch_size: int = 8,
                               refine: bool = True, progress: ProgressCallback | None = None,
                               cancel: CancelToken = None) -> float:
    """Diameter estimate for a prepared (channel-selected, normalised) 2D image ``(H, W, C)``.

    With a size model: :func:`regression_diameter`, then (``refine``) the median mask
    diameter of a whole-image segmentation near it (:func:`refine_estimate`: on a large
    image at the median of a sample of crops); without one the same starting from
    :func:`start_diameter` (``diam_train`` of a fine-tuned model, else ``diam_mean``).  When
    nothing is found: the diameter that pass was made at.  The result
    is never below :func:`min_estimate`; ``Model.segment(diameter=None)`` gets the same.
    """
    report(progress, "size", 0, 1, "estimating the object size")
    diam = initial_diameter(model, x, batch_size=batch_size, budget=refine, cancel=cancel)
    if refine:
        check_cancel(cancel)
        d, ref, _ = refine_estimate(model, x, diam, batch_size=batch_size, progress=progress,
                                    cancel=cancel)
        diam = max(min_estimate(model), d) if d > 0 else ref.at
    report(progress, "size", 1, 1, "estimating the object size")
    return float(diam)


def estimate_diameter(model: ModelBase, image: np.ndarray, *, channels=None, channel_axis=None,
                      normalize: Any = True, refine: bool = True, batch_size: int = 8,
                      progress: ProgressCallback | None = None,
                      cancel: CancelToken = None) -> float:
    """Estimate the object diameter (pixels) of a 2D image (of a volume: its middle slice).

    With a size model: regression from the style vector, then (``refine``) the median mask
    diameter of one segmentation at that diameter.  Without one: the median mask diameter
    of a segmentation at :func:`start_diameter` (the training objects' median of a fine-tuned
    model, else ``diam_mean``; reliable within about a factor of 2 of it).
    See :func:`estimate_diameter_prepared`.
    """
    x, sdim = prepare_input(model, image, channels=channels, channel_axis=channel_axis,
                            normalize=normalize)
    if sdim != 2:
        x = x[x.shape[0] // 2]
    return estimate_diameter_prepared(model, x, batch_size=batch_size,
                                      refine=refine or model.size_model is None,
                                      progress=progress, cancel=cancel)
