"""numba kernels of :mod:`flowseg.engine.flows.dynamics`: Euler integration of the points.

All kernels take flattened C-order arrays plus the image shape; flows are interleaved
``(*shape, ndim)`` float32 so the components of one pixel share a cache line.  Indices are
computed as unsigned integers so numba skips its negative-index checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BLOCK = 256  # points integrated together: independent work hides the per-step latency
_CHUNK = 4  # steps between convergence checks (the step loop itself stays branch-free)

# Early stop.  Following unit flows, a point runs to its cell's sink and then settles,
# geometrically, on a fixed point or (most often) a period-2 oscillation around it.  Every
# _CHUNK steps, a point whose position repeats within ``tol`` after 1 step (fixed point)
# or 2 steps (2-cycle) is stopped and placed where it would be after the remaining steps
# (for a 2-cycle: the phase matching the parity of the remaining steps).  With tol = 0
# only exact repeats stop, which is the plain Euler integration.


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _step2(fl, H, W, y, x):
    """One Euler step of the point (y, x) through the bilinear interleaved field."""
    jy = np.int64(y)
    jx = np.int64(x)
    fy = y - np.float32(jy)
    fx = x - np.float32(jx)
    w2 = 2 * W
    dy1 = w2 if jy < H - 1 else 0
    dx1 = 2 if jx < W - 1 else 0
    i00 = jy * w2 + jx * 2
    i01 = i00 + dx1
    i10 = i00 + dy1
    i11 = i10 + dx1
    gy = np.float32(1.0) - fy
    gx = np.float32(1.0) - fx
    a00, a01, a10, a11 = gy * gx, gy * fx, fy * gx, fy * fx
    vy = a00 * fl[i00] + a01 * fl[i01] + a10 * fl[i10] + a11 * fl[i11]
    vx = a00 * fl[i00 + 1] + a01 * fl[i01 + 1] + a10 * fl[i10 + 1] + a11 * fl[i11 + 1]
    ny = min(np.float32(H - 1), max(np.float32(0.0), y + vy))
    nx = min(np.float32(W - 1), max(np.float32(0.0), x + vx))
    return ny, nx


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _step3(fl, D, H, W, z, y, x):
    """One Euler step of the point (z, y, x) through the trilinear interleaved field."""
    jz = np.int64(z)
    jy = np.int64(y)
    jx = np.int64(x)
    fz = z - np.float32(jz)
    fy = y - np.float32(jy)
    fx = x - np.float32(jx)
    sy = 3 * W
    sz = 3 * W * H
    dz1 = sz if jz < D - 1 else 0
    dy1 = sy if jy < H - 1 else 0
    dx1 = 3 if jx < W - 1 else 0
    i000 = jz * sz + jy * sy + jx * 3
    i001 = i000 + dx1
    i010 = i000 + dy1
    i011 = i010 + dx1
    i100 = i000 + dz1
    i101 = i100 + dx1
    i110 = i100 + dy1
    i111 = i110 + dx1
    one = np.float32(1.0)
    gz, gy, gx = one - fz, one - fy, one - fx
    b00, b01, b10, b11 = gz * gy, gz * fy, fz * gy, fz * fy
    a000, a001, a010, a011 = b00 * gx, b00 * fx, b01 * gx, b01 * fx
    a100, a101, a110, a111 = b10 * gx, b10 * fx, b11 * gx, b11 * fx
    vz = (a000 * fl[i000] + a001 * fl[i001] + a010 * fl[i010] + a011 * fl[i011]
          + a100 * fl[i100] + a101 * fl[i101] + a110 * fl[i110] + a111 * fl[i111])
    vy = (a000 * fl[i000 + 1] + a001 * fl[i001 + 1] + a010 * fl[i010 + 1]
          + a011 * fl[i011 + 1] + a100 * fl[i100 + 1] + a101 * fl[i101 + 1]
          + a110 * fl[i110 + 1] + a111 * fl[i111 + 1])
    vx = (a000 * fl[i000 + 2] + a001 * fl[i001 + 2] + a010 * fl[i010 + 2]
          + a011 * fl[i011 + 2] + a100 * fl[i100 + 2] + a101 * fl[i101 + 2]
          + a110 * fl[i110 + 2] + a111 * fl[i111 + 2])
    zero = np.float32(0.0)
    nz = min(np.float32(D - 1), max(zero, z + vz))
    ny = min(np.float32(H - 1), max(zero, y + vy))
    nx = min(np.float32(W - 1), max(zero, x + vx))
    return nz, ny, nx


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _corner(j, n):
    """Index offset of plane ``j`` along an axis of length ``n`` and whether it is inside."""
    return (j if 0 <= j < n else 0), (0 <= j < n)


@njit(cache=True, nogil=True, fastmath=True)
def _step3_cp(fl, D, H, W, z, y, x, kz, ky, kx, gain):
    """One step as Cellpose 3.1 takes it in 3D: the flow is sampled at ``p * n / (n - 1) - 0.5``
    along each axis (``grid_sample(align_corners=False)`` on coordinates normalised by
    ``n - 1``; corners outside the volume count as zero flow) and multiplied by ``gain``."""
    qz = z * kz - np.float32(0.5)
    qy = y * ky - np.float32(0.5)
    qx = x * kx - np.float32(0.5)
    jz = np.int64(np.floor(qz))
    jy = np.int64(np.floor(qy))
    jx = np.int64(np.floor(qx))
    fz = qz - np.float32(jz)
    fy = qy - np.float32(jy)
    fx = qx - np.float32(jx)
    vz = np.float32(0.0)
    vy = np.float32(0.0)
    vx = np.float32(0.0)
    for cz in range(2):
        iz, okz = _corner(jz + cz, D)
        wz = fz if cz else np.float32(1.0) - fz
        for cy in range(2):
            iy, oky = _corner(jy + cy, H)
            wy = fy if cy else np.float32(1.0) - fy
            for cx in range(2):
                ix, okx = _corner(jx + cx, W)
                if okz and oky and okx:
                    w = wz * wy * (fx if cx else np.float32(1.0) - fx)
                    i = ((iz * H + iy) * W + ix) * 3
                    vz += w * fl[i]
                    vy += w * fl[i + 1]
                    vx += w * fl[i + 2]
    zero = np.float32(0.0)
    nz = min(np.float32(D - 1), max(zero, z + gain * vz))
    ny = min(np.float32(H - 1), max(zero, y + gain * vy))
    nx = min(np.float32(W - 1), max(zero, x + gain * vx))
    return nz, ny, nx


@njit(cache=True, nogil=True, fastmath=True, inline="always")
def _step3_any(fl, D, H, W, z, y, x, cp, kz, ky, kx, gain):
    if cp:
        return _step3_cp(fl, D, H, W, z, y, x, kz, ky, kx, gain)
    return _step3(fl, D, H, W, z, y, x)


@njit(cache=True, nogil=True, fastmath=True)
def follow_2d(fl, H, W, py, px, start, stop, niter, tol):
    """Euler-integrate points ``start..stop-1`` of ``(py, px)`` in place through the
    bilinear flow ``fl`` (the flattened ``(H, W, 2)`` field): each step moves a point by
    the flow interpolated at its position and clips it to the image.  Returns the number
    of point-steps computed."""
    tol = np.float32(tol)
    work = 0
    ly = np.empty(_BLOCK, np.float32)  # active points (local copies)
    lx = np.empty(_BLOCK, np.float32)
    ay = np.empty(_BLOCK, np.float32)  # positions one step ago
    ax = np.empty(_BLOCK, np.float32)
    by = np.empty(_BLOCK, np.float32)  # positions two steps ago
    bx = np.empty(_BLOCK, np.float32)
    idx = np.empty(_BLOCK, np.int64)
    for s in range(start, stop, _BLOCK):
        na = min(stop, s + _BLOCK) - s
        for k in range(na):
            ly[k] = py[s + k]
            lx[k] = px[s + k]
            idx[k] = s + k
        t = 0
        while t < niter and na > 0:
            S = min(_CHUNK, niter - t)
            work += na * S
            for _ in range(S - 2):
                for k in range(na):
                    ly[k], lx[k] = _step2(fl, H, W, ly[k], lx[k])
            if S >= 2:
                for k in range(na):
                    by[k], bx[k] = ly[k], lx[k]
                    ly[k], lx[k] = _step2(fl, H, W, ly[k], lx[k])
            for k in range(na):
                ay[k], ax[k] = ly[k], lx[k]
                ly[k], lx[k] = _step2(fl, H, W, ly[k], lx[k])
            t += S
            if S < 2 or t >= niter:
                break
            odd = (niter - t) % 2 == 1
            k = 0
            while k < na:
                fixed = abs(ly[k] - ay[k]) <= tol and abs(lx[k] - ax[k]) <= tol
                cycle = abs(ly[k] - by[k]) <= tol and abs(lx[k] - bx[k]) <= tol
                if fixed or cycle:
                    if cycle and not fixed and odd:
                        py[idx[k]], px[idx[k]] = ay[k], ax[k]
                    else:
                        py[idx[k]], px[idx[k]] = ly[k], lx[k]
                    na -= 1
                    ly[k], lx[k], idx[k] = ly[na], lx[na], idx[na]
                else:
                    k += 1
        for k in range(na):
            py[idx[k]] = ly[k]
            px[idx[k]] = lx[k]
    return work


@njit(cache=True, nogil=True, fastmath=True)
def follow_3d(fl, D, H, W, pz, py, px, start, stop, niter, tol, cp=False):
    """3D version of :func:`follow_2d` (trilinear interpolation of ``(D, H, W, 3)``); with
    ``cp`` the steps of :func:`_step3_cp` (Cellpose 3.1 sampling, twice the unit flow)."""
    tol = np.float32(tol)
    kz = np.float32(D / (D - 1)) if D > 1 else np.float32(1.0)
    ky = np.float32(H / (H - 1)) if H > 1 else np.float32(1.0)
    kx = np.float32(W / (W - 1)) if W > 1 else np.float32(1.0)
    gain = np.float32(2.0)
    work = 0
    lz = np.empty(_BLOCK, np.float32)
    ly = np.empty(_BLOCK, np.float32)
    lx = np.empty(_BLOCK, np.float32)
    az = np.empty(_BLOCK, np.float32)
    ay = np.empty(_BLOCK, np.float32)
    ax = np.empty(_BLOCK, np.float32)
    bz = np.empty(_BLOCK, np.float32)
    by = np.empty(_BLOCK, np.float32)
    bx = np.empty(_BLOCK, np.float32)
    idx = np.empty(_BLOCK, np.int64)
    for s in range(start, stop, _BLOCK):
        na = min(stop, s + _BLOCK) - s
        for k in range(na):
            lz[k] = pz[s + k]
            ly[k] = py[s + k]
            lx[k] = px[s + k]
            idx[k] = s + k
        t = 0
        while t < niter and na > 0:
            S = min(_CHUNK, niter - t)
            work += na * S
            for _ in range(S - 2):
                for k in range(na):
                    lz[k], ly[k], lx[k] = _step3_any(fl, D, H, W, lz[k], ly[k], lx[k], cp,
                                                     kz, ky, kx, gain)
            if S >= 2:
                for k in range(na):
                    bz[k], by[k], bx[k] = lz[k], ly[k], lx[k]
                    lz[k], ly[k], lx[k] = _step3_any(fl, D, H, W, lz[k], ly[k], lx[k], cp,
                                                     kz, ky, kx, gain)
            for k in range(na):
                az[k], ay[k], ax[k] = lz[k], ly[k], lx[k]
                lz[k], ly[k], lx[k] = _step3_any(fl, D, H, W, lz[k], ly[k], lx[k], cp,
                                                 kz, ky, kx, gain)
            t += S
            if S < 2 or t >= niter:
                break
            odd = (niter - t) % 2 == 1
            k = 0
            while k < na:
                fixed = (abs(lz[k] - az[k]) <= tol and abs(ly[k] - ay[k]) <= tol
                         and abs(lx[k] - ax[k]) <= tol)
                cycle = (abs(lz[k] - bz[k]) <= tol and abs(ly[k] - by[k]) <= tol
                         and abs(lx[k] - bx[k]) <= tol)
                if fixed or cycle:
                    i = idx[k]
                    if cycle and not fixed and odd:
                        pz[i], py[i], px[i] = az[k], ay[k], ax[k]
                    else:
                        pz[i], py[i], px[i] = lz[k], ly[k], lx[k]
                    na -= 1
                    lz[k], ly[k], lx[k], idx[k] = lz[na], ly[na], lx[na], idx[na]
                else:
                    k += 1
        for k in range(na):
            pz[idx[k]] = lz[k]
            py[idx[k]] = ly[k]
            px[idx[k]] = lx[k]
    return work
