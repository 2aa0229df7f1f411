"""numba kernels of :mod:`flowseg.engine.dynamics` (flows -> masks).

All kernels take flattened C-order arrays plus the image shape; flows are interleaved
``(*shape, ndim)`` float32 so the components of one pixel share a cache line.  Indices are
computed as unsigned integers so numba skips its negative-index checks.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_BLOCK = 256  # points integrated together: independent work hides the per-step latency

# Early stop.  Following unit flows, a point runs to its cell's sink and then settles,
# geometrically, on a fixed point or (most often) a period-2 oscillation around it.  A point
# whose position repeats within ``tol`` after 1 step (fixed point) or 2 steps (2-cycle) is
# stopped and placed where it would be after the remaining steps (for a 2-cycle: the phase
# matching the parity of the remaining steps).  With tol = 0 every point runs ``niter``
# steps (the plain Euler integration).


@njit(cache=True, parallel=True, fastmath=True)
def follow_2d(fl, H, W, py, px, niter, tol):
    """Euler-integrate points ``(py, px)`` in place through the bilinear flow ``fl``.

    ``fl`` is the flattened ``(H, W, 2)`` field; each step moves a point by the flow
    interpolated at its position and clips it to the image.  Returns the number of
    point-steps done.
    """
    n = py.shape[0]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    ymax, xmax = np.float32(H - 1), np.float32(W - 1)
    zero, one = np.float32(0.0), np.float32(1.0)
    w2 = np.uint64(2 * W)
    u0, u1, u2 = np.uint64(0), np.uint64(1), np.uint64(2)
    tol = np.float32(tol)
    work = np.zeros(nblocks, np.int64)
    for b in prange(nblocks):
        s = b * _BLOCK
        e = min(n, s + _BLOCK)
        act = np.arange(s, e)
        qy = np.full(e - s, np.float32(-1e9))  # positions one step ago
        qx = np.full(e - s, np.float32(-1e9))
        na = e - s
        t = 0
        while t < niter and na > 0:
            work[b] += na
            k2 = 0
            while k2 < na:
                k = act[k2]
                y = py[k]
                x = px[k]
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
                j = k - s
                if abs(ny - y) <= tol and abs(nx - x) <= tol:
                    py[k] = ny
                    px[k] = nx
                    na -= 1
                    act[k2] = act[na]
                elif abs(ny - qy[j]) <= tol and abs(nx - qx[j]) <= tol:
                    if (niter - t - 1) % 2 == 0:
                        py[k] = ny
                        px[k] = nx
                    na -= 1
                    act[k2] = act[na]
                else:
                    qy[j] = y
                    qx[j] = x
                    py[k] = ny
                    px[k] = nx
                    k2 += 1
            t += 1
    return work.sum()


@njit(cache=True, parallel=True, fastmath=True)
def follow_3d(fl, D, H, W, pz, py, px, niter, tol):
    """3D version of :func:`follow_2d` (trilinear interpolation of ``(D, H, W, 3)``)."""
    n = pz.shape[0]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    zmax, ymax, xmax = np.float32(D - 1), np.float32(H - 1), np.float32(W - 1)
    zero, one = np.float32(0.0), np.float32(1.0)
    sx, sy, sz = np.uint64(3), np.uint64(3 * W), np.uint64(3 * W * H)
    u0, u1, u2 = np.uint64(0), np.uint64(1), np.uint64(2)
    tol = np.float32(tol)
    work = np.zeros(nblocks, np.int64)
    for b in prange(nblocks):
        s = b * _BLOCK
        e = min(n, s + _BLOCK)
        act = np.arange(s, e)
        qz = np.full(e - s, np.float32(-1e9))
        qy = np.full(e - s, np.float32(-1e9))
        qx = np.full(e - s, np.float32(-1e9))
        na = e - s
        t = 0
        while t < niter and na > 0:
            work[b] += na
            k2 = 0
            while k2 < na:
                k = act[k2]
                z = pz[k]
                y = py[k]
                x = px[k]
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
                a000, a001 = gz * gy * gx, gz * gy * fx
                a010, a011 = gz * fy * gx, gz * fy * fx
                a100, a101 = fz * gy * gx, fz * gy * fx
                a110, a111 = fz * fy * gx, fz * fy * fx
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
                j = k - s
                if abs(nz - z) <= tol and abs(ny - y) <= tol and abs(nx - x) <= tol:
                    pz[k] = nz
                    py[k] = ny
                    px[k] = nx
                    na -= 1
                    act[k2] = act[na]
                elif (abs(nz - qz[j]) <= tol and abs(ny - qy[j]) <= tol
                      and abs(nx - qx[j]) <= tol):
                    if (niter - t - 1) % 2 == 0:
                        pz[k] = nz
                        py[k] = ny
                        px[k] = nx
                    na -= 1
                    act[k2] = act[na]
                else:
                    qz[j] = z
                    qy[j] = y
                    qx[j] = x
                    pz[k] = nz
                    py[k] = ny
                    px[k] = nx
                    k2 += 1
            t += 1
    return work.sum()


@njit(cache=True)
def histogram(bins, size):
    """Counts of the flat bin indices ``bins`` over ``size`` bins (int32)."""
    h = np.zeros(size, np.int32)
    for k in range(bins.shape[0]):
        h[bins[k]] += 1
    return h


@njit(cache=True)
def find_seeds(h, shape, min_count, radius):
    """Flat indices of the bins with ``h > min_count`` that are maxima of their
    ``(2 radius + 1)``-wide neighbourhood (ties count as maxima)."""
    ndim = shape.shape[0]
    D = shape[0] if ndim == 3 else 1
    H = shape[ndim - 2]
    W = shape[ndim - 1]
    out = np.empty(h.shape[0], np.int64)
    n = 0
    for f in range(h.shape[0]):
        v = h[f]
        if v <= min_count:
            continue
        x = f % W
        y = (f // W) % H
        z = f // (W * H)
        ok = True
        for zz in range(max(0, z - radius), min(D, z + radius + 1)):
            for yy in range(max(0, y - radius), min(H, y + radius + 1)):
                base = (zz * H + yy) * W
                for xx in range(max(0, x - radius), min(W, x + radius + 1)):
                    if h[base + xx] > v:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            out[n] = f
            n += 1
    return out[:n]


@njit(cache=True)
def grow_seeds(h, shape, seeds, min_count, radius, n_grow):
    """Label map over the bins: each seed grows ``n_grow`` times over its 3x3(x3)
    neighbours holding more than ``min_count`` end points, inside the box of half-width
    ``radius`` around it.  Seeds are processed in the given order; later ones overwrite."""
    ndim = shape.shape[0]
    D = shape[0] if ndim == 3 else 1
    H = shape[ndim - 2]
    W = shape[ndim - 1]
    L = 2 * radius + 1
    Lz = L if ndim == 3 else 1
    rz = radius if ndim == 3 else 0
    M = np.zeros(h.shape[0], np.int32)
    cur = np.zeros((Lz, L, L), np.uint8)
    nxt = np.zeros((Lz, L, L), np.uint8)
    for k in range(seeds.shape[0]):
        f = seeds[k]
        x0 = f % W - radius
        y0 = (f // W) % H - radius
        z0 = f // (W * H) - rz
        cur[:] = 0
        cur[rz, radius, radius] = 1
        for _ in range(n_grow):
            nxt[:] = 0
            for a in range(Lz):
                for i in range(L):
                    for j in range(L):
                        if cur[a, i, j] == 0:
                            continue
                        for a2 in range(max(0, a - 1), min(Lz, a + 2)):
                            for i2 in range(max(0, i - 1), min(L, i + 2)):
                                for j2 in range(max(0, j - 1), min(L, j + 2)):
                                    nxt[a2, i2, j2] = 1
            for a in range(Lz):
                for i in range(L):
                    for j in range(L):
                        if nxt[a, i, j]:
                            zz, yy, xx = z0 + a, y0 + i, x0 + j
                            if (zz < 0 or zz >= D or yy < 0 or yy >= H or xx < 0
                                    or xx >= W or h[(zz * H + yy) * W + xx] <= min_count):
                                nxt[a, i, j] = 0
            cur, nxt = nxt, cur
        for a in range(Lz):
            for i in range(L):
                for j in range(L):
                    if cur[a, i, j]:
                        M[((z0 + a) * H + y0 + i) * W + x0 + j] = k + 1
    return M


@njit(cache=True)
def hole_owners(masks, bg, nbg, shape):
    """For each background component ``1..nbg`` of ``bg``: the single mask id around it,
    or 0 when it touches the image border or more than one mask."""
    ndim = shape.shape[0]
    D = shape[0] if ndim == 3 else 1
    H = shape[ndim - 2]
    W = shape[ndim - 1]
    owner = np.zeros(nbg + 1, np.int64)
    bad = np.zeros(nbg + 1, np.bool_)
    for f in range(masks.shape[0]):
        c = bg[f]
        if c == 0 or bad[c]:
            continue
        x = f % W
        y = (f // W) % H
        z = f // (W * H)
        if x == 0 or x == W - 1 or y == 0 or y == H - 1 or (ndim == 3 and (z == 0 or z == D - 1)):
            bad[c] = True
            continue
        for d in range(2 * ndim):
            if d == 0:
                g = f - 1
            elif d == 1:
                g = f + 1
            elif d == 2:
                g = f - W
            elif d == 3:
                g = f + W
            elif d == 4:
                g = f - W * H
            else:
                g = f + W * H
            lab = masks[g]
            if lab > 0:
                if owner[c] == 0:
                    owner[c] = lab
                elif owner[c] != lab:
                    bad[c] = True
    for c in range(nbg + 1):
        if bad[c]:
            owner[c] = 0
    return owner


@njit(cache=True)
def relabel_raster(masks, keep):
    """Relabel in place to ``1..n`` in raster order of first appearance, zeroing ids with
    ``keep[id] == False``; returns n."""
    new = np.zeros(keep.shape[0], np.int32)
    n = 0
    for f in range(masks.shape[0]):
        v = masks[f]
        if v == 0:
            continue
        if not keep[v]:
            masks[f] = 0
            continue
        if new[v] == 0:
            n += 1
            new[v] = n
        masks[f] = new[v]
    return n
