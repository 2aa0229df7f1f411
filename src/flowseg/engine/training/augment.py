"""Training-time augmentation: random rotation, flip, scale and crop with flows rotated.

A training sample is an image ``(C, H, W)`` plus its targets: unit flows ``(2, H, W)``
(dY, dX) computed once per image by :func:`flowseg.engine.flows.diffusion.masks_to_flows` and the
foreground mask ``(H, W)``.  Each crop is one affine map from crop coordinates ``o`` to
image coordinates ``i = A @ o + b`` with ``A = M / s`` (``M`` a rotation, possibly with a
mirror, ``s`` the zoom).  The image and flows are resampled bilinearly and the
foreground with nearest neighbour (:func:`scipy.ndimage.affine_transform`); the flow
*vectors* are then turned into the crop's frame, ``v_out = M.T @ v_in``, which also flips
the sign of the mirrored component.

Only the bounding box of the crop's footprint is converted to float32 before resampling,
so large images stored as float16 stay cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CropTransform", "random_transform", "warp_sample", "make_batch"]


@dataclass(frozen=True)
class CropTransform:
    """Affine map from crop pixel ``o`` to image pixel ``i = matrix @ o + offset``.

    Attributes
    ----------
    matrix : np.ndarray
        ``(2, 2)`` = ``M / scale``.
    offset : np.ndarray
        ``(2,)``.
    rotation : np.ndarray
        ``(2, 2)`` orthogonal ``M`` (rotation, possibly with a mirror).
    scale : float
        Zoom factor (> 1 enlarges the image).
    """

    matrix: np.ndarray
    offset: np.ndarray
    rotation: np.ndarray
    scale: float


def random_transform(
    rng: np.random.Generator,
    shape: Sequence[int],
    crop: int,
    base_scale: float = 1.0,
    *,
    scale_range: tuple[float, float] = (0.75, 1.25),
    rotate: bool = True,
    flip: bool = True,
) -> CropTransform:
    """Draw a random rotation / mirror / zoom / crop position for an image of ``shape``.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness (the only one used, so a seeded generator is deterministic).
    shape : sequence of int
        ``(H, W)`` of the image.
    crop : int
        Side of the square crop.
    base_scale : float
        Zoom bringing the image's objects to the model's diameter (``diam_mean / diam``).
    scale_range : (float, float)
        Extra random zoom, uniform in this range.
    rotate, flip : bool
        Random rotation by any angle; random left-right mirror.

    Returns
    -------
    CropTransform
    """
    h, w = int(shape[0]), int(shape[1])
    s = float(base_scale) * float(rng.uniform(*scale_range))
    theta = float(rng.uniform(0.0, 2 * np.pi)) if rotate else 0.0
    mirror = bool(rng.random() < 0.5) if flip else False
    c, si = np.cos(theta), np.sin(theta)
    m = np.array([[c, -si], [si, c]])
    if mirror:
        m = m @ np.diag([1.0, -1.0])
    # crop centre in image coordinates: anywhere the crop still overlaps the image well
    half = (crop - 1) / 2.0
    slack = np.maximum(0.0, np.array([h, w], float) - crop / s) / 2.0
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0]) + rng.uniform(-1, 1, 2) * slack
    a = m / s
    offset = centre - a @ np.array([half, half])
    return CropTransform(a, offset, m, s)


def _footprint(t: CropTransform, crop: int, shape: Sequence[int], pad: int = 2
               ) -> tuple[slice, slice] | None:
    """Bounding box (clipped to the image) of the image pixels a crop reads."""
    corners = np.array([[0, 0], [0, crop - 1], [crop - 1, 0], [crop - 1, crop - 1]], float)
    pts = corners @ t.matrix.T + t.offset
    lo = np.maximum(np.floor(pts.min(0)).astype(int) - pad, 0)
    hi = np.minimum(np.ceil(pts.max(0)).astype(int) + pad + 1, np.asarray(shape[:2]))
    if np.any(hi <= lo):
        return None
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


def warp_sample(
    image: np.ndarray,
    flows: np.ndarray,
    fg: np.ndarray,
    t: CropTransform,
    crop: int,
    out_x: np.ndarray | None = None,
    out_y: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample one sample through ``t`` into a ``crop x crop`` window.

    Parameters
    ----------
    image : np.ndarray
        ``(C, H, W)`` normalised image (any float dtype).
    flows : np.ndarray
        ``(2, H, W)`` unit flows (dY, dX).
    fg : np.ndarray
        ``(H, W)`` foreground (bool / uint8).
    t : CropTransform
        The map, from :func:`random_transform`.
    crop : int
        Output side.
    out_x, out_y : np.ndarray, optional
        Preallocated ``(C, crop, crop)`` and ``(3, crop, crop)`` float32 outputs.

    Returns
    -------
    x : np.ndarray
        ``(C, crop, crop)`` float32 image.
    y : np.ndarray
        ``(3, crop, crop)`` float32 targets: flow Y, flow X (unit, in the crop's frame),
        foreground (0/1).
    """
    nchan = image.shape[0]
    x = np.zeros((nchan, crop, crop), np.float32) if out_x is None else out_x
    y = np.zeros((3, crop, crop), np.float32) if out_y is None else out_y
    x[...] = 0
    y[...] = 0
    box = _footprint(t, crop, image.shape[1:])
    if box is None:
        return x, y
    off = t.offset - np.array([box[0].start, box[1].start], float)
    for k in range(nchan):
        sub = np.asarray(image[k][box], np.float32)
        ndi.affine_transform(sub, t.matrix, off, output=x[k], order=1, mode="constant",
                             cval=0.0, prefilter=False)
    fy = np.empty((crop, crop), np.float32)
    fx = np.empty((crop, crop), np.float32)
    ndi.affine_transform(np.asarray(flows[0][box], np.float32), t.matrix, off, output=fy,
                         order=1, mode="constant", cval=0.0, prefilter=False)
    ndi.affine_transform(np.asarray(flows[1][box], np.float32), t.matrix, off, output=fx,
                         order=1, mode="constant", cval=0.0, prefilter=False)
    # v_out = M.T @ v_in  (rotation into the crop frame; mirrors flip one component)
    mt = t.rotation.T
    np.multiply(fy, mt[0, 0], out=y[0])
    y[0] += mt[0, 1] * fx
    np.multiply(fy, mt[1, 0], out=y[1])
    y[1] += mt[1, 1] * fx
    ndi.affine_transform(np.asarray(fg[box], np.float32), t.matrix, off, output=y[2],
                         order=0, mode="constant", cval=0.0, prefilter=False)
    return x, y


