"""napari readers: Cellpose ``_seg.npy`` files and ``*_masks`` label images.

``_seg.npy`` files are read with :func:`flowseg.engine.io.segfile.read_seg`, which never runs
pickled code: a file that tries to is refused with an error naming the offending object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from ._layers import flow_vectors

__all__ = ["napari_get_reader", "read_seg_layers", "read_label_image"]

LABEL_SUFFIXES = ("_masks.tif", "_masks.tiff", "_masks.png", "_cp_masks.png", "_cp_masks.tif")


def _one_path(path: Any) -> Optional[str]:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return os.fspath(path) if isinstance(path, (str, os.PathLike)) else None


def napari_get_reader(path: Any) -> Optional[Callable[[Any], list]]:
    """Return a reader for ``*_seg.npy`` and ``*_masks.tif|png`` files, else None."""
    p = _one_path(path)
    if p is None:
        return None
    low = p.lower()
    if low.endswith("_seg.npy"):
        return read_seg_layers
    if low.endswith(LABEL_SUFFIXES):
        return read_label_image
    return None


def read_seg_layers(path: Any) -> list:
    """Layers from a Cellpose ``_seg.npy``: masks, outlines, flows (vectors + colour), cellprob.

    Raises
    ------
    flowseg.engine.io.segfile.UnsafeFileError
        When the file holds pickled objects that could execute code.
    """
    from .engine.io.segfile import read_seg, seg_flows

    p = _one_path(path)
    dat = read_seg(p)
    base = os.path.basename(p)[: -len("_seg.npy")] or "seg"
    masks = np.asarray(dat["masks"]).astype(np.int32)
    info = {"cellpose_seg": {"path": p, "diameter": _num(dat.get("diameter")),
                             "chan_choose": _plain(dat.get("chan_choose")),
                             "filename": str(dat.get("filename", ""))}}
    layers: list = []
    img = dat.get("img")
    if isinstance(img, np.ndarray) and img.ndim >= 2:
        layers.append((img, {"name": base, "metadata": dict(info)}, "image"))
    layers += [
        (masks, {"name": f"{base} masks", "metadata": dict(info)}, "labels"),
        (np.asarray(dat["outlines"]).astype(np.int32),
         {"name": f"{base} outlines", "visible": False, "metadata": dict(info)}, "labels"),
    ]
    dP, cellprob, rgb = seg_flows(dat)
    if dP is not None:
        step = max(2, int(round((_num(dat.get("diameter")) or 30.0) / 5)))
        vec, colors = flow_vectors(dP, step)
    if dP is not None and len(vec):  # napari cannot show an empty Vectors layer
        layers.append((vec, {"name": f"{base} flows", "edge_color": colors,
                             "edge_width": 0.25 * step, "vector_style": "arrow",
                             "metadata": dict(info)}, "vectors"))
    if cellprob is not None:
        layers.append((cellprob, {"name": f"{base} cell probability", "visible": False,
                                  "colormap": "magma", "metadata": dict(info)}, "image"))
    if rgb is not None:
        layers.append((rgb, {"name": f"{base} flow colour", "visible": False, "rgb": True,
                             "metadata": dict(info)}, "image"))
    return layers


def read_label_image(path: Any) -> list:
    """A ``*_masks.tif`` / ``*_masks.png`` label image as a Labels layer."""
    from .engine.io.images import read_image

    p = _one_path(path)
    data = read_image(p)  # a corrupt file: one FileReadError naming it
    if data.dtype.kind not in "iub":
        raise ValueError(f"{p!r} is not a label image: its pixels are {data.dtype}, "
                         "expected integers")
    if data.ndim == 3 and data.shape[-1] in (3, 4) and p.lower().endswith(".png"):
        raise ValueError(f"{p!r} is an RGB image, not a label image")
    name = os.path.splitext(os.path.basename(p))[0]
    return [(data.astype(np.int32, copy=False), {"name": name}, "labels")]


def _num(v: Any) -> Optional[float]:
    try:
        a = np.asarray(v, float).ravel()
        return float(a[0]) if a.size else None
    except (TypeError, ValueError):
        return None


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
