"""Sample data for File > Open Sample > FlowSeg (synthetic images from the engine).

Multichannel samples are given channels first (``(C, Y, X)``, ``(C, Z, Y, X)``) so the
segmentation outputs line up with the image in the viewer.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_nuclei", "sample_cells", "sample_cells3d"]


def _layer(name: str) -> list:
    from .engine.data.samples import load_sample

    img, info = load_sample(name)
    ax = {"channel_axis": None, "z_axis": None}
    spatial = int(info.get("ndim", img.ndim - 1))
    if img.shape[-1] == 1:
        img = img[..., 0]
    else:
        img = np.moveaxis(img, -1, 0)
        ax["channel_axis"] = 0
    if spatial == 3:
        ax["z_axis"] = 1 if ax["channel_axis"] == 0 else 0
    meta = {"flowseg_axes": ax, "sample": {"name": name, "description": info.get("description"),
                                           "diameter": float(info.get("diameter", 0))}}
    return [(img, {"name": f"sample {name}", "metadata": meta}, "image")]


def sample_nuclei() -> list:
    """2D fluorescent nuclei, one channel."""
    return _layer("nuclei")


def sample_cells() -> list:
    """2D cells: cytoplasm + nuclear channel."""
    return _layer("cells")


def sample_cells3d() -> list:
    """3D cells: cytoplasm + nuclear channel."""
    return _layer("cells3d")
