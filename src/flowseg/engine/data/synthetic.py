"""Seeded generator of realistic synthetic cell images with ground-truth labels.

Cells are star-shaped blobs with random low-frequency boundary harmonics, optional
elongation and random orientation, grown from well-spread seeds; where two blobs overlap
the pixel goes to the cell whose (shape-normalised) centre is closest, so neighbours touch
along irregular borders, as in dense tissue.  :func:`render` turns labels into a
fluorescence-like or phase-contrast-like image with a cytoplasm channel and an optional
nuclear channel, blur, uneven background and shot noise.

Everything is deterministic given ``seed``.  Tests across the project use this module
instead of committed images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SyntheticSample", "make_labels", "render", "make_sample", "sample_diameter"]


@dataclass
class SyntheticSample:
    """An image with its ground truth.

    Attributes
    ----------
    image : np.ndarray
        float32, channels last ``(*shape, C)`` with C = 1 (cytoplasm) or 2 (cytoplasm,
        nuclei); for ``kind="nuclei"`` a single nuclear channel.
    labels : np.ndarray
        int32 instance labels, 0 = background.
    nuclei : np.ndarray
        int32 labels of the nuclei (same ids as the cells that contain them).
    diameter : float
        Median equivalent-circle (sphere) diameter of the objects in pixels.
    """

    image: np.ndarray
    labels: np.ndarray
    nuclei: np.ndarray
    diameter: float


def _seeds(shape: Sequence[int], spacing: float, n_max: int, rng: np.random.Generator,
           margin: float) -> np.ndarray:
    """Well-spread seeds: a jittered hexagonal (2D) or staggered cubic (3D) lattice.

    Jitter of +-0.22 spacing keeps neighbours at least ~0.55 spacing apart; 8 % of the
    lattice points are dropped at random so the packing is not perfectly regular.
    """
    ndim = len(shape)
    axes = [np.arange(-margin, s + margin, spacing * (0.866 if k == 0 else 1.0))
            for k, s in enumerate(shape)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, ndim)
    row = np.round((grid[:, 0] + margin) / (spacing * 0.866)).astype(int)
    grid[:, -1] += (row % 2) * spacing / 2
    if ndim == 3:
        grid[:, 1] += (row % 2) * spacing / 2
    grid += rng.uniform(-0.22, 0.22, grid.shape) * spacing
    keep = rng.random(len(grid)) > 0.08
    grid = grid[keep]
    rng.shuffle(grid)
    return grid[:n_max]


def _radius_2d(theta: np.ndarray, coef: np.ndarray, phase: np.ndarray) -> np.ndarray:
    r = np.ones_like(theta)
    for k in range(coef.shape[0]):
        r += coef[k] * np.cos((k + 2) * theta + phase[k])
    return r


def make_labels(
    shape: Sequence[int] = (256, 256),
    diameter: float = 30.0,
    *,
    density: float = 0.85,
    elongation: float = 1.0,
    irregularity: float = 0.12,
    size_jitter: float = 0.15,
    n_cells: Optional[int] = None,
    seed: int = 0,
) -> np.ndarray:
    """Make touching, irregular 2D or 3D cell labels.

    Parameters
    ----------
    shape : sequence of int
        Output shape, 2 or 3 dimensions.
    diameter : float
        Typical cell diameter in pixels (before elongation).
    density : float
        Seed spacing as a fraction of ``diameter``; < 1 makes cells touch, > 1.3 leaves gaps.
    elongation : float
        Ratio of long to short axis (1 = round).  Each cell gets a random orientation.
    irregularity : float
        Amplitude of the boundary harmonics (0 = ellipses).
    size_jitter : float
        Relative standard deviation of the cell sizes.
    n_cells : int, optional
        Maximum number of cells (default: as many as fit).
    seed : int
        Random seed.

    Returns
    -------
    np.ndarray
        int32 labels, ids 1..N consecutive.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must have 2 or 3 dimensions, got {shape}")
    if diameter <= 2:
        raise ValueError(f"diameter must be > 2 pixels, got {diameter}")
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    spacing = diameter * density * (elongation ** 0.5 if elongation > 1 else 1.0)
    vol = float(np.prod(shape))
    cap = int(vol / (spacing ** ndim) * (1.3 if ndim == 2 else 1.6)) + 1
    n_max = cap if n_cells is None else min(int(n_cells), cap)
    centers = _seeds(shape, spacing, n_max, rng, margin=0.0)
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.int32)
    for i, c in enumerate(centers):
        r0 = 0.5 * diameter * float(np.clip(1 + size_jitter * rng.standard_normal(), 0.6, 1.5))
        ax = np.ones(ndim)
        ax[0] = elongation ** 0.5
        ax[1:] = 1.0 / elongation ** (0.5 / (ndim - 1))
        rot = _random_rotation(ndim, rng)
        ext = r0 * ax.max() * (1 + 3 * irregularity) + 2
        lo = np.maximum(np.floor(c - ext).astype(int), 0)
        hi = np.minimum(np.ceil(c + ext).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        d = np.stack([g - cc for g, cc in zip(grids, c)], -1) @ rot  # into the cell frame
        d = d / (r0 * ax)
        rho = np.sqrt((d ** 2).sum(-1))
        nh = 4
        coef = irregularity * rng.standard_normal(nh) / np.arange(1, nh + 1)
        phase = rng.uniform(0, 2 * np.pi, nh)
        theta = np.arctan2(d[..., 1], d[..., 0])
        rr = _radius_2d(theta, coef, phase)
        if ndim == 3:
            coef2 = irregularity * rng.standard_normal(2)
            phase2 = rng.uniform(0, 2 * np.pi, 2)
            phi = np.arccos(np.clip(d[..., 2] / np.maximum(rho, 1e-6), -1, 1))
            rr = (rr + coef2[0] * np.cos(2 * phi + phase2[0])
                  + coef2[1] * np.cos(3 * phi + phase2[1]))
        score = (rho / np.maximum(rr, 0.3)).astype(np.float32)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        sub_best = best[sl]
        win = (score < 1.0) & (score < sub_best)
        sub_best[win] = score[win]
        labels[sl][win] = i + 1
    return _clean(labels)


def _random_rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    if ndim == 2:
        a = rng.uniform(0, np.pi)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _clean(labels: np.ndarray, min_size: int = 20) -> np.ndarray:
    """Keep the largest connected piece of each label, drop tiny ones, relabel 1..N."""
    out = np.zeros_like(labels)
    objs = ndi.find_objects(labels)
    nxt = 1
    for i, sl in enumerate(objs):
        if sl is None:
            continue
        m = labels[sl] == i + 1
        cc, n = ndi.label(m)
        if n > 1:
            sizes = np.bincount(cc.ravel())[1:]
            m = cc == (1 + int(np.argmax(sizes)))
        if m.sum() < min_size:
            continue
        out[sl][m] = nxt
        nxt += 1
    return out


def sample_diameter(labels: np.ndarray) -> float:
    """Median equivalent-circle (2D) or equivalent-sphere (3D) diameter of the objects."""
    counts = np.bincount(labels.ravel())[1:]
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    if labels.ndim == 3:
        return float(np.median((6 * counts / np.pi) ** (1 / 3)))
    return float(np.median(2 * np.sqrt(counts / np.pi)))


def _nuclei_from_cells(labels: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """A nucleus per cell: the inner part of the cell's distance transform, slightly offset."""
    nuc = np.zeros_like(labels)
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        pad = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = labels[pad] == i + 1
        dt = ndi.distance_transform_edt(m)
        if dt.max() <= 1:
            continue
        nuc[pad][dt > (1 - frac * rng.uniform(0.8, 1.1)) * dt.max()] = i + 1
    return nuc


def render(
    labels: np.ndarray,
    *,
    kind: str = "fluorescence",
    nuclei: Optional[np.ndarray] = None,
    with_nuclei: bool = False,
    noise: float = 1.0,
    blur: float = 1.0,
    background: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """Render a microscopy-like image of ``labels``.

    Parameters
    ----------
    labels : np.ndarray
        2D or 3D int labels.
    kind : {"fluorescence", "phase", "nuclei"}
        ``fluorescence``: bright textured cytoplasm with dimmer borders on a dark uneven
        background; ``phase``: phase-contrast look (dark cell bodies, bright halos, grey
        background); ``nuclei``: bright nuclei (pass the nucleus labels as ``labels``).
    nuclei : np.ndarray, optional
        Nucleus labels for the nuclear channel (computed from ``labels`` if needed).
    with_nuclei : bool
        Add a second (nuclear) channel.
    noise : float
        Shot-noise strength (0 = none).
    blur : float
        Gaussian blur sigma (pixels) of the optics.
    background : float
        Amplitude of the uneven background.
    seed : int
        Random seed.

    Returns
    -------
    np.ndarray
        float32 image, channels last ``(*labels.shape, C)``, values roughly in [0, 1].
    """
    if kind not in ("fluorescence", "phase", "nuclei"):
        raise ValueError(f"unknown kind {kind!r}; use 'fluorescence', 'phase' or 'nuclei'")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    n = int(labels.max())
    fg = labels > 0
    bright = np.concatenate([[0.0], rng.uniform(0.45, 1.0, n)]).astype(np.float32)
    inten = bright[labels]
    texture = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.5)
    texture /= texture.std() + 1e-6
    # distance to the cell border, to shade borders between touching cells
    edges = _boundaries(labels)
    smooth_bg = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32),
                                    max(labels.shape) / 6)
    smooth_bg = (smooth_bg - smooth_bg.min()) / (np.ptp(smooth_bg) + 1e-6)
    if kind == "phase":
        body = np.where(fg, 0.35 - 0.15 * inten + 0.06 * texture, 0.55)
        halo = ndi.gaussian_filter(fg.astype(np.float32), 2.0) - ndi.gaussian_filter(
            fg.astype(np.float32), 0.7)
        img = body + 0.9 * np.clip(-halo, 0, None) - 0.4 * edges
        img = img + background * 0.3 * smooth_bg
    else:
        img = inten * (1 + 0.25 * texture) * fg - 0.35 * edges * fg
        if kind == "fluorescence":
            img = img * (1 + 0.3 * ndi.gaussian_filter(rng.standard_normal(labels.shape), 4)
                         .astype(np.float32))
        img = np.clip(img, 0, None) + 0.08 + background * 0.25 * smooth_bg
    img = ndi.gaussian_filter(img.astype(np.float32), blur) if blur > 0 else img
    chans = [_noisy(img, noise, rng)]
    if with_nuclei and kind != "nuclei":
        if nuclei is None:
            nuclei = _nuclei_from_cells(labels, 0.45, rng)
        nimg = (nuclei > 0).astype(np.float32) * (0.6 + 0.4 * bright[nuclei])
        nimg = ndi.gaussian_filter(nimg, max(blur, 0.5) + 0.5) + 0.05 + 0.1 * smooth_bg
        chans.append(_noisy(nimg, noise, rng))
    return np.stack(chans, -1).astype(np.float32)


