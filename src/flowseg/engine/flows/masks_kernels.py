"""numba kernels of :mod:`flowseg.engine.flows.dynamics` after the integration: preparing the
field, the end-point histogram and its seeds, relabelling, hole owners, flow errors.

Arrays are flattened C-order; ``shape`` is an int64 array of the image shape.
"""

from __future__ import annotations

import numpy as np
from numba import njit


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
def prepare(flows, cellprob, threshold, shape, tile):
    """One pass over the image: the flows interleaved ``(*shape, ndim)`` and set to 0 where
    ``cellprob <= threshold``, and the flat indices of the pixels above the threshold,
    listed tile by tile (``tile`` pixels per side) so that the points integrated together
    are neighbours and their trajectories share the cache."""
    ndim = flows.shape[0]
    n = cellprob.shape[0]
    D = shape[0] if ndim == 3 else 1
    H = shape[ndim - 2]
    W = shape[ndim - 1]
    tz = tile if ndim == 3 else 1
    fl = np.zeros(n * ndim, np.float32)
    count = 0
    for f in range(n):
        if cellprob[f] > threshold:
            count += 1
            for c in range(ndim):
                fl[f * ndim + c] = flows[c, f]
    flat = np.empty(count, np.int64)
    j = 0
    for z0 in range(0, D, tz):
        for y0 in range(0, H, tile):
            for x0 in range(0, W, tile):
                for z in range(z0, min(D, z0 + tz)):
                    for y in range(y0, min(H, y0 + tile)):
                        base = (z * H + y) * W
                        for x in range(x0, min(W, x0 + tile)):
                            if cellprob[base + x] > threshold:
                                flat[j] = base + x
                                j += 1
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


@njit(cache=True, nogil=True)
def flat_to_coords(flat, shape):
    """``(ndim, n)`` int32 coordinates of flat C-order indices."""
    ndim = shape.shape[0]
    out = np.empty((ndim, flat.shape[0]), np.int32)
    for k in range(flat.shape[0]):
        f = flat[k]
        for d in range(ndim - 1, -1, -1):
            out[d, k] = f % shape[d]
            f //= shape[d]
    return out


@njit(cache=True, nogil=True)
def apply_fill(masks, bg, owner):
    """Set, in place, every pixel of background component ``c`` to ``owner[c]`` if > 0."""
    for f in range(masks.shape[0]):
        c = bg[f]
        if c > 0 and owner[c] > 0:
            masks[f] = owner[c]
