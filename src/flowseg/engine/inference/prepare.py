"""Input checks and preparation shared by segmentation and size estimation.

* :func:`prepare_input`: validate an image, select the cytoplasm (+ nucleus) channels and
  normalise them to percentiles (:mod:`flowseg.engine.inference.transforms`);
* :func:`run_2d`: the network (tiled, :mod:`flowseg.engine.network.tiling`) on a stack of
  prepared 2D images at the model's scale, outputs resized back to the image;
* the small rules both :mod:`~flowseg.engine.inference.segment` and
  :mod:`~flowseg.engine.inference.size` follow: :func:`check_diameter`,
  :func:`default_niter`, :func:`spatial_ndim`, :func:`normalize_arg`, :data:`WHOLE_MAX`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from ..errors import InputError
from ..network.tiling import run_tiled
from ..progress import check_cancel, report
from .base import ModelBase
from .transforms import find_channel_axis, normalize_percentile, prepare_channels, resize_image

__all__ = ["WHOLE_MAX", "Normalize", "check_diameter", "default_niter", "normalize_arg",
           "prepare_input", "run_2d", "spatial_ndim"]

Normalize = Union[bool, Sequence[float]]
WHOLE_MAX = 1024 * 1024


def check_diameter(diameter: Any) -> Optional[float]:
    """Validate a user diameter (None, or a finite number > 0; else :class:`InputError`)."""
    if diameter is None:
        return None
    try:
        d = float(diameter)
    except (TypeError, ValueError):
        raise InputError(f"diameter must be a number > 0 or None, got {diameter!r}") from None
    if not math.isfinite(d) or d <= 0:
        raise InputError(f"diameter must be a finite number > 0 (or None to estimate it), "
                         f"got {diameter!r}")
    return d


def default_niter(diameter: float, diam_mean: float) -> int:
    """Euler steps for the dynamics at image resolution (200 at the model's diameter)."""
    return max(20, int(round(200.0 * diameter / diam_mean)))


def spatial_ndim(image: Any, channel_axis: Optional[int], z_axis: Optional[int],
                  do_3d: bool, stitch_threshold: float) -> int:
    """Spatial axes (2 or 3) of an image with these settings, as ``segment`` decides them.

    ``image`` needs only ``ndim`` and ``shape``.  Raises ValueError for fewer than 2 or
    more than 4 axes, and for 3D settings on an image without a z axis.
    """
    nd = image.ndim
    if nd < 2:
        raise ValueError(f"image must have at least 2 axes (Y, X), got shape {image.shape}")
    if nd > 4:
        raise ValueError(f"image of shape {image.shape} has {nd} axes; at most 4 are supported "
                         "(Z, Y, X, channels): select a time point / position first")
    if do_3d or z_axis is not None or stitch_threshold > 0:
        if nd == 2 or (nd == 3 and channel_axis is not None):
            raise ValueError(f"3D segmentation needs a volume (Z, Y, X[, C]); got shape "
                             f"{image.shape}" + (f" with channel_axis={channel_axis}"
                                                 if channel_axis is not None else ""))
        return 3
    if nd == 2:
        return 2
    if nd == 4:
        return 3
    if channel_axis is not None:
        return 2
    try:
        find_channel_axis(image.shape, 2)
        return 2
    except ValueError:
        return 3  # (Z, Y, X) stack without a small axis: slice by slice


def normalize_arg(normalize: Normalize, model: ModelBase) -> Optional[tuple[float, float]]:
    """The ``(lo, hi)`` percentiles ``normalize`` asks for (None: no normalisation)."""
    if normalize is True:
        return model.normalize
    if normalize is False or normalize is None:
        return None
    try:
        lo, hi = (float(v) for v in normalize)
    except (TypeError, ValueError):
        raise ValueError(f"normalize must be True, False or (lo, hi) percentiles, "
                         f"got {normalize!r}") from None
    return lo, hi


def prepare_input(model: ModelBase, image: np.ndarray, *, channels=None, channel_axis=None,
                  z_axis=None, do_3d: bool = False, stitch_threshold: float = 0.0,
                  normalize: Normalize = True) -> tuple[np.ndarray, int]:
    """Validate, select channels and normalise; returns ``(x (…, nchan) float32, spatial_ndim)``."""
    image = np.asarray(image)
    if image.dtype == object or not (np.issubdtype(image.dtype, np.number)
                                     or image.dtype == bool):
        raise ValueError(f"image must be a numeric array, got dtype {image.dtype}")
    if np.iscomplexobj(image):
        raise ValueError("image must be real-valued, got a complex array")
    sdim = spatial_ndim(image, channel_axis, z_axis, do_3d, stitch_threshold)
    x = prepare_channels(image, channels, channel_axis, nchan=model.nchan, spatial_ndim=sdim,
                         z_axis=z_axis)
    if x.size == 0 or min(x.shape[:-1]) == 0:
        raise ValueError(f"image is empty (spatial shape {x.shape[:-1]})")
    if not np.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values in the selected channels; "
                         "replace them (e.g. np.nan_to_num) before segmenting")
    pr = normalize_arg(normalize, model)
    if pr is not None:
        x = normalize_percentile(x, pr[0], pr[1], channel_axis=-1)
    return x, sdim


def run_2d(model: ModelBase, x: np.ndarray, rescale: float, *, bsize: int, tile_overlap: float,
            batch_size: int, augment: bool, progress, cancel, whole_max: int = 0,
            pad_extra: int = 8, stage: str = "network") -> tuple[np.ndarray, np.ndarray]:
    """Network outputs for ``x`` (N, H, W, C) at image resolution: (N, 3, H, W), (N, S).

    Progress is reported with ``stage`` (per tile batch for one image, per slab of a stack).
    """
    N, H, W, _ = x.shape
    ys, styles = [], []
    # resize slab by slab so a big stack never exists twice at the model's scale
    slab = max(1, int(batch_size)) * 4
    for s in range(0, N, slab):
        check_cancel(cancel)
        xs = x[s:s + slab]
        if rescale != 1.0:
            xs = resize_image(xs, scale=rescale)
        y, st = run_tiled(model.net, xs, bsize=bsize, tile_overlap=tile_overlap,
                          batch_size=batch_size, augment=augment, cancel=cancel,
                          whole_max=whole_max, pad_extra=pad_extra,
                          progress=progress if N == 1 else None, stage=stage)
        if N > 1:
            report(progress, stage, min(s + slab, N), N, "running the network on slices")
        if y.shape[-2:] != (H, W):
            y = resize_image(y, (H, W), channels_last=False)
        ys.append(y)
        styles.append(st)
    return np.concatenate(ys, 0), np.concatenate(styles, 0)
