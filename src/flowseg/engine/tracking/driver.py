"""Segment every frame of a time-lapse with one model and one diameter, then link.

:func:`segment_frames` runs :meth:`flowseg.Model.segment` frame by frame (2D or 3D frames)
with the same parameters and the same diameter for all frames -- estimated once, as the
median of the size model's estimates on the first, middle and last frames, when not given
-- so a cell's size, and hence its mask, does not jump between frames.
:func:`track` adds the linking (:func:`~flowseg.engine.tracking.link.link_masks`).

Axes are given in the numbering of the full array (with its T axis), as the napari
widget and ``flowseg track`` do.  Frames are read one at a time, so a lazy (dask / zarr)
array is never loaded whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.model import Model
from ..inference.prepare import check_diameter
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .link import LinkParams, link_masks
from .result import TrackResult

__all__ = ["FrameMasks", "frame_axes", "segment_frames", "track"]


@dataclass
class FrameMasks:
    """Per-frame segmentation of a time-lapse.

    Attributes
    ----------
    masks : np.ndarray
        ``(T, *spatial)`` int32, each frame labelled on its own (ids are not tracks).
    diameter : float
        The one diameter (pixels) used for every frame.
    diameter_source : str
        ``"given"``, ``"estimated (median of N frames)"`` or the model's own size.
    seconds : float
        Wall time of the segmentation (diameter estimate included).
    """

    masks: np.ndarray
    diameter: float
    diameter_source: str
    seconds: float = 0.0
    params: dict = field(default_factory=dict)


def frame_axes(ndim: int, t_axis: int, channel_axis: int | None = None,
               z_axis: int | None = None) -> tuple[int, int | None, int | None]:
    """Validate the T axis and renumber the channel / Z axes for one frame.

    Returns ``(t_axis, channel_axis, z_axis)`` with ``t_axis`` made non-negative and the
    other two counted in the frame (the array without its T axis).
    """
    if not -ndim <= int(t_axis) < ndim:
        raise ValueError(f"t_axis {t_axis} does not exist in an array with {ndim} axes")
    t = int(t_axis) % ndim
    out = []
    for name, a in (("channel_axis", channel_axis), ("z_axis", z_axis)):
        if a is None:
            out.append(None)
            continue
        if not -ndim <= int(a) < ndim:
            raise ValueError(f"{name} {a} does not exist in an array with {ndim} axes")
        a = int(a) % ndim
        if a == t:
            raise ValueError(f"{name} and t_axis are the same axis ({t})")
        out.append(a - 1 if a > t else a)
    if out[0] is not None and out[0] == out[1]:
        raise ValueError("channel_axis and z_axis are the same axis")
    if ndim - 1 - (out[0] is not None) < 2:
        raise ValueError(f"an array with {ndim} axes has no (Y, X) frames left after taking "
                         f"away the T axis{' and channels' if out[0] is not None else ''}")
    return t, out[0], out[1]


def _frame(image: Any, t_axis: int, t: int) -> np.ndarray:
    index = [slice(None)] * image.ndim
    index[t_axis] = t
    return np.asarray(image[tuple(index)])


def _estimate(model: Model, image: Any, t_axis: int, n: int, kw: dict,
              progress: ProgressCallback | None, cancel: CancelToken) -> tuple[float, str]:
    """Median of :meth:`Model.estimate_diameter` on the first, middle and last frames."""
    picks = sorted({0, n // 2, n - 1})
    ests = []
    for j, t in enumerate(picks):
        check_cancel(cancel)
        frame = _frame(image, t_axis, t)
        cax, zax = kw.get("channel_axis"), kw.get("z_axis")
        if zax is not None:  # the size model is 2D: the middle plane of a 3D frame
            frame = np.take(frame, frame.shape[zax] // 2, axis=zax)
            if cax is not None and cax > zax:
                cax -= 1
        ests.append(model.estimate_diameter(frame, channels=kw.get("channels"),
                                            channel_axis=cax, cancel=cancel))
        report(progress, "diameter", j + 1, len(picks), "estimating the diameter once")
    return float(np.median(ests)), f"estimated (median of {len(picks)} frames)"


def segment_frames(model: Model, image: Any, *, t_axis: int = 0,
                   diameter: float | None = None, channels=None,
                   channel_axis: int | None = None, z_axis: int | None = None,
                   progress: ProgressCallback | None = None, cancel: CancelToken = None,
                   **segment_kwargs: Any) -> FrameMasks:
    """Segment each frame of a time-lapse with the same parameters and diameter.

    Parameters
    ----------
    model : Model
    image : array-like
        The time-lapse, e.g. ``(T, Y, X)``, ``(T, Y, X, C)``, ``(T, Z, Y, X)``; numpy, dask
        or anything indexable with a ``shape``.
    t_axis : int
        The time axis.
    diameter : float, optional
        Cell diameter in pixels; None: estimated once (see the module docstring; without
        a size model the estimate is the median mask size at the model's own diameter).
    channels, channel_axis, z_axis
        As for :meth:`flowseg.Model.segment`, axes counted in ``image`` (with its T axis).
    progress, cancel
        Stage ``"frames"`` reports every finished frame; Cancel stops within a frame.
    **segment_kwargs
        Passed to :meth:`flowseg.Model.segment` for every frame (``do_3d``,
        ``cellprob_threshold``, ``flow_threshold``, ``min_size``, ...).

    Returns
    -------
    FrameMasks
    """
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        image = np.asarray(image)
    t_axis, cax, zax = frame_axes(image.ndim, t_axis, channel_axis, z_axis)
    n = int(image.shape[t_axis])
    if n < 1:
        raise ValueError("the time-lapse has no frames (its T axis has length 0)")
    diameter = check_diameter(diameter)
    kw = dict(channels=channels, channel_axis=cax, z_axis=zax, **segment_kwargs)
    t0 = time.perf_counter()
    if diameter is None:
        diameter, source = _estimate(model, image, t_axis, n, kw, progress, cancel)
    else:
        source = "given"
    masks: np.ndarray | None = None
    for t in range(n):
        check_cancel(cancel)
        seg = model.segment(_frame(image, t_axis, t), diameter=diameter, cancel=cancel, **kw)
        if masks is None:
            masks = np.zeros((n,) + seg.masks.shape, np.int32)
        masks[t] = seg.masks
        report(progress, "frames", t + 1, n, f"segmented frame {t + 1}/{n}",
               objects=int(seg.n_objects))
    params = {k: v for k, v in kw.items() if isinstance(v, (int, float, str, bool, type(None)))}
    return FrameMasks(masks=masks, diameter=float(diameter), diameter_source=source,
                      seconds=time.perf_counter() - t0, params=params)


def track(model: Model, image: Any, *, t_axis: int = 0, diameter: float | None = None,
          link: LinkParams | None = None, progress: ProgressCallback | None = None,
          cancel: CancelToken = None, **segment_kwargs: Any) -> TrackResult:
    """Segment every frame (:func:`segment_frames`) and link the cells over time.

    Returns a :class:`TrackResult` whose ``info`` records the diameter, its source and the
    seconds spent segmenting and linking.
    """
    frames = segment_frames(model, image, t_axis=t_axis, diameter=diameter, progress=progress,
                            cancel=cancel, **segment_kwargs)
    result = link_masks(frames.masks, link, progress=progress, cancel=cancel)
    result.info.update(segment_diameter=frames.diameter,
                       diameter_source=frames.diameter_source,
                       segment_seconds=frames.seconds, link_seconds=result.info.get("seconds"),
                       segment_params=frames.params)
    return result
