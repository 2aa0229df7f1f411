"""Image preparation: axis and channel selection, percentile normalisation, resizing.

Channel convention (used by :meth:`flowseg.Model.segment`, the CLI and the widget)
------------------------------------------------------------------------------
``channels=(cyto, nucleus)`` are **0-based indices into the channel axis**; ``nucleus`` may be
``None`` (no nuclear channel: the network gets zeros there).  ``channels=None`` means:

* one channel (or no channel axis): that channel is the cytoplasm, no nucleus;
* two channels: ``(0, 1)``, cytoplasm then nucleus;
* three or four channels (RGB / RGBA): the mean of the first three channels as a grayscale
  cytoplasm image, no nucleus (alpha is ignored);
* more channels: ambiguous, a :class:`ValueError` asks for ``channels``.

Cellpose's own 1-based convention ``[chan, chan2]`` (0 = grayscale, 1 = red, 2 = green,
3 = blue) can be converted with :func:`from_cellpose_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "normalize_percentile",
    "resize_image",
    "find_channel_axis",
    "to_channels_last",
    "prepare_channels",
    "from_cellpose_channels",
    "channel_percentiles",
]

_MAX_PERCENTILE_SAMPLES = 1 << 22


def channel_percentiles(x: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """``lo``/``hi`` percentiles of ``x``, on a regular subsample when ``x`` is huge."""
    flat = x.reshape(-1)
    if flat.size > _MAX_PERCENTILE_SAMPLES:
        flat = flat[:: int(np.ceil(flat.size / _MAX_PERCENTILE_SAMPLES))]
    p = np.percentile(flat, [lo, hi])
    return float(p[0]), float(p[1])


def normalize_percentile(img: np.ndarray, lo: float = 1.0, hi: float = 99.0,
                         channel_axis: Optional[int] = -1) -> np.ndarray:
    """Map the ``lo`` percentile to 0 and the ``hi`` percentile to 1, per channel.

    Parameters
    ----------
    img : np.ndarray
        Image; channels along ``channel_axis`` (``None``: one channel, whole array).
    lo, hi : float
        Percentiles, ``0 <= lo < hi <= 100``.
    channel_axis : int or None
        Axis holding channels.

    Returns
    -------
    np.ndarray
        float32 copy.  A channel whose percentile range is below 1e-3 (constant, empty)
        becomes all zeros instead of being blown up.
    """
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo < hi <= 100.0):
        raise ValueError(f"normalisation percentiles must satisfy 0 <= lo < hi <= 100, "
                         f"got ({lo}, {hi})")
    out = np.array(img, dtype=np.float32, copy=True)
    if out.size == 0:
        return out
    if channel_axis is None:
        views = [out]
    else:
        out_m = np.moveaxis(out, channel_axis, -1)
        views = [out_m[..., c] for c in range(out_m.shape[-1])]
    for v in views:
        p_lo, p_hi = channel_percentiles(v, lo, hi)
        if p_hi - p_lo > 1e-3:
            v -= p_lo
            v *= 1.0 / (p_hi - p_lo)
        else:
            v[...] = 0.0
    return out


def resize_image(img: np.ndarray, shape: Optional[Sequence[int]] = None,
                 scale: Optional[float | Sequence[float]] = None, *,
                 channels_last: bool = True) -> np.ndarray:
    """Bilinearly resize the two spatial axes of an image or a stack of images.

    Parameters
    ----------
    img : np.ndarray
        ``(*lead, H, W, C)`` if ``channels_last`` else ``(*lead, H, W)``.
    shape : (int, int), optional
        New ``(H, W)``.
    scale : float or (float, float), optional
        Zoom factor(s), used when ``shape`` is not given; the new size is
        ``int(H * sy), int(W * sx)`` (at least 1).
    channels_last : bool
        Whether the last axis holds channels.

    Returns
    -------
    np.ndarray
        float32, same layout; pixel-centre aligned bilinear interpolation (as OpenCV's
        ``INTER_LINEAR``).
    """
    x = np.asarray(img)
    sp = (x.ndim - 3, x.ndim - 2) if channels_last else (x.ndim - 2, x.ndim - 1)
    if min(sp) < 0:
        raise ValueError(f"resize_image needs at least 2 spatial axes, got shape {x.shape}")
    H, W = x.shape[sp[0]], x.shape[sp[1]]
    if shape is None:
        if scale is None:
            raise ValueError("resize_image needs shape or scale")
        sy, sx = (scale, scale) if np.isscalar(scale) else tuple(scale)
        if not (sy > 0 and sx > 0):
            raise ValueError(f"resize scale must be positive, got {scale}")
        shape = (max(1, int(H * sy)), max(1, int(W * sx)))
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise ValueError(f"resize target shape must be positive, got {shape}")
    if shape == (H, W):
        return x.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if channels_last:
        lead, C = x.shape[:-3], x.shape[-1]
        t = t.reshape(-1, H, W, C).permute(0, 3, 1, 2)
    else:
        lead, C = x.shape[:-2], None
        t = t.reshape(-1, 1, H, W)
    outs = []
    chunk = max(1, (1 << 26) // max(1, t.shape[1] * shape[0] * shape[1]))
    with torch.inference_mode():
        for i in range(0, t.shape[0], chunk):
            outs.append(F.interpolate(t[i:i + chunk], size=shape, mode="bilinear",
                                      align_corners=False))
    r = torch.cat(outs, 0)
    if channels_last:
        r = r.permute(0, 2, 3, 1).reshape(*lead, *shape, C)
    else:
        r = r.reshape(*lead, *shape)
    return np.ascontiguousarray(r.numpy())


def find_channel_axis(shape: Sequence[int], spatial_ndim: int) -> Optional[int]:
    """Guess the channel axis of an image with ``spatial_ndim`` spatial axes.

    ``None`` when the image has exactly ``spatial_ndim`` axes; otherwise a last (preferred)
    or first axis of length <= 4.  Raises :class:`ValueError` if it cannot tell.
    """
    nd = len(shape)
    if nd == spatial_ndim:
        return None
    if nd != spatial_ndim + 1:
        raise ValueError(f"image of shape {tuple(shape)} has {nd} axes; expected {spatial_ndim} "
                         f"spatial axes plus at most one channel axis")
    if shape[-1] <= 4:
        return nd - 1
    if shape[0] <= 4:
        return 0
    raise ValueError(f"cannot tell which axis of the image of shape {tuple(shape)} holds the "
                     "channels (no first/last axis of length <= 4): pass channel_axis")


def to_channels_last(image: np.ndarray, spatial_ndim: int, channel_axis: Optional[int] = None,
                     z_axis: Optional[int] = None) -> np.ndarray:
    """Reorder an image to ``(Z, Y, X, C)`` (3D) or ``(Y, X, C)`` (2D); a view when possible.

    Parameters
    ----------
    image : np.ndarray
    spatial_ndim : int
        2 or 3.
    channel_axis : int, optional
        Channel axis; auto-detected (see :func:`find_channel_axis`) when None.
    z_axis : int, optional
        Z axis for 3D images; defaults to the first non-channel axis.
    """
    x = np.asarray(image)
    nd = x.ndim
    if nd < spatial_ndim:
        raise ValueError(f"image of shape {x.shape} has fewer than {spatial_ndim} axes")
    if channel_axis is None:
        channel_axis = find_channel_axis(x.shape, spatial_ndim)
    else:
        if not -nd <= int(channel_axis) < nd:
            raise ValueError(f"channel_axis={channel_axis} is out of range for an image with "
                             f"{nd} axes (shape {x.shape})")
        channel_axis = int(channel_axis) % nd
        if nd != spatial_ndim + 1:
            raise ValueError(f"image of shape {x.shape} with channel_axis={channel_axis} has "
                             f"{nd - 1} non-channel axes; expected {spatial_ndim}")
    if channel_axis is None:
        x = x[..., None]
        channel_axis = nd
        nd += 1
    rest = [a for a in range(nd) if a != channel_axis]
    if spatial_ndim == 3:
        if z_axis is not None:
            if not -nd <= int(z_axis) < nd or int(z_axis) % nd == channel_axis:
                raise ValueError(f"z_axis={z_axis} is not a spatial axis of the image of shape "
                                 f"{np.asarray(image).shape} (channel axis {channel_axis})")
            z = int(z_axis) % nd
            rest = [z] + [a for a in rest if a != z]
    elif z_axis is not None:
        raise ValueError("z_axis given for a 2D image; pass do_3d=True or a stack")
    return np.transpose(x, rest + [channel_axis])


def from_cellpose_channels(channels: Sequence[int], nchannels: int
                           ) -> tuple[Optional[int], Optional[int]]:
    """Convert Cellpose ``[chan, chan2]`` (1-based, 0 = grayscale/none) to our 0-based pair.

    Returns ``(cyto, nucleus)`` where ``cyto=None`` means "mean of all channels".
    """
    if len(channels) != 2:
        raise ValueError(f"Cellpose channels must be [chan, chan2], got {channels}")
    c, n = int(channels[0]), int(channels[1])
    for v in (c, n):
        if not 0 <= v <= max(nchannels, 1):
            raise ValueError(f"Cellpose channel {v} out of range for {nchannels} channels")
    return (None if c == 0 else c - 1), (None if n == 0 else n - 1)


def prepare_channels(image: np.ndarray, channels: Optional[Sequence[Optional[int]]] = None,
                     channel_axis: Optional[int] = None, *, nchan: int = 2,
                     spatial_ndim: int = 2, z_axis: Optional[int] = None) -> np.ndarray:
    """Select the cytoplasm (+ nucleus) channels of an image as float32 ``(..., nchan)``.

    Parameters
    ----------
    image : np.ndarray
        Grayscale, 2-channel, RGB/RGBA or N-channel image (2D or 3D).
    channels : (int, int or None), optional
        0-based ``(cyto, nucleus)`` indices into the channel axis; ``cyto=None`` means the
        mean of the (first three) channels.  See the module docstring for the default.
    channel_axis : int, optional
        Channel axis (auto-detected when None).
    nchan : int
        Network input channels (2: cytoplasm + nucleus, zeros if none; 1: cytoplasm only).
    spatial_ndim : int
        2 or 3.
    z_axis : int, optional
        Z axis of a 3D image.

    Returns
    -------
    np.ndarray
        float32 ``(Y, X, nchan)`` or ``(Z, Y, X, nchan)``.
    """
    x = to_channels_last(image, spatial_ndim, channel_axis, z_axis)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"image dtype {x.dtype} is not numeric")
    C = x.shape[-1]
    if channels is None:
        if C == 1:
            channels = (0, None)
        elif C == 2:
            channels = (0, 1)
        elif C in (3, 4):
            channels = (None, None)
        else:
            raise ValueError(f"image has {C} channels: pass channels=(cyto, nucleus) (0-based)")
    if len(channels) != 2:
        raise ValueError(f"channels must be (cyto, nucleus), got {channels!r}")
    cyto, nuc = channels
    for name, v in (("cyto", cyto), ("nucleus", nuc)):
        if v is not None and not (isinstance(v, (int, np.integer)) and 0 <= int(v) < C):
            raise ValueError(f"{name} channel {v!r} is not a valid 0-based index for an image "
                             f"with {C} channel(s)")
    out = np.zeros(x.shape[:-1] + (nchan,), np.float32)
    if cyto is None:
        out[..., 0] = x[..., : min(C, 3)].mean(axis=-1, dtype=np.float32)
    else:
        out[..., 0] = x[..., int(cyto)]
    if nchan > 1 and nuc is not None:
        out[..., 1] = x[..., int(nuc)]
    return out
