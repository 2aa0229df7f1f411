"""Segmentation-like errors on ground-truth label frames, to test linking robustness.

:func:`perturb_frames` turns true track labels into what a segmenter might give: every
frame labelled on its own (ids shuffled), borders moved by a pixel, some cells missed for a
frame, some cut in two.  Deterministic given the generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

__all__ = ["perturb_frames"]


def _erode(frame: np.ndarray) -> np.ndarray:
    """Remove each label's outer pixel ring (labels stay apart where they touched)."""
    edge = ndi.maximum_filter(frame, 3) != ndi.minimum_filter(frame, 3)
    return np.where(edge, 0, frame)


def _cut(frame: np.ndarray, label: int, new: int, rng: np.random.Generator) -> None:
    """Cut object ``label`` in two along a random line through its centroid (in place)."""
    ys, xs = np.nonzero(frame == label)
    if ys.size < 40:
        return
    a = rng.uniform(0, np.pi)
    side = (ys - ys.mean()) * np.cos(a) + (xs - xs.mean()) * np.sin(a) > 0
    frame[ys[side], xs[side]] = new


def perturb_frames(labels: Sequence[np.ndarray], rng: np.random.Generator, *,
                   border: float = 0.5, drop: float = 0.02, split: float = 0.01
                   ) -> np.ndarray:
    """Per-frame labels with segmentation-like errors.

    Parameters
    ----------
    labels : (T, Y, X) array or sequence of 2D frames
        True labels (ids may persist across frames; the output's do not).
    rng : np.random.Generator
    border : float
        Fraction of frames whose cells are all grown or shrunk by one pixel.
    drop : float
        Probability that a cell is missed in a frame.
    split : float
        Probability that a cell is cut in two in a frame.

    Returns
    -------
    np.ndarray
        ``(T, Y, X)`` int32; each frame has ids 1..N in random order.
    """
    out = []
    for frame in labels:
        f = np.asarray(frame).astype(np.int32).copy()
        if rng.random() < border:
            f = expand_labels(f, 1) if rng.random() < 0.5 else _erode(f)
        ids = np.unique(f)[1:]
        gone = ids[rng.random(ids.size) < drop]
        f[np.isin(f, gone)] = 0
        top = int(f.max(initial=0))
        for lab in ids[rng.random(ids.size) < split]:
            if lab not in gone:
                top += 1
                _cut(f, int(lab), top, rng)
        ids = np.unique(f)[1:]
        lut = np.zeros(int(f.max(initial=0)) + 1, np.int32)
        lut[ids] = rng.permutation(ids.size) + 1
        out.append(lut[f])
    return np.stack(out)
