"""numba kernels of :mod:`flowseg.engine.dynamics`: Euler integration of the points.

All kernels take flattened C-order arrays plus the image shape; flows are interleaved
``(*shape, ndim)`` float32 so the components of one pixel share a cache line.  Indices are
computed as unsigned integers so numba skips its negative-index checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_BLOCK = 256  # points integrated together: independent work hides the per-step latency

# Early stop.  Following unit flows, a point runs to its cell's sink and then settles,
# geometrically, on a fixed point or (most often) a period-2 oscillation around it.  A point
# whose position repeats within ``tol`` after 1 step (fixed point) or 2 steps (2-cycle) is
# stopped and placed where it would be after the remaining steps (for a 2-cycle: the phase
# matching the parity of the remaining steps).  With tol = 0 every point runs ``niter``
# steps (the plain Euler integration).


@njit(cache=True, nogil=True, fastmath=True)
def follow_2d(fl, H, W, py, px, start, stop, niter, tol):
    """Euler-integrate points ``start..stop-1`` of ``(py, px)`` in place through the
    bilinear flow ``fl`` (the flattened ``(H, W, 2)`` field): each step moves a point by
    the flow interpolated at its position and clips it to the image.  Returns the number
    of point-steps computed."""
    ymax, xmax = np.float32(H - 1), np.float32(W - 1)
    zero, one = np.float32(0.0), np.float32(1.0)
    w2 = np.uint64(2 * W)
    u0, u1, u2 = np.uint64(0), np.uint64(1), np.uint64(2)
    tol = np.float32(tol)
    work = 0
    # local copies of the active points; finished points are swapped out of the range
    ly = np.empty(_BLOCK, np.float32)
    lx = np.empty(_BLOCK, np.float32)
    qy = np.empty(_BLOCK, np.float32)  # positions one step ago
    qx = np.empty(_BLOCK, np.float32)
    idx = np.empty(_BLOCK, np.int64)
    for s in range(start, stop, _BLOCK):
        na = min(stop, s + _BLOCK) - s
        for k in range(na):
            ly[k] = py[s + k]
            lx[k] = px[s + k]
            qy[k] = np.float32(-1e9)
            qx[k] = np.float32(-1e9)
            idx[k] = s + k
        t = 0
        while t < niter and na > 0:
            work += na
            odd = (niter - t - 1) % 2 == 1
            k = 0
            while k < na:
                y = ly[k]
                x = lx[k]
                jy = np.int64(y)
                jx = np.int64(x)
                fy = y - np.float32(jy)
                fx = x - np.float32(jx)
                dy1 = w2 if jy < H - 1 else u0
                dx1 = u2 if jx < W - 1 else u0
                i00 = np.uint64(jy) * w2 + np.uint64(jx) * u2
                i01 = i00 + dx1
                i10 = i00 + dy1
                i11 = i10 + dx1
                gy = one - fy
                gx = one - fx
                a00, a01, a10, a11 = gy * gx, gy * fx, fy * gx, fy * fx
                vy = a00 * fl[i00] + a01 * fl[i01] + a10 * fl[i10] + a11 * fl[i11]
                vx = (a00 * fl[i00 + u1] + a01 * fl[i01 + u1] + a10 * fl[i10 + u1]
                      + a11 * fl[i11 + u1])
                ny = min(ymax, max(zero, y + vy))
                nx = min(xmax, max(zero, x + vx))
                fixed = abs(ny - y) <= tol and abs(nx - x) <= tol
                cycle = abs(ny - qy[k]) <= tol and abs(nx - qx[k]) <= tol
                if fixed or cycle:
                    if cycle and not fixed and odd:
                        ny, nx = y, x
                    py[idx[k]] = ny
                    px[idx[k]] = nx
                    na -= 1
                    ly[k], lx[k], qy[k], qx[k], idx[k] = ly[na], lx[na], qy[na], qx[na], idx[na]
                else:
                    qy[k] = y
                    qx[k] = x
                    ly[k] = ny
                    lx[k] = nx
                    k += 1
            t += 1
        for k in range(na):
            py[idx[k]] = ly[k]
            px[idx[k]] = lx[k]
    return work


@njit(cache=True, nogil=True, fastmath=True)
def follow_3d(fl, D, H, W, pz, py, px, start, stop, niter, tol):
    """3D version of :func:`follow_2d` (trilinear interpolation of ``(D, H, W, 3)``)."""
    zmax, ymax, xmax = np.float32(D - 1), np.float32(H - 1), np.float32(W - 1)
    zero, one = np.float32(0.0), np.float32(1.0)
    sx, sy, sz = np.uint64(3), np.uint64(3 * W), np.uint64(3 * W * H)
    u0, u1, u2 = np.uint64(0), np.uint64(1), np.uint64(2)
    tol = np.float32(tol)
    work = 0
    lz = np.empty(_BLOCK, np.float32)
    ly = np.empty(_BLOCK, np.float32)
    lx = np.empty(_BLOCK, np.float32)
    qz = np.empty(_BLOCK, np.float32)
    qy = np.empty(_BLOCK, np.float32)
    qx = np.empty(_BLOCK, np.float32)
    idx = np.empty(_BLOCK, np.int64)
    for s in range(start, stop, _BLOCK):
        na = min(stop, s + _BLOCK) - s
        for k in range(na):
            lz[k] = pz[s + k]
            ly[k] = py[s + k]
            lx[k] = px[s + k]
            qz[k] = np.float32(-1e9)
            qy[k] = np.float32(-1e9)
            qx[k] = np.float32(-1e9)
            idx[k] = s + k
        t = 0
        while t < niter and na > 0:
            work += na
            odd = (niter - t - 1) % 2 == 1
            k = 0
            while k < na:
                z = lz[k]
                y = ly[k]
                x = lx[k]
                jz = np.int64(z)
                jy = np.int64(y)
                jx = np.int64(x)
                fz = z - np.float32(jz)
                fy = y - np.float32(jy)
                fx = x - np.float32(jx)
                dz1 = sz if jz < D - 1 else u0
                dy1 = sy if jy < H - 1 else u0
                dx1 = sx if jx < W - 1 else u0
                i000 = np.uint64(jz) * sz + np.uint64(jy) * sy + np.uint64(jx) * sx
                i001 = i000 + dx1
                i010 = i000 + dy1
                i011 = i010 + dx1
                i100 = i000 + dz1
                i101 = i100 + dx1
                i110 = i100 + dy1
                i111 = i110 + dx1
                gz, gy, gx = one - fz, one - fy, one - fx
                b00, b01, b10, b11 = gz * gy, gz * fy, fz * gy, fz * fy
                a000, a001 = b00 * gx, b00 * fx
                a010, a011 = b01 * gx, b01 * fx
                a100, a101 = b10 * gx, b10 * fx
                a110, a111 = b11 * gx, b11 * fx
                vz = (a000 * fl[i000] + a001 * fl[i001] + a010 * fl[i010] + a011 * fl[i011]
                      + a100 * fl[i100] + a101 * fl[i101] + a110 * fl[i110]
                      + a111 * fl[i111])
                vy = (a000 * fl[i000 + u1] + a001 * fl[i001 + u1] + a010 * fl[i010 + u1]
                      + a011 * fl[i011 + u1] + a100 * fl[i100 + u1] + a101 * fl[i101 + u1]
                      + a110 * fl[i110 + u1] + a111 * fl[i111 + u1])
                vx = (a000 * fl[i000 + u2] + a001 * fl[i001 + u2] + a010 * fl[i010 + u2]
                      + a011 * fl[i011 + u2] + a100 * fl[i100 + u2] + a101 * fl[i101 + u2]
                      + a110 * fl[i110 + u2] + a111 * fl[i111 + u2])
                nz = min(zmax, max(zero, z + vz))
                ny = min(ymax, max(zero, y + vy))
                nx = min(xmax, max(zero, x + vx))
                fixed = abs(nz - z) <= tol and abs(ny - y) <= tol and abs(nx - x) <= tol
                cycle = (abs(nz - qz[k]) <= tol and abs(ny - qy[k]) <= tol
                         and abs(nx - qx[k]) <= tol)
                if fixed or cycle:
                    if cycle and not fixed and odd:
                        nz, ny, nx = z, y, x
                    pz[idx[k]] = nz
                    py[idx[k]] = ny
                    px[idx[k]] = nx
                    na -= 1
                    lz[k], ly[k], lx[k] = lz[na], ly[na], lx[na]
                    qz[k], qy[k], qx[k], idx[k] = qz[na], qy[na], qx[na], idx[na]
                else:
                    qz[k] = z
                    qy[k] = y
                    qx[k] = x
                    lz[k] = nz
                    ly[k] = ny
                    lx[k] = nx
                    k += 1
            t += 1
        for k in range(na):
            pz[idx[k]] = lz[k]
            py[idx[k]] = ly[k]
            px[idx[k]] = lx[k]
    return work
