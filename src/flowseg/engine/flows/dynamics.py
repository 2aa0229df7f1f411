"""Flows -> masks: follow the flows, cluster the end points, check and clean the masks.

Steps of :func:`compute_masks` (the Cellpose method):

1. every pixel with ``cellprob > cellprob_threshold`` is moved ``niter`` Euler steps along
   the flow field, linearly (bi/trilinearly) interpolated at its position, with the flows
   outside the thresholded cell probability set to 0 and positions clipped to the image.
   Points that settle early (fixed point or period-2 oscillation, within ``converge_tol``
   pixels) are stopped and placed where the remaining steps would leave them; points that
   then fall outside every cluster are integrated again without the early stop.  The masks
   match the plain integration (``converge_tol=0``) at a fraction of the cost, except where
   a point creeping slower than ``converge_tol`` per step decides a knife-edge cluster (3D
   volumes of the segmentation benchmark: 3 of 6 identical, the others differ by one small
   fragment or one split; a drift-bounded stop rule made 5 of 6 identical but cost 2-3x the
   steps);
2. the end points are binned to integer pixels (truncation); bins holding more than 10 end
   points that are maxima of their 5x5(x5) neighbourhood are seeds; from the seed with the
   fewest end points to the one with the most, each seed grows 5 times over its 3x3(x3)
   neighbours holding more than 2 end points, within 5 pixels of the seed; every pixel gets
   the seed region its end point fell into;
3. masks larger than ``max_size_fraction`` of the image are removed;
4. flow-error check (2D only, as in the reference): the flows of every mask are recomputed
   with :func:`flowseg.engine.flows.diffusion.masks_to_flows` and masks whose mean (over the mask's
   pixels) squared difference to the given flows, summed over the flow components, exceeds
   ``flow_threshold`` are removed.  Both flows are in unit scale here; Cellpose compares
   its unit mask flows with the network output divided by 5, which is the same thing;
5. masks smaller than ``min_size`` pixels are removed, then holes are filled (background
   regions enclosed by a single mask, 4-connected in 2D / 6-connected in 3D), and the
   masks are renumbered ``1..n`` in raster order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from . import dynamics_kernels as KD
from . import masks_kernels as K
from .diffusion import masks_to_flows, parallel_ranges
from .params import MaskParams, check_sampling

__all__ = ["MaskResult", "compute_masks", "flows_to_masks", "follow_flows", "flow_errors",
           "warmup"]

DEFAULT_NITER = 200
DEFAULT_TOL = 0.05


@dataclass
class MaskResult:
    """Masks with the intermediate results of :func:`compute_masks`.

    Attributes
    ----------
    masks : np.ndarray
        int32 labels ``1..n`` (0 = background).
    points : np.ndarray
        int32 ``(ndim, n_points)`` pixel coordinates that were integrated (cellprob above
        the threshold), listed tile by tile (16x16 / 8x8x8 tiles, raster order inside).
    end_points : np.ndarray
        float32 ``(ndim, n_points)`` where each of those pixels ended after ``niter`` steps.
    flow_errors : np.ndarray
        float32 flow error of every candidate mask checked (index ``id - 1`` of the
        candidate labels before the check); empty when the check did not run.
    n_removed_flow : int
        Number of masks removed by the flow-error check.
    niter : int
        Number of Euler steps asked for.
    work : int
        Point-steps actually computed (less than ``n_points * niter`` with the early stop).
    """

    masks: np.ndarray
    points: np.ndarray
    end_points: np.ndarray
    flow_errors: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    n_removed_flow: int = 0
    niter: int = DEFAULT_NITER
    work: int = 0


def _check_inputs(flows, cellprob) -> tuple[np.ndarray, np.ndarray]:
    cp = np.asarray(cellprob)
    fl = np.asarray(flows)
    if cp.ndim not in (2, 3):
        raise ValueError(f"cellprob must be a 2D or 3D array, got shape {cp.shape}")
    if fl.shape != (cp.ndim, *cp.shape):
        raise ValueError(f"flows must have shape (ndim, *cellprob.shape) = "
                         f"{(cp.ndim, *cp.shape)}, got {fl.shape}")
    for name, a in (("flows", fl), ("cellprob", cp)):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        if a.size and not np.isfinite(a).all():
            raise ValueError(f"{name} contain NaN or infinite values")
    return np.ascontiguousarray(fl, dtype=np.float32), cp


def follow_flows(flows: np.ndarray, points: np.ndarray, niter: int = DEFAULT_NITER, *,
                 tol: float = DEFAULT_TOL) -> tuple[np.ndarray, int]:
    """Euler-integrate points through a flow field with linear interpolation.

    Parameters
    ----------
    flows : np.ndarray
        ``(ndim, *shape)`` flow field (pixels per step), ndim 2 or 3.
    points : np.ndarray
        ``(ndim, n)`` start coordinates inside the image.
    niter : int
        Number of steps.
    tol : float
        Early-stop tolerance in pixels: a point whose position repeats within ``tol``
        after one step (fixed point) or two steps (period-2 oscillation) is stopped and
        placed where it would be after ``niter`` steps.  0 stops only exact repeats, which
        is the plain Euler integration; a small ``tol`` moves end points by a fraction of
        a pixel and saves most of the steps.

    Returns
    -------
    end_points : np.ndarray
        float32 ``(ndim, n)`` end coordinates, clipped to the image.
    work : int
        Number of point-steps computed.
    """
    fl = np.ascontiguousarray(np.moveaxis(np.asarray(flows, np.float32), 0, -1)).ravel()
    return _follow(fl, flows.shape[1:], np.asarray(points, np.float32), niter, tol)


def _follow(fl: np.ndarray, shape: tuple, points: np.ndarray, niter: int, tol: float,
            sampling: str = "exact"):
    """:func:`follow_flows` on the interleaved flattened field ``fl``."""
    ndim = len(shape)
    p = [np.array(points[d], dtype=np.float32) for d in range(ndim)]
    if p[0].size == 0:
        return np.zeros((ndim, 0), np.float32), 0
    if ndim == 2:
        work = parallel_ranges(KD.follow_2d, p[0].size, fl, shape[0], shape[1], p[0], p[1],
                               args_after=(int(niter), float(tol)))
    else:
        work = parallel_ranges(KD.follow_3d, p[0].size, fl, shape[0], shape[1], shape[2],
                               p[0], p[1], p[2],
                               args_after=(int(niter), float(tol), sampling == "cellpose3"))
    return np.stack(p), int(sum(work))


def _cluster(end_points: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Label (1..n, 0 = none) of every end point: histogram seeds grown over dense bins.

    Returns the labels and the label map over the bins.
    """
    shp = np.asarray(shape, np.int64)
    flat = K.end_bins(end_points, shp)
    h = K.histogram(flat, int(np.prod(shape)))
    seeds = K.find_seeds(h, shp, 10, 2)
    if seeds.size == 0:
        return np.zeros(flat.size, np.int32), np.zeros(h.size, np.int32)
    seeds = seeds[np.argsort(h[seeds], kind="stable")]
    M = K.grow_seeds(h, shp, seeds, 2, 5, 5)
    return M[flat], M


