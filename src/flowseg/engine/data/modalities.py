"""More microscope looks for synthetic training images: phase contrast with halos, DIC
relief, brightfield and H&E-like stained tissue.

:mod:`flowseg.engine.data.synthetic` makes the labels (touching, irregular, optionally
elongated cells) and two simple renderings.  This module renders the same labels through a
crude optical model instead: each cell is a dome of optical path length (thickest in the
middle, with a thicker nucleus and some texture), and

* ``"phase_halo"``: phase contrast, the path length minus its blurred copy -- dark cell bodies
  inside bright halos, the halo width random;
* ``"dic"``: differential interference contrast, the derivative of the path length along a
  random shear direction -- cells in relief, one side bright and the other dark, the middle
  as grey as the background (the hard case for intensity-based methods);
* ``"brightfield"``: absorption, ``exp(-a * path)``, slightly defocused -- faint dark cells;
* ``"stained"``: H&E-like RGB tissue: hematoxylin-dark nuclei (the labels) in pink eosin
  texture, ``(H, W, 3)``.

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from .synthetic import (
    SyntheticSample,
    _boundaries,
    _noisy,
    _nuclei_from_cells,
    make_labels,
    sample_diameter,
)

__all__ = ["MODALITIES", "optical_path", "render_modality", "make_modality_sample"]

#: the looks :func:`render_modality` knows
MODALITIES = ("phase_halo", "dic", "brightfield", "stained")


def optical_path(labels: np.ndarray, rng: np.random.Generator,
                 nuclei: Optional[np.ndarray] = None) -> np.ndarray:
    """Optical path length of 2D cells: a dome per cell (0 outside), heights vary by cell.

    Parameters
    ----------
    labels : np.ndarray
        2D int labels.
    rng : np.random.Generator
        Source of the per-cell heights and the texture.
    nuclei : np.ndarray, optional
        Nucleus labels: their pixels are thicker.

    Returns
    -------
    np.ndarray
        float32, about 0-1.5.
    """
    labels = np.asarray(labels)
    n = int(labels.max())
    inside = (labels > 0) & (_boundaries(labels) == 0)
    dt = ndi.distance_transform_edt(inside).astype(np.float32)
    peak = np.ones(n + 1, np.float32)
    if n:
        peak[1:] = np.maximum(ndi.maximum(dt, labels, np.arange(1, n + 1)), 1.0)
    height = np.concatenate([[0.0], rng.uniform(0.5, 1.0, n)]).astype(np.float32)
    dome = np.sqrt(np.clip(dt / peak[labels], 0, 1)) * height[labels]
    tex = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 1.2)
    dome *= 1 + 0.25 * tex / (tex.std() + 1e-6)
    if nuclei is not None:
        dome += 0.3 * ndi.gaussian_filter((nuclei > 0).astype(np.float32), 1.0) * (labels > 0)
    return np.clip(dome, 0, None).astype(np.float32)


def render_modality(labels: np.ndarray, kind: str, *, nuclei: Optional[np.ndarray] = None,
                    noise: float = 1.0, blur: float = 1.0, seed: int = 0) -> np.ndarray:
    """Render 2D ``labels`` as a ``kind`` image (see :data:`MODALITIES`).

    Parameters
    ----------
    labels : np.ndarray
        2D int labels (for ``"stained"``: the nuclei).
    kind : str
        One of :data:`MODALITIES`.
    nuclei : np.ndarray, optional
        Nucleus labels (thicker path length; phase / DIC / brightfield).
    noise, blur : float
        Shot-noise strength (0: none) and optical blur sigma.
    seed : int
        Random seed.

    Returns
    -------
    np.ndarray
        float32 ``(H, W, 1)``, or ``(H, W, 3)`` RGB for ``"stained"``; values about 0-1.

    Raises
    ------
    ValueError
        Unknown ``kind`` or labels that are not 2D.
    """
    if kind not in MODALITIES:
        raise ValueError(f"unknown modality {kind!r}; use one of {', '.join(MODALITIES)}")
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"modality images are 2D; got labels of shape {labels.shape}")
    rng = np.random.default_rng(seed)
    if kind == "stained":
        return _stained(labels, rng, noise, blur)
    opl = optical_path(labels, rng, nuclei)
    opl = ndi.gaussian_filter(opl, max(blur, 0.3))
    if kind == "phase_halo":
        halo = float(rng.uniform(2.0, 6.0))
        img = 0.55 - 0.45 * (opl - ndi.gaussian_filter(opl, halo)) - 0.1 * opl
    elif kind == "dic":
        a = float(rng.uniform(0, 2 * np.pi))
        gy, gx = np.gradient(opl)
        img = 0.5 + float(rng.uniform(1.5, 3.0)) * (np.sin(a) * gy + np.cos(a) * gx)
    else:  # brightfield
        img = np.exp(-float(rng.uniform(0.3, 0.8)) * opl)
        img = ndi.gaussian_filter(img, float(rng.uniform(0.5, 2.0)))
    field = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32),
                                max(labels.shape) / 5)
    img = img * (1 + 0.15 * field / (np.abs(field).max() + 1e-6))
    return _noisy(np.clip(img, 0, None), noise, rng)[..., None]


def _stained(nuc: np.ndarray, rng: np.random.Generator, noise: float, blur: float
             ) -> np.ndarray:
    """H&E-like RGB: optical densities of hematoxylin (nuclei) and eosin (texture)."""
    shape = nuc.shape
    tex = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
    tex = (tex - tex.min()) / (np.ptp(tex) + 1e-6)
    chrom = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 0.8)
    n = int(nuc.max())
    dens = np.concatenate([[0.0], rng.uniform(0.6, 1.4, n)]).astype(np.float32)
    hema = dens[nuc] * (1 + 0.2 * chrom) + 0.08 * tex
    eosin = 0.3 + 0.5 * tex * (nuc == 0)
    # stain colours (optical density per RGB channel), jittered per image
    h_od = np.array([0.65, 0.70, 0.29]) * rng.uniform(0.7, 1.3, 3)
    e_od = np.array([0.07, 0.99, 0.11]) * rng.uniform(0.7, 1.3, 3)
    od = hema[..., None] * h_od + eosin[..., None] * e_od
    rgb = np.exp(-od.astype(np.float32) * float(rng.uniform(0.8, 1.6)))
    if blur > 0:
        rgb = ndi.gaussian_filter(rgb, (blur, blur, 0))
    return np.stack([_noisy(rgb[..., k], noise, rng) for k in range(3)], -1)


def make_modality_sample(kind: str, shape: Sequence[int] = (256, 256), *,
                         diameter: Optional[float] = None, elongation: float = 1.0,
                         noise: float = 1.0, blur: float = 1.0, seed: int = 0
                         ) -> SyntheticSample:
    """Labels and a ``kind`` rendering (see :data:`MODALITIES`) in one call.

    Parameters
    ----------
    kind : str
        ``"phase_halo"``, ``"dic"``, ``"brightfield"`` (whole cells, default diameter 30)
        or ``"stained"`` (nuclei in tissue, default diameter 17; RGB image).
    shape : sequence of int
        2D shape.
    diameter, elongation : float
        Object diameter (pixels) and long / short axis ratio.
    noise, blur : float
        See :func:`render_modality`.
    seed : int
        Random seed.

    Returns
    -------
    SyntheticSample
        ``image`` ``(H, W, 1)`` (``(H, W, 3)`` for ``"stained"``), labels, nuclei, diameter.
    """
    if kind not in MODALITIES:
        raise ValueError(f"unknown modality {kind!r}; use one of {', '.join(MODALITIES)}")
    rng = np.random.default_rng(seed)
    if kind == "stained":
        d = 17.0 if diameter is None else float(diameter)
        lab = make_labels(shape, d, density=float(rng.uniform(1.0, 1.5)),
                          elongation=max(elongation, 1.0) * 1.2, irregularity=0.1, seed=seed)
        img = render_modality(lab, kind, noise=noise, blur=blur, seed=seed + 1)
        return SyntheticSample(img, lab, lab.copy(), sample_diameter(lab))
    d = 30.0 if diameter is None else float(diameter)
    lab = make_labels(shape, d, density=float(rng.uniform(0.9, 1.4)), elongation=elongation,
                      seed=seed)
    nuc = _nuclei_from_cells(lab, 0.45, rng)
    img = render_modality(lab, kind, nuclei=nuc, noise=noise, blur=blur, seed=seed + 1)
    return SyntheticSample(img, lab, nuc, sample_diameter(lab))
