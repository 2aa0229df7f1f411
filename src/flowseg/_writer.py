"""napari writers: label images (tif/png), Cellpose ``_seg.npy``, ImageJ ROI sets.

A layer a writer cannot write (3D labels as PNG, float labels, ...) raises
:class:`LabelWriteError` with our message.  It is an ``OSError``, not a ``ValueError``:
napari turns a writer's ``ValueError`` into its generic "not a valid writer" warning and
the user would never see why.  Files are written atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["LabelWriteError", "write_label_image", "write_roi_zip", "write_seg_npy"]


class LabelWriteError(OSError):
    """A layer cannot be written in the chosen format; the message says why."""


@contextlib.contextmanager
def _our_message() -> Iterator[None]:
    """Our ValueErrors (bad labels, wrong format) as :class:`LabelWriteError`."""
    try:
        yield
    except ValueError as exc:
        raise LabelWriteError(str(exc)) from None


def _labels(data: Any, what: str = "labels") -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "iub" or arr.ndim not in (2, 3):
        raise LabelWriteError(f"{what} must be a 2D or 3D integer array, got {arr.dtype} "
                              f"{arr.shape}")
    if arr.size and arr.min() < 0:
        raise LabelWriteError(f"{what} hold negative values; cannot write them as a label "
                              "image")
    return arr


def write_label_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as ``.tif`` (uint16/uint32, zlib) or ``.png`` (uint16, 2D)."""
    from .engine.io.images import write_labels

    arr = _labels(data)
    low = path.lower()
    if low.endswith(".png"):
        if arr.ndim != 2:
            raise LabelWriteError(f"PNG holds 2D label images only; these labels are "
                                  f"{arr.ndim}D (shape {arr.shape}): save them as .tif")
        fmt = "png"
    else:
        if not low.endswith((".tif", ".tiff")):
            path += ".tif"
        fmt = None if low.endswith(".tiff") else "tif"
    with _our_message():
        out = write_labels(path, arr, fmt)
    return [os.fspath(out)]


def write_seg_npy(path: str, layer_data: list) -> list[str]:
    """Write one Labels layer (and optionally one Image layer) as a Cellpose ``_seg.npy``."""
    from .engine.io.segfile import write_seg

    labels = [d for d, m, t in layer_data if t == "labels"]
    images = [(d, m) for d, m, t in layer_data if t == "image"]
    if len(labels) != 1:
        raise LabelWriteError(f"select exactly one Labels layer to write a _seg.npy (got "
                              f"{len(labels)})")
    masks = _labels(labels[0], "masks")
    meta = next(m for d, m, t in layer_data if t == "labels")
    params = ((meta.get("metadata") or {}).get("flowseg") or {}).get("params") or {}
    image = None
    if images:
        image = np.asarray(images[0][0])
    diameter = float(params.get("diameter_used") or params.get("diameter") or 30.0)
    chans = params.get("channels") or [None, None]
    cp_channels = [0 if c is None else int(c) + 1 for c in chans][:2]
    name = os.path.basename(path)
    if name.lower().endswith("_seg.npy"):
        name = name[: -len("_seg.npy")]
    with _our_message():
        out = write_seg(path, masks, diameter=diameter, channels=cp_channels, filename=name,
                        image=image)
    return [out]


def write_roi_zip(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as an ImageJ ROI set (``.zip`` of polygons, per plane in 3D)."""
    from .engine.io.segfile import write_imagej_rois

    arr = _labels(data)
    with _our_message():
        return [write_imagej_rois(path, arr)]
