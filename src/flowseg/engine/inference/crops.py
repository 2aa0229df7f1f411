"""Measuring object size on a sample of crops instead of the whole image.

The refinement step of diameter estimation (:mod:`flowseg.engine.inference.size`) segments
the image at the size model's diameter and takes the median diameter of the masks.  On a big
image most of that pass is not needed for a median: :func:`refine_on_crops` segments square
crops of :data:`CROP` pixels at the network's scale, spread evenly over the image
(:func:`crop_windows`, :func:`spread_order`), a few at a time, until :data:`MIN_OBJECTS` whole
objects have been measured or :data:`MAX_FRACTION` of the image has been seen.

Each crop runs through the network in one piece with the default
:class:`~flowseg.engine.flows.params.MaskParams` (as the whole-image refinement does).  An
object touching a crop border that is not an image border is cut by the crop and dropped.
That favours small objects (a large one touches a border more often), so the median is
weighted with the Miles-Lantuejoul correction: an object with a bounding box of ``h`` x
``w`` pixels is kept from a window of ``Ly`` x ``Lx`` with probability proportional to
``(Ly - h)(Lx - w)`` and weighs ``1 / ((Ly - h)(Lx - w))`` (an axis whose two crop borders
are image borders drops nothing and is not corrected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..flows.masks import compute_masks
from ..flows.params import MaskParams
from ..network.tiling import run_tiled
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .prepare import WHOLE_MAX, default_niter
from .transforms import resize_image

__all__ = ["CROP", "MAX_FRACTION", "MIN_OBJECTS", "ROUND", "CropEstimate", "crop_side",
           "crop_windows", "mask_diameters", "refine_on_crops", "spread_order",
           "weighted_median"]

#: crop side at the network's scale (pixels; the image is resized by ``diam_mean / at``)
CROP = 256
#: stop adding crops once this many whole objects have been measured ...
MIN_OBJECTS = 150
#: ... or once the crops cover this fraction of the image
MAX_FRACTION = 0.25
#: crops per network call (one round; objects are counted between rounds)
ROUND = 4


def mask_diameters(masks: np.ndarray) -> tuple[float, np.ndarray]:
    """Median equivalent-circle diameter ``2 sqrt(area / pi)`` of the objects (0 if none)."""
    counts = np.bincount(np.asarray(masks, np.int64).ravel())[1:]
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0, counts.astype(np.float64)
    d = 2.0 * np.sqrt(counts / np.pi)
    return float(np.median(d)), d


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """The smallest value at which the cumulative weight reaches half the total (0 if empty)."""
    v, w = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    if v.size == 0 or not np.isfinite(w).all() or w.sum() <= 0:
        return 0.0
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, 0.5 * cum[-1])])


@dataclass
class CropEstimate:
    """The median object diameter measured on crops.

    Attributes
    ----------
    diameter : float
        Miles-Lantuejoul-weighted median equivalent-circle diameter of the whole objects in
        the crops (0 if none were found).
    at : float
        The diameter the crops were processed at.
    n_objects : int
        Whole objects measured.
    n_crops : int
        Crops segmented.
    fraction : float
        Fraction of the image area the crops cover.
    """

    diameter: float
    at: float
    n_objects: int
    n_crops: int
    fraction: float


def crop_side(at: float, diam_mean: float, crop: int = CROP) -> int:
    """Side in image pixels of a crop that is ``crop`` pixels at the network's scale."""
    return max(16, int(round(crop * float(at) / float(diam_mean))))


def spread_order(ny: int, nx: int) -> list[tuple[int, int]]:
    """Cells of an ``ny`` x ``nx`` grid, each as far as possible from those before it.

    Starts at the central cell; then farthest-point order (ties: row-major), so every
    prefix of the list is spread evenly over the grid.
    """
    cells = np.array([(j, i) for j in range(ny) for i in range(nx)], np.float64)
    first = int(np.argmin(((cells - [(ny - 1) / 2, (nx - 1) / 2]) ** 2).sum(1)))
    order = [first]
    dist = ((cells - cells[first]) ** 2).sum(1)
    for _ in range(len(cells) - 1):
        k = int(np.argmax(dist))
        order.append(k)
        dist = np.minimum(dist, ((cells - cells[k]) ** 2).sum(1))
    return [(int(cells[k, 0]), int(cells[k, 1])) for k in order]


