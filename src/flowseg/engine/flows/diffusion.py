"""Labels -> flows: heat diffusion from each object's centre (the Cellpose flow definition).

For every object, on its bounding box padded by one pixel:

* the centre is the object pixel nearest the per-axis median of the object's coordinates
  (ties: the first in raster order; ``center="mean"`` uses the mean, as the Cellpose 3
  code does);
* the heat ``T`` starts at 0; each of ``N`` steps adds 1 at the centre, then replaces every
  object pixel by the mean of its 3x3 (3x3x3) neighbourhood, where pixels outside the object
  (background or other objects) count as 0 and stay 0 (a Jacobi update);
* ``N = 2 * sum(extent_k + 2)`` where ``extent_k`` is the object's bounding-box size along
  axis ``k`` (the padded box; this is the reference's 2D CPU count);
* the flow at an object pixel is the central-difference gradient of the final heat,
  ``T[i+1] - T[i-1]`` along each axis (outside pixels read 0; no log transform, as in
  the reference CPU path), divided by its length.  Pixels where the gradient is exactly 0
  (1-pixel objects, pieces of an object not connected to its centre) get flow 0.

The work is done per object on its box, in parallel over objects (threads), so the
cost scales with the objects' area, not the image area.  The heat is float32, or float64
for thin elongated objects whose float32 heat would underflow far from the centre.  3D labels
use a true 3D diffusion (the reference CPU path instead sums 2D flows of the three slice
orientations).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numba
import numpy as np
from scipy import ndimage as ndi

from .diffusion_kernels import flows_2d as _flows_2d
from .diffusion_kernels import flows_3d as _flows_3d

__all__ = ["masks_to_flows", "check_labels", "compress_ids", "object_boxes", "parallel_ranges",
           "n_threads"]


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """Validate an instance-label image and return it as a C-contiguous int32/int64 array.

    Parameters
    ----------
    labels : array_like
        2D or 3D label image, 0 = background.  Integer or boolean dtype; float arrays are
        accepted only when every value is a finite integer (e.g. labels read from a float
        TIFF) and are refused otherwise.
    name : str
        Name used in error messages.

    Returns
    -------
    np.ndarray
        The labels as int32 (int64 if the largest id does not fit in int32).

    Raises
    ------
    ValueError
        Wrong number of dimensions, non-numeric or non-integral values, negative ids.
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D or 3D array, got {arr.ndim}-D with shape "
                         f"{arr.shape}")
    if arr.dtype == bool:
        return np.ascontiguousarray(arr, dtype=np.int32)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be integer ids; got a float array containing "
                             "NaN or infinity")
        if arr.size and not np.array_equal(arr, np.round(arr)):
            bad = arr[arr != np.round(arr)].flat[0]
            raise ValueError(f"{name} must be integer ids; got a float array with "
                             f"non-integer values (e.g. {bad!r})")
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.zeros(arr.shape, np.int32)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"{name} must be non-negative (0 = background), got minimum {lo}")
    if hi >= 2**62:  # e.g. uint64 ids beyond int64: renumber, keeping 0 as background
        uniq, inv = np.unique(arr, return_inverse=True)
        arr = inv.reshape(arr.shape) + (0 if uniq[0] == 0 else 1)
        hi = arr.max()
    dtype = np.int32 if hi < 2**31 - 1 else np.int64
    return np.ascontiguousarray(arr, dtype=dtype)


def compress_ids(labels: np.ndarray) -> np.ndarray:
    """Renumber labels whose ids are huge and sparse so per-id tables stay small.

    Labels with ``max <= 4 * size + 1000`` are returned unchanged; otherwise the ids are
    mapped to ``1..n`` in ascending order (0 stays 0).
    """
    hi_id = int(labels.max()) if labels.size else 0
    if hi_id <= 4 * labels.size + 1000:
        return labels
    uniq, inv = np.unique(labels, return_inverse=True)
    comp = inv.reshape(labels.shape).astype(np.int32)
    if uniq[0] != 0:
        comp += 1
    return comp