def make_batch(
    images: Sequence[np.ndarray],
    flows: Sequence[np.ndarray],
    fgs: Sequence[np.ndarray],
    base_scales: Sequence[float],
    indices: Sequence[int],
    rng: np.random.Generator,
    crop: int,
    *,
    scale_range: tuple[float, float] = (0.75, 1.25),
    rotate: bool = True,
    flip: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Assemble a batch of augmented crops.

    Parameters
    ----------
    images, flows, fgs : sequences of np.ndarray
        Per-image ``(C, H, W)`` images, ``(2, H, W)`` flows, ``(H, W)`` foregrounds.
    base_scales : sequence of float
        Per-image zoom to the model's diameter.
    indices : sequence of int
        Images of this batch.
    rng : np.random.Generator
        Source of randomness.
    crop : int
        Crop side.
    scale_range, rotate, flip
        See :func:`random_transform`.

    Returns
    -------
    x : np.ndarray
        ``(B, C, crop, crop)`` float32.
    y : np.ndarray
        ``(B, 3, crop, crop)`` float32 (flow Y, flow X, foreground).
    """
    nchan = images[indices[0]].shape[0]
    x = np.empty((len(indices), nchan, crop, crop), np.float32)
    y = np.empty((len(indices), 3, crop, crop), np.float32)
    for b, i in enumerate(indices):
        t = random_transform(rng, images[i].shape[1:], crop, base_scales[i],
                             scale_range=scale_range, rotate=rotate, flip=flip)
        warp_sample(images[i], flows[i], fgs[i], t, crop, out_x=x[b], out_y=y[b])
    return x, y
