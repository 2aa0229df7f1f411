"""Stain-colour jitter of RGB training images (H&E, brightfield): :func:`stain_gray`.

Training samples are cached as the network's (cytoplasm, nucleus) channels, so colour cannot
be changed per crop (:mod:`flowseg.engine.training.intensity`); a caller that still has the
RGB image renders it to gray with random channel weights instead, once per copy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stain_gray"]


def stain_gray(rgb: np.ndarray, rng: np.random.Generator | None = None, jitter: float = 0.0
               ) -> np.ndarray:
    """RGB(A) -> gray with random channel weights (stain-colour jitter).

    Parameters
    ----------
    rgb : np.ndarray
        ``(H, W, 3)`` or ``(H, W, 4)`` image (alpha ignored).
    rng : np.random.Generator, optional
        Source of the weights; None (or ``jitter=0``): equal weights, the plain mean that
        inference uses for RGB input
        (:func:`~flowseg.engine.inference.transforms.prepare_channels`).
    jitter : float
        Spread of the weights: each is ``exp(jitter * N(0, 1))``, then all are scaled to sum 1;
        each channel also gets its own gamma ``exp(jitter / 2 * N(0, 1))`` (stain intensity).

    Returns
    -------
    np.ndarray
        ``(H, W)`` float32, in the range of the input.

    Raises
    ------
    ValueError
        If ``rgb`` is not ``(H, W, 3 or 4)``, or ``jitter`` is negative.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3 or 4) RGB(A) image, got shape {rgb.shape}")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    x = rgb[..., :3].astype(np.float32)
    if rng is None or jitter == 0:
        return x.mean(-1)
    wts = np.exp(jitter * rng.standard_normal(3))
    wts /= wts.sum()
    gam = np.exp(0.5 * jitter * rng.standard_normal(3))
    top = float(x.max()) or 1.0
    out = np.zeros(x.shape[:2], np.float32)
    for k in range(3):
        out += np.float32(wts[k]) * top * (np.clip(x[..., k], 0, None) / top) ** np.float32(gam[k])
    return out
