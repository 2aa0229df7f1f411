"""ImageJ ROI sets from label images (via roifile): one polygon per object and plane."""

from __future__ import annotations

import os
import zipfile
from typing import Union

import numpy as np

__all__ = ["masks_to_rois", "write_imagej_rois"]

PathLike = Union[str, os.PathLike]


def masks_to_rois(masks: np.ndarray) -> list:
    """One ImageJ polygon ROI per mask (per mask and plane for 3D masks).

    The outline is the longest sub-pixel contour of the mask (scikit-image
    ``find_contours``), in ImageJ's (x, y) pixel coordinates.
    """
    import roifile
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    masks = np.asarray(masks)
    if masks.ndim not in (2, 3) or masks.dtype.kind not in "iub":
        raise ValueError(f"masks must be a 2D or 3D integer array, got {masks.dtype} "
                         f"with shape {masks.shape}")
    planes = [masks] if masks.ndim == 2 else list(masks)
    rois = []
    for z, plane in enumerate(planes):
        slices = ndi.find_objects(plane)
        for idx, sl in enumerate(slices, start=1):
            if sl is None:
                continue
            y0, x0 = sl[0].start, sl[1].start
            crop = np.pad(plane[sl] == idx, 1)
            contours = find_contours(crop.astype(np.float32), 0.5)
            if not contours:
                continue
            c = max(contours, key=len)
            xy = np.stack([c[:, 1] + x0 - 1 + 0.5, c[:, 0] + y0 - 1 + 0.5], -1)
            name = f"{idx:04d}" if masks.ndim == 2 else f"{z + 1:04d}-{idx:04d}"
            kwargs = {} if masks.ndim == 2 else {"position": z}  # 0-based; stored 1-based
            rois.append(roifile.ImagejRoi.frompoints(xy, name=name, **kwargs))
    return rois


def write_imagej_rois(path: PathLike, masks: np.ndarray) -> str:
    """Write the masks as an ImageJ ROI set (a ``.zip`` of polygon ROIs).

    Returns
    -------
    str
        The path written (``.zip`` is appended when missing).
    """
    import roifile

    path = os.fspath(path)
    if not path.lower().endswith(".zip"):
        path += ".zip"
    rois = masks_to_rois(masks)
    if os.path.exists(path):
        os.remove(path)
    if rois:
        roifile.roiwrite(path, rois)
    else:  # an empty, valid zip archive
        with zipfile.ZipFile(path, "w"):
            pass
    return path
