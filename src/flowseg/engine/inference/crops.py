"""Measuring object size on a sample of crops instead of the whole image.

The refinement step of diameter estimation (:mod:`flowseg.engine.inference.size`) segments
the image at the size model's diameter and takes the median diameter of the masks.  On a big
image most of that pass is not needed for a median: :func:`refine_on_crops` segments square
crops of :data:`CROP` pixels at the network's scale, spread evenly over the image
(:func:`crop_windows`, :func:`spread_order`), a few at a time, until :data:`MIN_OBJECTS` whole
objects have been measured or :data:`MAX_FRACTION` of the image has been seen.

Each crop runs through the network in one piece (padded as
:func:`~flowseg.engine.network.tiling.run_tiled` pads a whole image) and its masks use the
default :class:`~flowseg.engine.flows.params.MaskParams` (as the whole-image refinement
does).  The network's decoder is conditioned on a *style*, the average of the deepest
encoder map over its whole input: a crop's own style is not the image's (cosine 0.39 between
a 256-pixel crop and its 1272 x 603 DSB image), and with it the crop's objects came out
3-4 % smaller than the same objects in the whole-image pass (matched objects of DSB
``cb4df20a``; 0.94-0.96 of the whole pass's median on the three dense 603 x 1272 images).
So when the whole image runs through the network in one piece at the crops' scale (what the
refinement pass then does), the crops are decoded with the style pooled over all crops so
far (:func:`crops_forward`): the crops' median moved to 0.96-1.00 of the whole pass's.
With ``augment`` or an image that is tiled at that scale (each tile has its own style, as a
crop does) the crops run through ``run_tiled``.

An object touching a crop border that is not an image border is cut by the crop and dropped.
That favours small objects (a large one touches a border more often), so the median is
weighted with the Miles-Lantuejoul correction: an object with a bounding box of ``h`` x
``w`` pixels is kept from a window of ``Ly`` x ``Lx`` with probability proportional to
``(Ly - h)(Lx - w)`` and weighs ``1 / ((Ly - h)(Lx - w))`` (an axis whose two crop borders
are image borders drops nothing and is not corrected).

The crops also say how precise their median is (:func:`median_precision`): the standard error
of the log median, ``1.2533 * spread / sqrt(n_eff)`` (``spread`` a weighted MAD of the log
diameters, at least :data:`SPREAD_MIN`).  On a sparse image (10-25 whole objects in a
quarter of it) the median is uncertain by 15-30 %: object sizes in one image often span 3x
(DSB brightfield: two groups, ~8 and ~22 px) and sit in patches, so the crops' median
strayed from the whole pass's by 1.4-1.6 times this error on 29 DSB images (clustering).
A bootstrap over the crops, meant to catch that, misfired with 3-5 crops (0.2 for a dense
image of 107 objects whose median was right), so it is not used.  The caller uses the
error to keep an uncertain median from making the pass finer
(:data:`flowseg.engine.inference.size.UNCERTAIN`); weighing the size model against the
crops by inverse variance was tried and kept fewer of the refinement passes on the 1 MP
images of ``benchmarks/bench_estimate.py`` (bundled size models, error 0.35: 5 of 11 kept
instead of 8; a refitted ``nuclei`` size model, error 0.18: 2 of 5 instead of 3), because
the regression read from 2 tiles is off by 20-30 % as often as the crops are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from ..flows.masks import compute_masks
from ..flows.params import MaskParams
from ..network.tiling import (
    inference_net,
    input_tensor,
    pad_amounts,
    pad_channels_first,
    run_tiled,
)
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .prepare import WHOLE_MAX, default_niter
from .transforms import resize_image

__all__ = ["CROP", "MAX_FRACTION", "MIN_OBJECTS", "ROUND", "SPREAD_MIN",
           "CropEstimate", "crop_side", "crop_windows", "crops_forward", "mask_diameters",
           "median_precision", "refine_on_crops", "spread_order", "weighted_median"]

#: crop side at the network's scale (pixels; the image is resized by ``diam_mean / at``)
CROP = 256
#: stop adding crops once this many whole objects have been measured ...
MIN_OBJECTS = 150
#: ... or once the crops cover this fraction of the image
MAX_FRACTION = 0.25
#: crops per network call (one round; objects are counted between rounds)
ROUND = 4
#: smallest spread (robust SD of the log diameters) assumed for the standard error: a few
#: objects can look alike by chance, and even the most uniform images have a spread of
#: 0.07-0.17 (dense DSB fluorescence), most 0.2-0.45
SPREAD_MIN = 0.2


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
    se : float
        Standard error of ``log(diameter)`` (:func:`median_precision`; inf without objects).
    """

    diameter: float
    at: float
    n_objects: int
    n_crops: int
    fraction: float
    se: float = float("inf")


