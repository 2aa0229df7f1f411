"""numba kernels of :mod:`flowseg.engine.dynamics` (flows -> masks).

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


@njit(cache=True, nogil=True)
def prepare(flows, cellprob, threshold):
    """One pass over the image: the flows interleaved ``(*shape, ndim)`` and set to 0 where
    ``cellprob <= threshold``, and the flat indices of the pixels above the threshold."""
    ndim = flows.shape[0]
    n = cellprob.shape[0]
    fl = np.zeros(n * ndim, np.float32)
    count = 0
    for f in range(n):
        if cellprob[f] > threshold:
            count += 1
    flat = np.empty(count, np.int64)
    j = 0
    for f in range(n):
        if cellprob[f] > threshold:
            flat[j] = f
            j += 1
            for c in range(ndim):
                fl[f * ndim + c] = flows[c, f]
    return fl, flat


@njit(cache=True, nogil=True)
def end_bins(ends, shape):
    """Flat bin index of every end point (coordinates truncated; they are >= 0)."""
    ndim = ends.shape[0]
    n = ends.shape[1]
    out = np.empty(n, np.int64)
    for k in range(n):
        f = 0
        for d in range(ndim):
            f = f * shape[d] + min(np.int64(ends[d, k]), shape[d] - 1)
        out[k] = f
    return out


@njit(cache=True, nogil=True)
def error_sums(masks, own, given, n):
    """Per mask id ``1..n``: mean over its pixels of sum_c (own - given)^2."""
    ndim = own.shape[0]
    sums = np.zeros(n + 1, np.float64)
    cnt = np.zeros(n + 1, np.int64)
    for f in range(masks.shape[0]):
        m = masks[f]
        if m == 0:
            continue
        acc = 0.0
        for c in range(ndim):
            d = own[c, f] - given[c, f]
            acc += d * d
        sums[m] += acc
        cnt[m] += 1
    out = np.zeros(n, np.float32)
    for i in range(1, n + 1):
        if cnt[i] > 0:
            out[i - 1] = sums[i] / cnt[i]
    return out
