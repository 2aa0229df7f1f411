"""Per-object measurements of a labels image (area, centroid, mean intensity) and CSV export.

No Qt here.  Measurements come from :func:`skimage.measure.regionprops_table`; columns are
named for people reading the CSV in a spreadsheet.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["channels_last", "measure", "write_csv"]


def channels_last(image: np.ndarray, channel_axis: int | None, labels_shape: tuple
                  ) -> np.ndarray:
    """``image`` with its channel axis last, checked against the labels' shape.

    Returns ``labels_shape`` (one channel) or ``labels_shape + (C,)``.
    """
    x = np.asarray(image)
    if channel_axis is not None:
        x = np.moveaxis(x, channel_axis, -1)
        spatial = x.shape[:-1]
    else:
        spatial = x.shape
    if tuple(spatial) != tuple(labels_shape):
        raise ValueError(f"the image's spatial shape {tuple(spatial)} does not match the "
                         f"labels {tuple(labels_shape)}: choose the image the labels belong to")
    return x


def measure(labels: np.ndarray, image: np.ndarray | None = None,
            channel_axis: int | None = None) -> dict[str, np.ndarray]:
    """Area, centroid and mean intensity of every labelled object.

    Parameters
    ----------
    labels : ndarray of int
        2D ``(Y, X)`` or 3D ``(Z, Y, X)`` labels (0 = background).
    image : ndarray, optional
        Intensities with the labels' spatial shape, plus a channel axis if it has one.
    channel_axis : int, optional
        The channel axis of ``image``.

    Returns
    -------
    dict
        Columns ``label``, ``area_px`` (pixels, or voxels in 3D), ``centroid_z`` (3D),
        ``centroid_y``, ``centroid_x`` (pixel coordinates) and ``mean_intensity`` (one
        channel) or ``mean_intensity_ch0``, ``mean_intensity_ch1``, ... ; one row per
        object, sorted by label.
    """
    from skimage.measure import regionprops_table

    lab = np.asarray(labels)
    if lab.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D or 3D, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {lab.dtype}")
    intensity = None if image is None else channels_last(image, channel_axis, lab.shape)
    props = ["label", "area", "centroid"]
    if intensity is not None:
        props.append("intensity_mean")
    raw = regionprops_table(lab, intensity_image=intensity, properties=props)
    axes = "zyx"[-lab.ndim:]
    out: dict[str, np.ndarray] = {"label": raw["label"].astype(np.int64),
                                  "area_px": raw["area"].astype(np.int64)}
    for k, name in enumerate(axes):
        out[f"centroid_{name}"] = raw[f"centroid-{k}"]
    if intensity is not None:
        keys = sorted(k for k in raw if k.startswith("intensity_mean"))
        if keys == ["intensity_mean"]:
            out["mean_intensity"] = raw["intensity_mean"]
        else:
            for k in keys:
                out[f"mean_intensity_ch{k.rsplit('-', 1)[1]}"] = raw[k]
    return out


def write_csv(table: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a column table (as returned by :func:`measure`) as CSV with a header row."""
    path = Path(path)
    names = list(table)
    cols = [np.asarray(table[n]) for n in names]
    n = len(cols[0]) if cols else 0
    if any(len(c) != n for c in cols):
        raise ValueError("all columns must have the same length")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for i in range(n):
            w.writerow([c[i].item() if hasattr(c[i], "item") else c[i] for c in cols])
    return path
