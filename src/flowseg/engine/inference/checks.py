"""Input validation shared by ``Model.segment``, ``estimate_diameter``, ``train``, the CLI and
the napari widget: one place that says what is wrong with an input, before any work.

Every refusal is an :class:`~flowseg.engine.errors.InputError` (a ``ValueError``) whose
message names the problem and, where it helps, the numbers:

* not an array of real numbers (object, text, complex dtypes; ragged lists);
* too few or too many axes, an axis of length 0 (empty);
* channel / Z axes out of range or the same axis; channel indices that do not exist;
* NaN or infinite values (how many), values beyond the float32 range;
* diameters that are not finite, <= 0, larger than the image, or so small the image would
  grow beyond :data:`MAX_WORK_PIXELS`; anisotropy; mask thresholds
  (:class:`~flowseg.engine.flows.params.MaskParams`);
* an in-memory run that needs more memory than is free now
  (:class:`~flowseg.engine.errors.NotEnoughMemoryError`, from
  :func:`flowseg.engine.memory.estimate_segment_memory`).

A *constant* image (every selected channel one value, e.g. all zero) or one less than 2
pixels wide is not an error for segmentation -- it holds no cell, and ``Model.segment``
returns an empty result -- but :meth:`ImageInfo.nothing_to_segment` lets callers say why,
and :func:`check_estimate_input` refuses it (there is no size to measure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..errors import InputError, NotEnoughMemoryError
from ..flows.params import MaskParams
from ..memory import MemoryEstimate, estimate_segment_memory
from .prepare import check_diameter as _check_diameter_value
from .prepare import spatial_ndim
from .transforms import to_channels_last

__all__ = ["MAX_WORK_PIXELS", "ImageInfo", "check_array", "check_diameter",
           "check_estimate_input", "check_image", "check_mask_params", "check_memory",
           "check_segment_input"]

#: Pixels (voxels) an image may have once resized to the model's object size.
MAX_WORK_PIXELS = 1 << 28
_F32_MAX = float(np.finfo(np.float32).max)
_CHUNK = 1 << 22  # elements per pass of the value checks (bounded temporary memory)


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`check_image` found out about a valid image.

    Attributes
    ----------
    array : np.ndarray
        The image as a numpy array (read once: a dask / zarr input is not read again).
    spatial_ndim : int
        2 or 3.
    spatial_shape : tuple of int
        ``(Y, X)`` or ``(Z, Y, X)``.
    n_channels : int
        Length of the channel axis (1 without one).
    channels : (int or None, int or None)
        The ``(cyto, nucleus)`` channels used (``cyto=None``: mean of the first three).
    constant : dict
        ``{role: value}`` of the selected channels that hold one value only (``role``:
        ``"cytoplasm"`` / ``"nucleus"``).
    """

    array: np.ndarray
    spatial_ndim: int
    spatial_shape: tuple
    n_channels: int
    channels: tuple
    constant_channels: dict = field(default_factory=dict)

    @property
    def too_small(self) -> bool:
        """Whether Y or X is shorter than 2 pixels: no cell fits (an empty result)."""
        return min(self.spatial_shape[-2:]) < 2

    def nothing_to_segment(self, names: Optional[Sequence[str]] = None) -> str:
        """Why the image cannot hold a cell (too small, constant), or ``""``."""
        if self.too_small:
            return (f"the image is only {' x '.join(map(str, self.spatial_shape))} pixels "
                    "(too small to hold a cell)")
        return self.constant_message(names) if self.constant else ""

    @property
    def constant(self) -> bool:
        """Whether every selected channel is constant (nothing to segment)."""
        used = 1 + (self.channels[1] is not None)
        return len(self.constant_channels) >= used

    def constant_message(self, names: Optional[Sequence[str]] = None) -> str:
        """``"the cytoplasm channel (red) is all 0"`` for the constant selected channels
        (``names``: display names of the channels, e.g. ``("red", "green", "blue")``)."""
        parts = []
        for role, value in self.constant_channels.items():
            idx = self.channels[0] if role == "cytoplasm" else self.channels[1]
            if self.n_channels == 1:
                what = "the image"
            elif idx is None:
                what = f"the {role} channel (mean of channels)"
            else:
                label = names[idx] if names is not None and idx < len(names) else str(idx)
                what = f"the {role} channel ({label})"
            parts.append(f"{what} is all {value:g}")
        return "; ".join(parts)


def check_array(image: Any, what: str = "image") -> np.ndarray:
    """``image`` as a numpy array of real numbers (bool included); InputError otherwise."""
    try:
        arr = np.asarray(image)
    except (ValueError, TypeError) as exc:  # ragged nested lists, odd objects
        raise InputError(f"{what} is not an array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{what} must be real-valued, got a complex array")
    return arr


