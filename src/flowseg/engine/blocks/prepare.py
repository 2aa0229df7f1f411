"""What every block must share: one normalisation and one object diameter for the image.

:meth:`flowseg.Model.segment` normalises each channel to its 1st..99th percentiles over the
whole image; blocks normalised on their own would disagree where their content differs, so
the percentiles are measured once for the image (:func:`image_percentiles`, the same
computation as the in-memory path for images up to 16 M pixels, evenly spread sample windows
beyond) and each block is mapped with them (:func:`normalize_block`).  The diameter, when
not given, is estimated once on a central crop (:func:`estimate_central_diameter`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..inference.model import Model
from ..inference.prepare import normalize_arg
from ..inference.size import can_estimate, estimate_diameter_prepared
from ..inference.transforms import channel_percentiles, prepare_channels
from ..progress import CancelToken, ProgressCallback, check_cancel
from .plan import BlockPlan
from .source import Source

__all__ = [
    "WHOLE_SAMPLE_PIXELS",
    "blocks_in_mask",
    "estimate_central_diameter",
    "image_percentiles",
    "normalize_block",
    "prepare_block",
    "sample_windows",
]

#: Images up to this many pixels are read whole to measure the percentiles (exactly what
#: the in-memory path computes); bigger ones are sampled in windows totalling about this.
WHOLE_SAMPLE_PIXELS = 1 << 24
_CENTRAL_CROP = 1024


def prepare_block(region: np.ndarray, spatial_ndim: int, has_channels: bool, nchan: int,
                  channels: Sequence[int | None] | None) -> np.ndarray:
    """Select the network's channels of a canonical region: float32 ``(..., nchan)``."""
    return prepare_channels(region, channels, -1 if has_channels else None, nchan=nchan,
                            spatial_ndim=spatial_ndim, z_axis=0 if spatial_ndim == 3 else None)


def sample_windows(shape: Sequence[int], budget: int = WHOLE_SAMPLE_PIXELS
                   ) -> list[tuple[slice, ...]]:
    """Regions to sample the intensity distribution of an image of spatial ``shape``.

    The whole image when it has at most ``budget`` pixels; otherwise a regular grid of
    4 x 4 (x 4) equal windows spread evenly over the image, about ``budget`` pixels in all.
    """
    shape = tuple(int(s) for s in shape)
    total = math.prod(shape)
    if total <= budget:
        return [tuple(slice(0, s) for s in shape)]
    nd = len(shape)
    k = 4  # windows per axis
    w = max(16, int((budget / k ** nd) ** (1.0 / nd)))
    starts = [np.unique(np.linspace(0, max(0, s - w), k).astype(int)) for s in shape]
    return [tuple(slice(int(a), min(s, int(a) + w)) for a, s in zip(st, shape))
            for st in itertools.product(*starts)]


def image_percentiles(source: Source, nchan: int, channels: Sequence[int | None] | None,
                      lo: float, hi: float, *, cancel: CancelToken = None) -> np.ndarray:
    """``(nchan, 2)`` float64: the ``lo`` / ``hi`` percentiles of each network channel."""
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo < hi <= 100.0):
        raise ValueError(f"normalisation percentiles must satisfy 0 <= lo < hi <= 100, "
                         f"got ({lo}, {hi})")
    lay = source.layout
    parts = []
    for win in sample_windows(lay.spatial_shape):
        check_cancel(cancel)
        x = prepare_block(source.read(win), lay.ndim, lay.channel_axis is not None, nchan,
                          channels)
        parts.append(x.reshape(-1, nchan))
    flat = parts[0] if len(parts) == 1 else np.concatenate(parts, 0)
    if not np.isfinite(flat).all():
        raise ValueError(f"{source.name}: image contains NaN or infinite values in the "
                         "selected channels; replace them before segmenting")
    return np.array([channel_percentiles(flat[:, c], lo, hi) for c in range(nchan)], np.float64)


