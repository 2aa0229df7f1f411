"""numba kernels of :mod:`flowseg.engine.flows.diffusion` (per-object heat diffusion).

The diffusion kernels work on the flattened padded box with unsigned indices: numba then
drops its negative-index wrap-around checks and LLVM vectorises the loops (~25x faster
than 2D indexing).  Reading across row ends is harmless: the box's border pixels are never
object pixels, so their heat stays 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Heat decays roughly like exp(-pi * distance / width) along thin objects; in float32 it
# underflows (flow 0) beyond ~25 widths from the centre.  Objects whose squared sum of box
# extents exceeds this multiple of their area (2D) or volume**(2/3) (3D) -- about 1 + their
# length/width ratio in 2D, 13 for a ball in 3D -- diffuse in float64 instead.
_F64_ASPECT = 12.0
_F64_ASPECT_3D = 30.0


@njit(cache=True, nogil=True)
def _median_rank(counts, n):
    """Median of values ``0..len(counts)-1`` given their counts (numpy's definition)."""
    lo_rank, hi_rank = (n - 1) // 2, n // 2
    acc = 0
    v_lo, v_hi = -1, -1
    for v in range(counts.shape[0]):
        acc += counts[v]
        if v_lo < 0 and acc > lo_rank:
            v_lo = v
        if acc > hi_rank:
            v_hi = v
            break
    return 0.5 * (v_lo + v_hi)


@njit(cache=True, nogil=True)
def _mean_rank(counts, n):
    """Mean of values ``0..len(counts)-1`` given their counts."""
    acc = 0.0
    for v in range(counts.shape[0]):
        acc += v * counts[v]
    return acc / n


@njit(cache=True, nogil=True, fastmath=True)
def _diffuse_2d(T, m, cy, cx, niter, c9):
    """Run ``niter`` heat steps in place on the padded 2D box ``T`` (object mask ``m``)."""
    H, W = T.shape
    Tf, mf = T.ravel(), m.ravel()
    n, w, one = np.uint64(H * W), np.uint64(W), np.uint64(1)
    R = np.zeros_like(Tf)
    c = cy * W + cx
    for _ in range(niter):
        Tf[c] += 1.0
        for k in range(one, n - one):
            R[k] = Tf[k - one] + Tf[k] + Tf[k + one]
        for k in range(w, n - w):
            Tf[k] = mf[k] * (R[k - w] + R[k] + R[k + w]) * c9


@njit(cache=True, nogil=True, fastmath=True)
def _diffuse_3d(T, m, cz, cy, cx, niter, c27):
    """3D version of :func:`_diffuse_2d` (3x3x3 mean, separable sums)."""
    D, H, W = T.shape
    Tf, mf = T.ravel(), m.ravel()
    n, w, hw, one = np.uint64(D * H * W), np.uint64(W), np.uint64(H * W), np.uint64(1)
    R = np.zeros_like(Tf)
    S = np.zeros_like(Tf)
    c = (cz * H + cy) * W + cx
    for _ in range(niter):
        Tf[c] += 1.0
        for k in range(one, n - one):
            R[k] = Tf[k - one] + Tf[k] + Tf[k + one]
        for k in range(w, n - w):
            S[k] = R[k - w] + R[k] + R[k + w]
        for k in range(hw, n - hw):
            Tf[k] = mf[k] * (S[k - hw] + S[k] + S[k + hw]) * c27


@njit(cache=True, nogil=True)
def _object_2d(lab, lid, y0, x0, y1, x1, niter_fixed, use_mean, c9, skip_thin, out):
    """Flows of one object, heat in the dtype of ``c9`` (1/9); returns False (nothing
    done) for a thin object when ``skip_thin``."""
    H, W = y1 - y0 + 2, x1 - x0 + 2
    m = np.full((H, W), c9)
    m[:] = 0
    cnt_y = np.zeros(H, np.int64)
    cnt_x = np.zeros(W, np.int64)
    n = 0
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            if lab[y0 + i - 1, x0 + j - 1] == lid:
                m[i, j] = 1.0
                cnt_y[i] += 1
                cnt_x[j] += 1
                n += 1
    if use_mean:
        my, mx = _mean_rank(cnt_y, n), _mean_rank(cnt_x, n)
    else:
        my, mx = _median_rank(cnt_y, n), _median_rank(cnt_x, n)
    best = np.inf
    cy, cx = 1, 1
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            if m[i, j] > 0:
                d = (i - my) ** 2 + (j - mx) ** 2
                if d < best:
                    best, cy, cx = d, i, j
    if skip_thin and _F64_ASPECT * n < (H + W - 4) ** 2:
        return False
    niter = niter_fixed if niter_fixed > 0 else 2 * (H + W)
    T = np.full((H, W), c9)
    T[:] = 0
    _diffuse_2d(T, m, cy, cx, niter, c9)
    _write_2d(T, m, y0, x0, out)
    return True


@njit(cache=True, nogil=True)
def _write_2d(T, m, y0, x0, out):
    """Normalised central-difference gradient of the heat at the object pixels."""
    H, W = T.shape
    for i in range(1, H - 1):
        for j in range(1, W - 1):
            if m[i, j] > 0:
                dy = np.float64(T[i + 1, j]) - T[i - 1, j]
                dx = np.float64(T[i, j + 1]) - T[i, j - 1]
                nrm = np.sqrt(dy * dy + dx * dx)
                if nrm > 0:
                    out[0, y0 + i - 1, x0 + j - 1] = dy / nrm
                    out[1, y0 + i - 1, x0 + j - 1] = dx / nrm


@njit(cache=True, nogil=True)
def _object_3d(lab, lid, z0, y0, x0, z1, y1, x1, niter_fixed, use_mean, c27, skip_thin, out):
    """3D version of :func:`_object_2d` (``c27`` = 1/27)."""
    D, H, W = z1 - z0 + 2, y1 - y0 + 2, x1 - x0 + 2
    m = np.full((D, H, W), c27)
    m[:] = 0
    cnt_z = np.zeros(D, np.int64)
    cnt_y = np.zeros(H, np.int64)
    cnt_x = np.zeros(W, np.int64)
    n = 0
    for a in range(1, D - 1):
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                if lab[z0 + a - 1, y0 + i - 1, x0 + j - 1] == lid:
                    m[a, i, j] = 1.0
                    cnt_z[a] += 1
                    cnt_y[i] += 1
                    cnt_x[j] += 1
                    n += 1
    if use_mean:
        mz, my, mx = _mean_rank(cnt_z, n), _mean_rank(cnt_y, n), _mean_rank(cnt_x, n)
    else:
        mz, my, mx = _median_rank(cnt_z, n), _median_rank(cnt_y, n), _median_rank(cnt_x, n)
    best = np.inf
    cz, cy, cx = 1, 1, 1
    for a in range(1, D - 1):
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                if m[a, i, j] > 0:
                    d = (a - mz) ** 2 + (i - my) ** 2 + (j - mx) ** 2
                    if d < best:
                        best, cz, cy, cx = d, a, i, j
    if skip_thin and _F64_ASPECT_3D * n ** (2.0 / 3.0) < (D + H + W - 6) ** 2:
        return False
    niter = niter_fixed if niter_fixed > 0 else 2 * (D + H + W)
    T = np.full((D, H, W), c27)
    T[:] = 0
    _diffuse_3d(T, m, cz, cy, cx, niter, c27)
    _write_3d(T, m, z0, y0, x0, out)
    return True


@njit(cache=True, nogil=True)
def _write_3d(T, m, z0, y0, x0, out):
    """3D version of :func:`_write_2d`."""
    D, H, W = T.shape
    for a in range(1, D - 1):
        for i in range(1, H - 1):
            for j in range(1, W - 1):
                if m[a, i, j] > 0:
                    dz = np.float64(T[a + 1, i, j]) - T[a - 1, i, j]
                    dy = np.float64(T[a, i + 1, j]) - T[a, i - 1, j]
                    dx = np.float64(T[a, i, j + 1]) - T[a, i, j - 1]
                    nrm = np.sqrt(dz * dz + dy * dy + dx * dx)
                    if nrm > 0:
                        out[0, z0 + a - 1, y0 + i - 1, x0 + j - 1] = dz / nrm
                        out[1, z0 + a - 1, y0 + i - 1, x0 + j - 1] = dy / nrm
                        out[2, z0 + a - 1, y0 + i - 1, x0 + j - 1] = dx / nrm


@njit(cache=True, nogil=True)
def flows_2d(lab, ids, lo, hi, start, stop, niter_fixed, use_mean, c9, skip_thin, todo, out):
    """Unit flows of objects ``start..stop-1`` (ids, boxes ``lo``/``hi``) into ``out``;
    heat in the dtype of ``c9``; thin objects skipped when ``skip_thin`` get todo = 1."""
    for p in range(start, stop):
        if not _object_2d(lab, ids[p], lo[p, 0], lo[p, 1], hi[p, 0], hi[p, 1], niter_fixed,
                          use_mean, c9, skip_thin, out):
            todo[p] = 1


@njit(cache=True, nogil=True)
def flows_3d(lab, ids, lo, hi, start, stop, niter_fixed, use_mean, c27, skip_thin, todo, out):
    """3D version of :func:`flows_2d`."""
    for p in range(start, stop):
        if not _object_3d(lab, ids[p], lo[p, 0], lo[p, 1], lo[p, 2], hi[p, 0], hi[p, 1],
                          hi[p, 2], niter_fixed, use_mean, c27, skip_thin, out):
            todo[p] = 1