def _selected(x: np.ndarray, channels: Optional[Sequence], nchan: int) -> tuple[tuple, dict]:
    """Resolved ``(cyto, nucleus)`` and ``{role: channel views}`` of channels-last ``x``."""
    C = x.shape[-1]
    if channels is None:
        channels = {1: (0, None), 2: (0, 1)}.get(C, (None, None))
        if C > 4:
            raise InputError(f"image has {C} channels: pass channels=(cyto, nucleus) "
                             "(0-based indices)")
    try:
        pair = None if isinstance(channels, (str, bytes)) else list(channels)
    except TypeError:
        pair = None
    if pair is None or len(pair) != 2:
        raise InputError(f"channels must be (cyto, nucleus) 0-based indices, got {channels!r}")
    cyto, nuc = pair
    for role, v in (("cytoplasm", cyto), ("nucleus", nuc)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                              or not 0 <= int(v) < C):
            raise InputError(f"{role} channel {v!r} does not exist: the image has {C} "
                             f"channel(s), numbered 0 to {C - 1}")
    cyto = None if cyto is None else int(cyto)
    nuc = None if (nuc is None or nchan < 2) else int(nuc)
    views = {"cytoplasm": [x[..., c] for c in ([cyto] if cyto is not None else
                                               range(min(C, 3)))]}
    if nuc is not None:
        views["nucleus"] = [x[..., nuc]]
    return (cyto, nuc), views


