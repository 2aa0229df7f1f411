"""From a napari layer to engine arguments: axes, channels, scale, sizes from Shapes.

Pure functions on layer-like objects (``data``, ``rgb``, ``scale``, ``ndim``, ``source``),
no Qt, so they are easy to test.  Every problem a user can cause from the UI is a
``ValueError`` with a message the widget shows as a notification; :func:`file_voxel` never
raises.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine.io.voxel import read_voxel_size

__all__ = [
    "MAX_CHANNELS",
    "Axes",
    "channel_axis_choices",
    "check_axes",
    "default_anisotropy",
    "diameter_from_shapes",
    "file_voxel",
    "guess_axes",
    "layer_kind",
    "n_channels",
    "scale_anisotropy",
    "z_axis_choices",
    "zyx_scale",
]

#: The longest axis the channel-axis picker offers (a longer one is spatial).
MAX_CHANNELS = 8


@dataclass(frozen=True)
class Axes:
    """Roles of the axes of an image layer's data (``None``: the layer has no such axis)."""

    channel_axis: int | None = None
    z_axis: int | None = None


def layer_kind(layer: Any) -> str:
    """Lower-case class name of a napari layer (``"image"``, ``"labels"``, ...)."""
    return type(layer).__name__.lower()


def guess_axes(shape: tuple, rgb: bool = False) -> Axes:
    """Default axes for data of ``shape``: a leading axis of length <= 4 holds channels.

    2D: no channel, no Z.  RGB(A): channels last.  3D: channels when the first (or last)
    axis is short, otherwise Z first.  4D: channels on the only short leading axis, Z on
    the other one; anything else is left for the user to choose (None, None).
    """
    nd = len(shape)
    if rgb:
        return Axes(channel_axis=nd - 1, z_axis=0 if nd == 4 else None)
    if nd == 2:
        return Axes()
    if nd == 3:
        if shape[0] <= 4:
            return Axes(channel_axis=0)
        if shape[-1] <= 4:
            return Axes(channel_axis=2)
        return Axes(z_axis=0)
    if nd == 4:
        short = [a for a in (0, 1) if shape[a] <= 4]
        if len(short) == 1:
            c = short[0]
            return Axes(channel_axis=c, z_axis=1 - c)
    return Axes()


def channel_axis_choices(shape: tuple, z_axis: int | None = None) -> list[tuple]:
    """``(label, axis)`` choices of the channel-axis picker: "none" and every axis short
    enough to hold channels (at most :data:`MAX_CHANNELS`), except the Z axis."""
    return [("none", None)] + [(f"{i} (size {n})", i) for i, n in enumerate(shape)
                               if n <= MAX_CHANNELS and i != z_axis]


def z_axis_choices(shape: tuple, channel_axis: int | None = None, rgb: bool = False
                   ) -> list[tuple]:
    """``(label, axis)`` choices of the Z-axis picker: "none" and every axis that is not
    the channel axis (nor the colour axis of an RGB(A) layer); a 2D image has none."""
    if len(shape) - (1 if rgb or channel_axis is not None else 0) < 3:
        return [("none", None)]
    skip = {channel_axis, len(shape) - 1 if rgb else None}
    return [("none", None)] + [(f"{i} (size {n})", i) for i, n in enumerate(shape)
                               if i not in skip]


def check_axes(shape: tuple, axes: Axes, rgb: bool = False) -> None:
    """Raise ValueError unless ``axes`` leave exactly two (YX) or three (ZYX) spatial axes
    and the channel axis is short enough to hold channels."""
    nd = len(shape)
    used = [a for a in (axes.channel_axis, axes.z_axis) if a is not None]
    for a in used:
        if not 0 <= a < nd:
            raise ValueError(f"axis {a} does not exist in data of shape {shape}")
    if len(set(used)) != len(used):
        raise ValueError("the channel axis and the Z axis must be different axes")
    c = axes.channel_axis
    if c is not None and not rgb and shape[c] > MAX_CHANNELS:
        raise ValueError(f"axis {c} has {shape[c]} entries: that is a spatial axis, not "
                         f"channels (at most {MAX_CHANNELS}); choose the axis that holds "
                         "the channels, or none")
    rest = [a for a in range(nd) if a not in used]
    if len(rest) == 2:
        return
    if len(rest) < 2:
        raise ValueError(f"image of shape {shape} has fewer than two spatial (Y, X) axes left "
                         "after removing the channel and Z axes")
    raise ValueError(
        f"the image has {nd} dimensions (shape {shape}): choose which axis holds channels "
        "and/or which is Z, so that only Y and X remain")