def crop_windows(H: int, W: int, cy: int, cx: int) -> list[tuple[int, int]]:
    """Top-left corners of ``cy`` x ``cx`` crops covering an ``H`` x ``W`` image, in
    :func:`spread_order` (a grid of ``ceil(H / cy)`` x ``ceil(W / cx)``, evenly placed)."""
    ny, nx = -(-int(H) // int(cy)), -(-int(W) // int(cx))
    ys = np.linspace(0, H - cy, ny).round().astype(int)
    xs = np.linspace(0, W - cx, nx).round().astype(int)
    return [(int(ys[j]), int(xs[i])) for j, i in spread_order(ny, nx)]


def _whole_objects(masks: np.ndarray, cut: tuple[bool, bool, bool, bool]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Diameters and Miles-Lantuejoul weights of the objects not touching a ``cut`` border.

    ``cut`` = (top, bottom, left, right): whether that crop border lies inside the image.
    """
    Ly, Lx = masks.shape
    edges = [masks[0], masks[-1], masks[:, 0], masks[:, -1]]
    touching = np.unique(np.concatenate([e for e, c in zip(edges, cut) if c] or [[0]]))
    areas = np.bincount(masks.ravel())
    d, w = [], []
    for k, sl in enumerate(ndimage.find_objects(masks), start=1):
        if sl is None or k in touching:
            continue
        h, wd = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        ey = max(1, Ly - h) if (cut[0] or cut[1]) else Ly
        ex = max(1, Lx - wd) if (cut[2] or cut[3]) else Lx
        d.append(2.0 * np.sqrt(areas[k] / np.pi))
        w.append(1.0 / (float(ey) * float(ex)))
    return np.asarray(d, np.float64), np.asarray(w, np.float64)


def refine_on_crops(model: ModelBase, x: np.ndarray, at: float, *, crop: int = CROP,
                    min_objects: int = MIN_OBJECTS, max_fraction: float = MAX_FRACTION,
                    batch_size: int = 8, augment: bool = False,
                    progress: ProgressCallback | None = None,
                    cancel: CancelToken = None) -> CropEstimate:
    """Median object diameter of a prepared 2D image ``(H, W, C)`` from crops segmented at ``at``.

    Crops of ``crop`` pixels at the network's scale (:func:`crop_side` in the image) are
    taken in :func:`spread_order`, :data:`ROUND` per network call, until ``min_objects``
    whole objects were measured or the next round would cover more than ``max_fraction`` of
    the image (at least one round).  Progress: stage ``"size"``, one unit per crop.
    """
    H, W = x.shape[:2]
    c = crop_side(at, model.diam_mean, crop)
    cy, cx = min(c, H), min(c, W)
    windows = crop_windows(H, W, cy, cx)
    allowed = max(1, min(len(windows), int(max_fraction * H * W / (cy * cx))))
    rescale = model.diam_mean / float(at)
    ny, nx = max(1, int(round(cy * rescale))), max(1, int(round(cx * rescale)))
    mp = MaskParams(niter=default_niter(at, model.diam_mean))
    ds, ws = [np.zeros(0)], [np.zeros(0)]
    n_obj, done = 0, 0
    report(progress, "size", 0, allowed, "measuring objects on crops")
    while done < allowed and (done == 0 or n_obj < min_objects):
        check_cancel(cancel)
        batch = windows[done:min(allowed, done + ROUND)]
        stack = np.stack([x[y0:y0 + cy, x0:x0 + cx] for y0, x0 in batch])
        y, _ = run_tiled(model.net, resize_image(stack, (ny, nx)), batch_size=batch_size,
                         augment=augment, whole_max=WHOLE_MAX, cancel=cancel)
        y = resize_image(y, (cy, cx), channels_last=False)
        for k, (y0, x0) in enumerate(batch):
            check_cancel(cancel)
            masks = compute_masks(y[k, :2] * np.float32(0.2), y[k, 2], mp)
            d, w = _whole_objects(masks, (y0 > 0, y0 + cy < H, x0 > 0, x0 + cx < W))
            ds.append(d)
            ws.append(w)
            n_obj += d.size
        done += len(batch)
        report(progress, "size", done, allowed, "measuring objects on crops")
    med = weighted_median(np.concatenate(ds), np.concatenate(ws))
    return CropEstimate(diameter=med, at=float(at), n_objects=n_obj, n_crops=done,
                        fraction=done * cy * cx / float(H * W))