def flow_errors(masks: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Mean squared difference between each mask's own flows and the given flows.

    Parameters
    ----------
    masks : np.ndarray
        int labels ``1..n``.
    flows : np.ndarray
        ``(ndim, *masks.shape)`` unit-scale flows.

    Returns
    -------
    np.ndarray
        float32 ``(n,)``: for mask ``i`` at index ``i - 1``, the mean over its pixels of the
        squared difference summed over the flow components (0 for absent ids).
    """
    n = int(masks.max()) if masks.size else 0
    if n == 0:
        return np.zeros(0, np.float32)
    own = masks_to_flows(masks)
    nd = masks.ndim
    return K.error_sums(masks.ravel(), own.reshape(nd, -1),
                        np.asarray(flows, np.float32).reshape(nd, -1), n)


def _fill_holes(masks: np.ndarray) -> None:
    """Fill, in place, background regions enclosed by a single mask."""
    bg, nbg = ndi.label(masks == 0)
    if nbg <= 1:
        return
    owner = K.hole_owners(masks.ravel(), bg.ravel(), nbg, np.asarray(masks.shape, np.int64))
    if owner.any():
        K.apply_fill(masks.ravel(), bg.ravel(), owner)


def compute_masks(flows, cellprob, *,
                  cellprob_threshold: float = MaskParams.cellprob_threshold,
                  flow_threshold: Optional[float] = MaskParams.flow_threshold,
                  min_size: int = MaskParams.min_size,
                  niter: Optional[int] = None, max_size_fraction: float = 0.4,
                  converge_tol: Optional[float] = None, sampling: str = MaskParams.sampling,
                  progress: Optional[ProgressCallback] = None,
                  cancel: CancelToken = None) -> MaskResult:
    """Masks from unit flows and cell probability, with the intermediate results.

    Parameters are those of :func:`flows_to_masks`, plus ``converge_tol``, the early-stop
    tolerance of :func:`follow_flows` (0 = integrate every point for all ``niter`` steps;
    None = 0.05 for ``sampling="exact"``, 0 for ``"cellpose3"``).

    Returns
    -------
    MaskResult
    """
    fl, cp = _check_inputs(flows, cellprob)
    if niter is None:
        niter = DEFAULT_NITER
    if int(niter) < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    niter = int(niter)
    if flow_threshold is not None and flow_threshold < 0:
        raise ValueError(f"flow_threshold must be >= 0 (0 or None disables), got {flow_threshold}")
    check_sampling(sampling)
    if converge_tol is None:
        # "cellpose3" promises Cellpose's masks, so it integrates every point for all the
        # steps (it still stops exact repeats, which is cheap there: ~20 steps a point)
        converge_tol = 0.0 if sampling == "cellpose3" else DEFAULT_TOL
    if not converge_tol >= 0:
        raise ValueError(f"converge_tol must be >= 0, got {converge_tol}")
    if not max_size_fraction > 0:
        raise ValueError(f"max_size_fraction must be > 0, got {max_size_fraction}")
    shape = cp.shape
    ndim = cp.ndim
    check_cancel(cancel)
    report(progress, "dynamics", 0, 3)
    flm, flat = K.prepare(fl.reshape(ndim, -1), np.ascontiguousarray(cp, np.float32).ravel(),
                          np.float32(cellprob_threshold), np.asarray(shape, np.int64),
                          16 if ndim == 2 else 8)
    pts = K.flat_to_coords(flat, np.asarray(shape, np.int64))
    if flat.size == 0:
        return MaskResult(np.zeros(shape, np.int32), pts, pts.astype(np.float32), niter=niter)
    ends, work = _follow(flm, shape, pts, niter, converge_tol, sampling)
    check_cancel(cancel)
    report(progress, "dynamics", 1, 3)
    lab, bin_labels = _cluster(ends, shape)
    miss = np.flatnonzero(lab == 0) if converge_tol > 0 else np.zeros(0, np.int64)
    if miss.size:
        # points stopped early outside every cluster (e.g. stuck near a saddle between two
        # cells) are integrated again without the early stop
        e2, w2 = _follow(flm, shape, pts[:, miss], niter, 0.0, sampling)
        ends[:, miss] = e2
        work += w2
        lab[miss] = bin_labels[K.end_bins(e2, np.asarray(shape, np.int64))]
    masks = np.zeros(shape, np.int32)
    masks.ravel()[flat] = lab
    # remove masks that are too big, renumber
    counts = np.bincount(lab, minlength=1)
    keep = counts <= max_size_fraction * masks.size
    keep[0] = False
    K.relabel_raster(masks.ravel(), keep)
    errs = np.zeros(0, np.float32)
    n_bad = 0
    if ndim == 2 and flow_threshold and masks.any():
        check_cancel(cancel)
        report(progress, "dynamics", 2, 3, "flow check")
        errs = flow_errors(masks, fl)
        keep = np.concatenate([[False], errs <= flow_threshold])
        n_bad = int((~keep[1:]).sum())
        if n_bad:
            K.relabel_raster(masks.ravel(), keep)
    if masks.any():
        if min_size > 0:
            counts = np.bincount(masks.ravel())
            keep = counts >= min_size
            keep[0] = False
            if not keep[1:].all():
                K.relabel_raster(masks.ravel(), keep)
        _fill_holes(masks)
    report(progress, "dynamics", 3, 3)
    return MaskResult(masks, pts, ends, errs, n_bad, niter, work)


def flows_to_masks(flows, cellprob, *,
                   cellprob_threshold: float = MaskParams.cellprob_threshold,
                   flow_threshold: Optional[float] = MaskParams.flow_threshold,
                   min_size: int = MaskParams.min_size,
                   niter: Optional[int] = None, max_size_fraction: float = 0.4,
                   sampling: str = MaskParams.sampling,
                   progress: Optional[ProgressCallback] = None,
                   cancel: CancelToken = None) -> np.ndarray:
    """Instance masks from flows and cell probability (the Cellpose dynamics).

    Parameters
    ----------
    flows : array_like
        ``(2, Y, X)`` or ``(3, Z, Y, X)`` flows in UNIT scale (the network predicts 5x
        flows; divide them by 5 first).
    cellprob : array_like
        ``(Y, X)`` or ``(Z, Y, X)`` cell-probability logits.
    cellprob_threshold : float
        Pixels with ``cellprob > cellprob_threshold`` are followed.
    flow_threshold : float or None
        Maximum flow error of a mask (2D only; 0 or None disables the check).
    min_size : int
        Masks with fewer pixels are removed (0 or negative disables).
    niter : int, optional
        Euler steps (default 200; for images resized by a factor ``rescale`` before the
        network, ``200 / rescale`` follows the reference).
    max_size_fraction : float
        Masks larger than this fraction of the image are removed.
    sampling : {"exact", "cellpose3"}
        How 3D points sample the flows.  ``"exact"``: trilinear interpolation at the point,
        one unit-flow step per iteration.  ``"cellpose3"``: as Cellpose 3.1 does in 3D
        (``grid_sample(align_corners=False)`` on coordinates normalised by ``size - 1``, so
        the flow is read up to half a voxel off towards the borders, and steps of twice the
        unit flow since it sums the two slice estimates); it gives the same masks as
        Cellpose 3.1 on the same flows.  2D always uses ``"exact"`` (which is what
        Cellpose 3.1 does on a CPU).
    progress, cancel
        See :mod:`flowseg.engine.progress`.

    Returns
    -------
    np.ndarray
        int32 masks ``1..n`` in raster order of their first pixel, 0 = background.

    Raises
    ------
    ValueError
        Mismatched shapes, NaN or infinite values, invalid parameters.

    See Also
    --------
    compute_masks : the same, returning end points and flow errors too.
    """
    return compute_masks(flows, cellprob, cellprob_threshold=cellprob_threshold,
                         flow_threshold=flow_threshold, min_size=min_size, niter=niter,
                         max_size_fraction=max_size_fraction, sampling=sampling,
                         progress=progress, cancel=cancel).masks


def warmup(ndims: tuple[int, ...] = (2, 3)) -> None:
    """Compile (or load from numba's on-disk cache) every kernel of the flow engine.

    The first call after installation compiles for a few seconds per dimensionality;
    later processes load the cache in well under a second.  Call this from a background
    thread (e.g. when the GUI opens) to keep that cost off the first segmentation.
    """
    for nd in ndims:
        lab = np.zeros((12,) * nd, np.int32)
        lab[(slice(2, 9),) * nd] = 1
        compute_masks(masks_to_flows(lab), np.where(lab > 0, 5.0, -5.0), min_size=1)


_WARMUP_THREAD: Optional[threading.Thread] = None


def warmup_in_background() -> threading.Thread:
    """Start :func:`warmup` once per process on a daemon thread and return that thread.

    The napari widget calls this when it opens, so numba compiles (first run after
    installation, ~15 s on 2 cores) while the user picks a layer and settings; numba's
    compiler lock makes a segmentation that starts meanwhile simply wait for it.
    """
    global _WARMUP_THREAD
    if _WARMUP_THREAD is None:
        _WARMUP_THREAD = threading.Thread(target=warmup, name="flowseg-warmup", daemon=True)
        _WARMUP_THREAD.start()
    return _WARMUP_THREAD