def _chunks(v: np.ndarray):
    step = max(1, _CHUNK // max(1, int(np.prod(v.shape[1:]))))
    for s in range(0, v.shape[0], step):
        yield v[s:s + step]


def _check_values(views: dict) -> dict:
    """Refuse NaN / Inf / beyond-float32 values; return ``{role: value}`` of constant roles."""
    nan = inf = big = 0
    constant = {}
    for role, vs in views.items():
        lo = hi = None
        for v in vs:
            for c in _chunks(v):
                if c.dtype.kind == "f":
                    finite = np.isfinite(c)
                    n_bad = c.size - int(np.count_nonzero(finite))
                    if n_bad:
                        n_nan = int(np.count_nonzero(np.isnan(c)))
                        nan, inf = nan + n_nan, inf + n_bad - n_nan
                        continue
                    if c.dtype.itemsize > 4:
                        big += int(np.count_nonzero(np.abs(c) > _F32_MAX))
                if c.size:
                    cmin, cmax = c.min(), c.max()
                    lo = cmin if lo is None else min(lo, cmin)
                    hi = cmax if hi is None else max(hi, cmax)
        if lo is not None and lo == hi and not (nan or inf):
            constant[role] = float(lo)
    if nan or inf:
        what = " and ".join(f"{n:,} {k}" for n, k in ((nan, "NaN"), (inf, "infinite"))
                            if n)
        raise InputError(f"image contains {what} value(s) in the selected channels; replace "
                         "them (e.g. numpy.nan_to_num) before segmenting")
    if big:
        raise InputError(f"image holds {big:,} value(s) beyond the float32 range "
                         f"(|v| > {_F32_MAX:.3g}); rescale it before segmenting")
    return constant


def check_image(image: Any, *, channels: Optional[Sequence] = None,
                channel_axis: Optional[int] = None, z_axis: Optional[int] = None,
                do_3d: bool = False, stitch_threshold: float = 0.0, nchan: int = 2,
                spatial: Optional[int] = None) -> ImageInfo:
    """Check an image and its axis / channel settings as ``Model.segment`` reads them.

    Parameters
    ----------
    image : array-like
        The image (numpy, dask, zarr, nested lists).
    channels, channel_axis, z_axis, do_3d, stitch_threshold
        As in :meth:`flowseg.Model.segment`.
    nchan : int
        Input channels of the model's network (a nucleus channel is ignored with 1).
    spatial : int, optional
        Spatial axes (2 or 3) when the caller knows them (e.g. from labels); by default
        decided as ``Model.segment`` does.

    Returns
    -------
    ImageInfo

    Raises
    ------
    InputError
        With a message naming the problem (see the module docstring).
    """
    arr = check_array(image)
    for name, ax in (("channel_axis", channel_axis), ("z_axis", z_axis)):
        if ax is not None and (isinstance(ax, bool) or not isinstance(ax, (int, np.integer))
                               or not -arr.ndim <= int(ax) < max(arr.ndim, 1)):
            raise InputError(f"{name}={ax!r} is not an axis of the image of shape {arr.shape}")
    if channel_axis is not None and z_axis is not None and \
            int(channel_axis) % arr.ndim == int(z_axis) % arr.ndim:
        raise InputError(f"the channel axis and the Z axis must be different axes, both are "
                         f"{int(channel_axis) % arr.ndim} (image of shape {arr.shape})")
    try:
        sdim = spatial_ndim(arr, channel_axis, z_axis, do_3d, float(stitch_threshold)) \
            if spatial is None else int(spatial)
        x = to_channels_last(arr, sdim, channel_axis, z_axis)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from None
    spatial = tuple(int(n) for n in x.shape[:-1])
    if x.size == 0:
        raise InputError(f"image is empty (shape {arr.shape})")
    chans, views = _selected(x, channels, int(nchan))
    constant = _check_values(views)
    return ImageInfo(array=arr, spatial_ndim=sdim, spatial_shape=spatial,
                     n_channels=int(x.shape[-1]), channels=chans, constant_channels=constant)


def check_diameter(diameter: Any, spatial_shape: Optional[Sequence[int]] = None
                   ) -> Optional[float]:
    """A diameter in pixels: None, or a finite number > 0 not larger than the image."""
    d = _check_diameter_value(diameter)
    if d is None:
        return None
    if spatial_shape is not None and d > max(spatial_shape[-2:]):
        size = " x ".join(map(str, spatial_shape[-2:]))
        raise InputError(f"diameter {d:g} px is larger than the image ({size} px): give the "
                         "cell diameter in pixels of this image")
    return d


def check_work_size(spatial_shape: Sequence[int], diameter: float, diam_mean: float,
                    z_zoom: float = 1.0) -> None:
    """Refuse a diameter below 1 pixel, or one that would blow the image up beyond
    :data:`MAX_WORK_PIXELS` at the model's object size (``z_zoom``: the z zoom of a 3D
    run)."""
    rescale = diam_mean / diameter
    # in logs: an absurd diameter (1e-300) must not overflow the arithmetic
    log_n = math.log(max(1, math.prod(spatial_shape[-2:]))) + 2 * math.log(rescale)
    if len(spatial_shape) == 3:
        log_n += math.log(max(1, spatial_shape[0])) + math.log(max(z_zoom, 1e-300))
    if diameter < 1.0 or log_n > math.log(MAX_WORK_PIXELS):
        size = f"{math.exp(log_n) / 1e6:.0f} M pixels" if log_n < 700 else "beyond any memory"
        raise InputError(f"diameter={diameter:g} would resize the image by {rescale:.3g}x (to "
                         f"{size}) to reach the model's {diam_mean:g}-pixel objects; check "
                         "the diameter (it is in pixels of this image, at least 1)")


def check_mask_params(**values: Any) -> MaskParams:
    """:class:`MaskParams` from keyword values; InputError naming a value out of range."""
    try:
        return MaskParams(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from None


def check_memory(model: Any, shape: Sequence[int], **kwargs: Any) -> MemoryEstimate:
    """The memory estimate of an in-memory run; NotEnoughMemoryError when it does not fit.

    ``kwargs`` are those of :func:`flowseg.engine.memory.estimate_segment_memory`.
    """
    est = estimate_segment_memory(model, shape, **kwargs)
    if not est.fits:
        raise NotEnoughMemoryError(
            f"not enough free memory: {est.message()}. Segment it block by block "
            "(flowseg.segment_blocks, or `flowseg segment --block-size 1024`), free some "
            "memory, or pass check_memory=False to try anyway")
    return est


def check_segment_input(model: Any, image: Any, *, channels: Optional[Sequence] = None,
                        channel_axis: Optional[int] = None, z_axis: Optional[int] = None,
                        diameter: Any = None, do_3d: bool = False, anisotropy: Any = None,
                        batch_size: int = 8, augment: bool = False, memory: bool = True,
                        **mask: Any) -> ImageInfo:
    """Every check of a ``Model.segment`` call, before any work.

    ``mask`` holds the mask parameters (``cellprob_threshold``, ..., ``stitch_threshold``);
    ``memory`` adds the free-memory check.  Returns the :class:`ImageInfo` of the image.
    """
    params = check_mask_params(**mask)
    if do_3d and params.stitch_threshold > 0:
        raise InputError("use either do_3d=True or stitch_threshold > 0, not both")
    if anisotropy is not None:
        try:
            a = float(anisotropy)
        except (TypeError, ValueError):
            a = float("nan")
        if not (math.isfinite(a) and a > 0):
            raise InputError(f"anisotropy must be a finite number > 0, got {anisotropy!r}")
    if not isinstance(batch_size, (int, np.integer)) or int(batch_size) < 1:
        raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    info = check_image(image, channels=channels, channel_axis=channel_axis, z_axis=z_axis,
                       do_3d=do_3d, stitch_threshold=params.stitch_threshold,
                       nchan=int(getattr(model, "nchan", 2)))
    empty = bool(info.nothing_to_segment())  # no cell: the result is empty at any size
    d = check_diameter(diameter, None if empty else info.spatial_shape)
    if d is not None:
        zf = float(anisotropy or 1.0) * model.diam_mean / d \
            if (info.spatial_ndim == 3 and do_3d) else 1.0
        check_work_size(info.spatial_shape, d, model.diam_mean, zf)
    if memory and not empty:
        check_memory(model, info.array.shape, channel_axis=channel_axis, z_axis=z_axis,
                     do_3d=do_3d, stitch_threshold=params.stitch_threshold, diameter=d,
                     anisotropy=anisotropy, batch_size=int(batch_size), augment=augment)
    return info


def check_estimate_input(model: Any, image: Any, *, channels: Optional[Sequence] = None,
                         channel_axis: Optional[int] = None) -> ImageInfo:
    """The checks of a diameter estimate: those of :func:`check_image`, and a constant image
    is refused (there is no object whose size could be measured)."""
    info = check_image(image, channels=channels, channel_axis=channel_axis,
                       nchan=int(getattr(model, "nchan", 2)))
    why = info.nothing_to_segment()
    if why:
        raise InputError(f"cannot estimate the cell diameter: {why} (no cells to measure)")
    return info
