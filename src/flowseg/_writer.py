"""napari writers: label images (tif/png), Cellpose ``_seg.npy``, ImageJ ROI sets."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["write_label_image", "write_seg_npy", "write_roi_zip"]


def _labels(data: Any, what: str = "labels") -> np.ndarray:
    arr = np.asarray(data)
    if arr.dtype.kind not in "iub" or arr.ndim not in (2, 3):
        raise ValueError(f"{what} must be a 2D or 3D integer array, got {arr.dtype} {arr.shape}")
    if arr.min(initial=0) < 0:
        raise ValueError(f"{what} hold negative values; cannot write them as a label image")
    return arr


def write_label_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as ``.tif`` (uint16/uint32, zlib) or ``.png`` (uint16, 2D)."""
    arr = _labels(data)
    nmax = int(arr.max(initial=0))
    low = path.lower()
    if low.endswith(".png"):
        if arr.ndim != 2:
            raise ValueError(f"PNG holds 2D label images only; these labels are {arr.ndim}D "
                             "(save as .tif)")
        if nmax > 65535:
            raise ValueError(f"{nmax} labels do not fit a 16-bit PNG; save as .tif")
        from skimage.io import imsave

        imsave(path, arr.astype(np.uint16), check_contrast=False)
    else:
        import tifffile

        if not low.endswith((".tif", ".tiff")):
            path += ".tif"
        dtype = np.uint16 if nmax <= 65535 else np.uint32
        tifffile.imwrite(path, arr.astype(dtype), compression="zlib")
    return [path]


def write_seg_npy(path: str, layer_data: list) -> list[str]:
    """Write one Labels layer (and optionally one Image layer) as a Cellpose ``_seg.npy``."""
    from .engine.io.segfile import write_seg

    labels = [d for d, m, t in layer_data if t == "labels"]
    images = [(d, m) for d, m, t in layer_data if t == "image"]
    if len(labels) != 1:
        raise ValueError(f"select exactly one Labels layer to write a _seg.npy (got {len(labels)})")
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
    out = write_seg(path, masks, diameter=diameter, channels=cp_channels, filename=name,
                    image=image)
    return [out]


def write_roi_zip(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer as an ImageJ ROI set (``.zip`` of polygons, per plane in 3D)."""
    from .engine.io.segfile import write_imagej_rois

    return [write_imagej_rois(path, _labels(data))]