def normalize_block(x: np.ndarray, lohi: np.ndarray | None) -> np.ndarray:
    """Map each channel's low percentile to 0 and high to 1 (in place; zeros when flat).

    The same arithmetic as :func:`flowseg.engine.inference.transforms.normalize_percentile`, with
    percentiles measured on the whole image.
    """
    if lohi is None:
        return x
    for c in range(x.shape[-1]):
        p_lo, p_hi = float(lohi[c, 0]), float(lohi[c, 1])
        v = x[..., c]
        if p_hi - p_lo > 1e-3:
            v -= p_lo
            v *= 1.0 / (p_hi - p_lo)
        else:
            v[...] = 0.0
    return x


def central_crop(shape: Sequence[int], size: int = _CENTRAL_CROP) -> tuple[slice, ...]:
    """The middle slice (3D) and a central ``size`` x ``size`` crop of an image."""
    out = []
    nd = len(shape)
    for k, s in enumerate(shape):
        if nd == 3 and k == 0:
            out.append(slice(s // 2, s // 2 + 1))
        else:
            w = min(int(s), size)
            a = (int(s) - w) // 2
            out.append(slice(a, a + w))
    return tuple(out)


def estimate_central_diameter(model: Model, source: Source,
                              channels: Sequence[int | None] | None,
                              lohi: np.ndarray | None, *, batch_size: int = 8,
                              progress: ProgressCallback | None = None,
                              cancel: CancelToken = None) -> tuple[float, str]:
    """Object diameter from a central crop (middle slice for 3D), as the in-memory path does.

    Returns ``(diameter, how)``; without a size model (nor a fine-tuned model's training
    diameter to start from) the model's ``diam_mean``.
    """
    if not can_estimate(model):
        return model.diam_mean, "model diam_mean (no size model; pass diameter to resize)"

    lay = source.layout
    win = central_crop(lay.spatial_shape)
    x = prepare_block(source.read(win), lay.ndim, lay.channel_axis is not None, model.nchan,
                      channels)
    x = normalize_block(x, lohi)
    if lay.ndim == 3:
        x = x[0]
    if np.all(x.reshape(-1, x.shape[-1]).max(0) == x.reshape(-1, x.shape[-1]).min(0)):
        raise ValueError(f"{source.name}: the central crop used to estimate the diameter is "
                         "empty; pass diameter")
    d = estimate_diameter_prepared(model, x, batch_size=batch_size, progress=progress,
                                   cancel=cancel)
    return float(d), f"estimated on a central {'x'.join(str(s.stop - s.start) for s in win)} crop"


def lohi_for(normalize: Any, model: Model) -> tuple[float, float] | None:
    """The percentile pair ``normalize`` asks for (None: no normalisation)."""
    return normalize_arg(normalize, model)


def blocks_in_mask(mask: Any, plan: BlockPlan) -> dict[tuple[int, ...], bool]:
    """Which blocks to segment: those whose padded region holds foreground in ``mask``.

    ``mask`` (numpy, dask or zarr; non-zero = foreground) has the image's spatial axes at
    the same or a lower resolution (e.g. a tissue mask of a whole slide); None keeps all.
    """
    if mask is None:
        return {b.index: True for b in plan}
    mshape = tuple(int(s) for s in mask.shape)
    if len(mshape) != len(plan.shape) or any(m > s or m < 1
                                             for m, s in zip(mshape, plan.shape)):
        raise ValueError(f"mask of shape {mshape} does not fit the image's spatial shape "
                         f"{plan.shape} (same axes, same or lower resolution)")
    f = [m / s for m, s in zip(mshape, plan.shape)]
    out = {}
    for b in plan:
        idx = tuple(slice(math.floor(p.start * k), max(math.ceil(p.stop * k),
                                                            math.floor(p.start * k) + 1))
                    for p, k in zip(b.padded, f))
        out[b.index] = bool(np.any(np.asarray(mask[idx])))
    return out