def n_channels(shape: tuple, axes: Axes) -> int:
    """Number of channels (1 when there is no channel axis)."""
    return 1 if axes.channel_axis is None else int(shape[axes.channel_axis])


def spatial_scale(scale: Any, axes: Axes, ndim: int, rgb: bool = False) -> list[float]:
    """Scale of the spatial axes (the channel axis removed; RGB scales have none)."""
    scale = [float(s) for s in scale]
    if axes.channel_axis is not None and not rgb and len(scale) == ndim:
        del scale[axes.channel_axis]
    return scale


def zyx_scale(scale: Any, axes: Axes, ndim: int, rgb: bool = False
              ) -> tuple[float, float, float] | None:
    """The layer's scale along Z, Y and X (None without a Z axis)."""
    if axes.z_axis is None:
        return None
    z = axes.z_axis
    if not rgb and axes.channel_axis is not None and len(scale) == ndim and axes.channel_axis < z:
        z -= 1
    sp = spatial_scale(scale, axes, ndim, rgb)
    return float(sp[z]), float(sp[-2]), float(sp[-1])


def scale_anisotropy(zyx: tuple[float, float, float] | None) -> float:
    """Z step over the mean in-plane pixel size of a ``(z, y, x)`` scale (1 without one)."""
    if zyx is None:
        return 1.0
    yx = (zyx[1] + zyx[2]) / 2.0
    return float(zyx[0] / yx) if yx > 0 else 1.0


def default_anisotropy(scale: Any, axes: Axes, ndim: int, rgb: bool = False) -> float:
    """Z step over the in-plane pixel size from the layer's scale (1 without Z)."""
    return scale_anisotropy(zyx_scale(scale, axes, ndim, rgb))


def file_voxel(layer: Any) -> tuple[float, float, float] | None:
    """The ``(z, y, x)`` voxel size (µm) the file a layer was read from states.

    The file is napari's ``layer.source.path``: an ImageJ TIFF, an OME-TIFF or an OME-Zarr
    folder (:func:`flowseg.engine.io.voxel.read_voxel_size`, which recognises a TIFF that
    is neither from its first page).

    Parameters
    ----------
    layer : napari.layers.Layer
        Any layer-like object; one without a source path gives None.

    Returns
    -------
    tuple of float or None
        The voxel size, or None (no file, or none stated).  Never raises.
    """
    try:
        path = getattr(getattr(layer, "source", None), "path", None)
        if not isinstance(path, (str, os.PathLike)):
            return None
        return read_voxel_size(path)
    except Exception:  # noqa: BLE001 - an unreadable file states no voxel size
        return None


def diameter_from_shapes(shapes_layer: Any, pixel_size: float = 1.0) -> float:
    """Mean equivalent-circle diameter of the ellipses, rectangles and polygons of a layer.

    Parameters
    ----------
    shapes_layer : napari.layers.Shapes
        Its shapes are measured in world units (the layer's scale applied).
    pixel_size : float
        World size of one image pixel (mean Y/X scale of the image layer).

    Returns
    -------
    float
        Diameter in image pixels.
    """
    data = list(getattr(shapes_layer, "data", []))
    types = list(getattr(shapes_layer, "shape_type", []))
    scale = np.asarray(shapes_layer.scale, float)[-2:]
    diams = []
    for pts, kind in zip(data, types):
        p = np.asarray(pts, float)[:, -2:] * scale
        if kind in ("ellipse", "rectangle") and len(p) == 4:
            a = np.linalg.norm(p[1] - p[0])
            b = np.linalg.norm(p[2] - p[1])
            area = np.pi * a * b / 4 if kind == "ellipse" else a * b
        elif kind == "polygon" and len(p) >= 3:
            y, x = p[:, 0], p[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
        else:
            continue
        if area > 0:
            diams.append(2 * np.sqrt(area / np.pi))
    if not diams:
        raise ValueError(f"Shapes layer {shapes_layer.name!r} has no ellipse, rectangle or "
                         "polygon to measure: draw a few circles around cells")
    if not pixel_size > 0:
        raise ValueError(f"pixel size must be > 0, got {pixel_size}")
    return float(np.mean(diams) / pixel_size)