def object_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounding boxes of the objects of a label image.

    Parameters
    ----------
    labels : np.ndarray
        Validated non-negative integer labels (see :func:`check_labels` and
        :func:`compress_ids`).

    Returns
    -------
    ids : np.ndarray
        int64 ids of the objects present (ascending).
    lo, hi : np.ndarray
        int64 ``(n, ndim)`` start (inclusive) and stop (exclusive) of each box.
    """
    ndim = labels.ndim
    slices = ndi.find_objects(labels) if labels.size else []
    keep = [i for i, s in enumerate(slices) if s is not None]
    ids = np.asarray(keep, np.int64) + 1
    lo = np.array([[s.start for s in slices[i]] for i in keep], np.int64).reshape(-1, ndim)
    hi = np.array([[s.stop for s in slices[i]] for i in keep], np.int64).reshape(-1, ndim)
    return ids, lo, hi


_POOL: Optional[ThreadPoolExecutor] = None
_POOL_KEY: tuple = ()


def n_threads() -> int:
    """Worker threads for the engine kernels (numba's thread count, e.g. NUMBA_NUM_THREADS)."""
    return max(1, int(numba.get_num_threads()))


def parallel_ranges(kernel, n: int, *args, args_after: tuple = (), chunks_per_thread: int = 4):
    """Run ``kernel(*args, start, stop, *args_after)`` over ``range(n)`` split in chunks.

    The kernels are numba functions compiled with ``nogil=True``; a thread pool runs the
    chunks concurrently (cheaper to compile than numba ``parallel=True``, and chunks are
    scheduled dynamically).  Returns the list of kernel results.
    """
    global _POOL, _POOL_KEY
    nt = n_threads()
    if nt == 1 or n < 2:
        return [kernel(*args, 0, n, *args_after)]
    key = (nt, os.getpid())  # a forked child (e.g. a DataLoader worker) needs its own pool
    if _POOL is None or key != _POOL_KEY:
        _POOL = ThreadPoolExecutor(max_workers=nt, thread_name_prefix="flowseg")
        _POOL_KEY = key
    nch = min(n, nt * chunks_per_thread)
    edges = np.linspace(0, n, nch + 1).astype(np.int64)
    futs = [_POOL.submit(kernel, *args, int(a), int(b), *args_after)
            for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return [f.result() for f in futs]


def masks_to_flows(labels, *, niter: Optional[int] = None, center: str = "median") -> np.ndarray:
    """Unit flows of a label image: normalised gradients of each object's centre heat.

    Parameters
    ----------
    labels : array_like
        2D ``(Y, X)`` or 3D ``(Z, Y, X)`` instance labels, 0 = background.  Ids need not be
        consecutive; objects may touch.  Integer or boolean dtype, or float holding only
        integer values (non-integral floats are refused).
    niter : int, optional
        Number of diffusion steps for every object.  Default: per object
        ``2 * sum(extent_k + 2)`` (see the module docstring).
    center : {"median", "mean"}
        The diffusion source is the object pixel nearest the per-axis ``median`` (default,
        the method's definition) or ``mean`` of the object's coordinates.  ``"mean"``
        reproduces the Cellpose 3 code exactly in 2D (its docstring says median, its code
        uses the mean); the two differ only near the centres of irregular objects.

    Returns
    -------
    np.ndarray
        float32 ``(ndim, *labels.shape)``: ``(dY, dX)`` or ``(dZ, dY, dX)``, unit length
        inside objects (0 where the heat gradient vanishes, e.g. 1-pixel objects) and 0
        outside.

    Raises
    ------
    ValueError
        If ``labels`` is not a 2D/3D array of non-negative integer ids, or ``niter`` < 1.
    """
    lab = check_labels(labels)
    if center not in ("median", "mean"):
        raise ValueError(f"center must be 'median' or 'mean', got {center!r}")
    if niter is not None and int(niter) < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    out = np.zeros((lab.ndim, *lab.shape), np.float32)
    lab = compress_ids(lab)
    ids, lo, hi = object_boxes(lab)
    if ids.size == 0:
        return out
    # largest boxes first so the dynamically scheduled chunks end together
    order = np.argsort(-np.prod(hi - lo, axis=1), kind="stable")
    ids, lo, hi = ids[order].astype(lab.dtype), lo[order], hi[order]
    nfix = 0 if niter is None else int(niter)
    kernel = _flows_2d if lab.ndim == 2 else _flows_3d
    c = 1.0 / 3 ** lab.ndim
    todo = np.zeros(ids.size, np.uint8)
    parallel_ranges(kernel, ids.size, lab, ids, lo, hi, chunks_per_thread=8,
                    args_after=(nfix, center == "mean", np.float32(c), True, todo, out))
    thin = np.flatnonzero(todo)
    if thin.size:  # thin, elongated objects: float64 heat (compiled on first need)
        parallel_ranges(kernel, thin.size, lab, ids[thin], lo[thin], hi[thin],
                        args_after=(nfix, center == "mean", np.float64(c), False, todo[thin],
                                    out))
    return out