def _noisy(img: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    if noise <= 0:
        return img.astype(np.float32)
    photons = 200.0 / noise
    return (rng.poisson(np.clip(img, 0, None) * photons) / photons).astype(np.float32)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Float mask of pixels on a label border (touching another label or background)."""
    mx = ndi.maximum_filter(labels, size=3)
    mn = ndi.minimum_filter(labels, size=3)
    return ((mx != mn) & (labels > 0)).astype(np.float32)


def make_sample(
    kind: str = "cells",
    shape: Sequence[int] = (256, 256),
    *,
    diameter: Optional[float] = None,
    with_nuclei: bool = True,
    elongation: float = 1.0,
    seed: int = 0,
    **render_kwargs,
) -> SyntheticSample:
    """Labels and a rendered image in one call.

    Parameters
    ----------
    kind : {"cells", "phase", "nuclei"}
        ``cells``: fluorescent cytoplasm (+ nuclear channel if ``with_nuclei``), diameter 30;
        ``phase``: phase-contrast cells (+ nuclear channel if ``with_nuclei``), diameter 30;
        ``nuclei``: sparse-to-touching nuclei, one channel, diameter 17.
    shape : sequence of int
        2D or 3D shape.
    diameter : float, optional
        Object diameter (defaults: 30 for cells, 17 for nuclei).
    with_nuclei : bool
        Add the nuclear channel to cell images.
    elongation : float
        Long/short axis ratio of the objects.
    seed : int
        Random seed.
    **render_kwargs
        Passed to :func:`render` (noise, blur, background).

    Returns
    -------
    SyntheticSample
    """
    rng = np.random.default_rng(seed)
    if kind == "nuclei":
        d = 17.0 if diameter is None else float(diameter)
        lab = make_labels(shape, d, density=1.05, elongation=max(elongation, 1.0) * 1.15,
                          irregularity=0.06, seed=seed)
        img = render(lab, kind="nuclei", seed=seed + 1, **render_kwargs)
        return SyntheticSample(img, lab, lab.copy(), sample_diameter(lab))
    if kind not in ("cells", "phase"):
        raise ValueError(f"unknown sample kind {kind!r}; use 'cells', 'phase' or 'nuclei'")
    d = 30.0 if diameter is None else float(diameter)
    lab = make_labels(shape, d, density=0.95, elongation=elongation, seed=seed)
    nuc = _nuclei_from_cells(lab, 0.45, rng)
    img = render(lab, kind="fluorescence" if kind == "cells" else "phase", nuclei=nuc,
                 with_nuclei=with_nuclei, seed=seed + 1, **render_kwargs)
    return SyntheticSample(img, lab, nuc, sample_diameter(lab))