def median_precision(diameters: list[np.ndarray], weights: list[np.ndarray]
                     ) -> tuple[float, float]:
    """Weighted median diameter of the objects of several crops and the standard error of its
    logarithm.

    ``diameters[k]``, ``weights[k]``: the objects of crop ``k``.  The error is
    ``1.2533 * spread / sqrt(n_eff)``: the median of ``n_eff = (sum w)^2 / sum w^2``
    objects, ``spread`` the weighted MAD of the log diameters x 1.4826, at least
    :data:`SPREAD_MIN`.  Returns ``(0, inf)`` without objects.
    """
    d = np.concatenate([np.asarray(x, np.float64) for x in diameters] or [np.zeros(0)])
    w = np.concatenate([np.asarray(x, np.float64) for x in weights] or [np.zeros(0)])
    if d.size == 0:
        return 0.0, float("inf")
    logd = np.log(d)
    med = weighted_median(logd, w)
    spread = 1.4826 * weighted_median(np.abs(logd - med), w)
    n_eff = w.sum() ** 2 / (w ** 2).sum()
    se = 1.2533 * max(spread, SPREAD_MIN) / np.sqrt(n_eff)
    return float(np.exp(med)), float(se)


def crops_forward(net: torch.nn.Module, batch: np.ndarray, pool: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Network outputs of a batch of padded crops ``(B, C, H, W)`` decoded with a shared style.

    The style is the L2-normalised mean, over the crops of ``batch`` and those summed in
    ``pool`` before, of each crop's deepest encoder map averaged over the crop (for one
    image run whole the network uses that average over the whole image).  Returns the
    outputs ``(B, 3, H, W)`` and the new ``pool`` (the sum of the crops' averages).
    """
    fast = inference_net(net)
    t = input_tensor(fast, batch)
    with torch.inference_mode():
        xd = fast.downsample(t)
        means = xd[-1].mean(dim=(2, 3)).double().cpu().numpy()
        total = means.sum(0) if pool is None else pool + means.sum(0)
        style = total / max(float(np.linalg.norm(total)), 1e-12)
        st = torch.from_numpy(style.astype(np.float32)).to(t.device)[None].expand(len(means), -1)
        y = fast.output(fast.upsample(st, xd))
    return y.float().contiguous().cpu().numpy(), total


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


def _shared_style(H: int, W: int, rescale: float, whole_max: int, augment: bool) -> bool:
    """Whether the whole image runs through the network in one piece at ``rescale`` (so the
    crops should share one style, see the module docstring)."""
    h, w = max(1, int(round(H * rescale))), max(1, int(round(W * rescale)))
    return not augment and (h + sum(pad_amounts(h))) * (w + sum(pad_amounts(w))) <= whole_max


def _run_crops(model: ModelBase, stack: np.ndarray, pool: np.ndarray | None, shared: bool, *,
               batch_size: int, augment: bool, cancel: CancelToken
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Network outputs ``(B, 3, h, w)`` of crops ``(B, h, w, C)`` at the network's scale."""
    if not shared:
        y, _ = run_tiled(model.net, stack, batch_size=batch_size, augment=augment,
                         whole_max=WHOLE_MAX, cancel=cancel)
        return y, pool
    h, w = stack.shape[1:3]
    padded, py, px = pad_channels_first(stack)
    y, pool = crops_forward(model.net, padded, pool)
    return y[:, :, py[0]:py[0] + h, px[0]:px[0] + w], pool


def refine_on_crops(model: ModelBase, x: np.ndarray, at: float, *, crop: int = CROP,
                    min_objects: int = MIN_OBJECTS, max_fraction: float = MAX_FRACTION,
                    batch_size: int = 8, augment: bool = False, whole_max: int = WHOLE_MAX,
                    progress: ProgressCallback | None = None,
                    cancel: CancelToken = None) -> CropEstimate:
    """Median object diameter of a prepared 2D image ``(H, W, C)`` from crops segmented at ``at``.

    Crops of ``crop`` pixels at the network's scale (:func:`crop_side` in the image) are
    taken in :func:`spread_order`, :data:`ROUND` per network call, until ``min_objects``
    whole objects were measured or the next round would cover more than ``max_fraction`` of
    the image (at least one round).  When the whole image at ``at`` fits ``whole_max`` (and
    not ``augment``) the crops share the style pooled over the crops so far
    (:func:`crops_forward`).  Progress: stage ``"size"``, one unit per crop.
    """
    H, W = x.shape[:2]
    c = crop_side(at, model.diam_mean, crop)
    cy, cx = min(c, H), min(c, W)
    windows = crop_windows(H, W, cy, cx)
    allowed = max(1, min(len(windows), int(max_fraction * H * W / (cy * cx))))
    rescale = model.diam_mean / float(at)
    ny, nx = max(1, int(round(cy * rescale))), max(1, int(round(cx * rescale)))
    shared = _shared_style(H, W, rescale, int(whole_max), augment)
    mp = MaskParams(niter=default_niter(at, model.diam_mean))
    ds: list[np.ndarray] = []
    ws: list[np.ndarray] = []
    n_obj, done, pool = 0, 0, None
    report(progress, "size", 0, allowed, "measuring objects on crops")
    while done < allowed and (done == 0 or n_obj < min_objects):
        check_cancel(cancel)
        batch = windows[done:min(allowed, done + ROUND)]
        stack = np.stack([x[y0:y0 + cy, x0:x0 + cx] for y0, x0 in batch])
        y, pool = _run_crops(model, resize_image(stack, (ny, nx)), pool, shared,
                             batch_size=batch_size, augment=augment, cancel=cancel)
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
    med, se = median_precision(ds, ws)
    return CropEstimate(diameter=med, at=float(at), n_objects=n_obj, n_crops=done,
                        fraction=done * cy * cx / float(H * W), se=se)
