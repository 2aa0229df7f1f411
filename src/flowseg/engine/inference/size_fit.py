"""Fitting a size model: the regression from a network's style vector to the object diameter.

:func:`fit_size_model` fits the regression for any trained model, in the spirit of the
Cellpose method: each training image is resized so its objects have a randomly jittered
apparent diameter around the model's ``diam_mean``, the style of that view is computed, and a
ridge regression maps styles to the log of the apparent diameter.

:func:`calibrate_size_model` is the fine-tuning counterpart: a handful of corrected images
cannot support a new 128- or 256-dimensional regression (fitted on 4 views of one image it
predicted ~15 px for 128-px cells), so it keeps the start model's regression ``A`` and fits
only an offset of ``b``: the median error of the regression, with the fine-tuned network's
styles, over views of the training images zoomed around their own scale.  Estimated diameters
are then right on the training images by construction and move with the zoom as the start
model's did.  The regression is applied by :mod:`flowseg.engine.inference.size`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..network.tiling import run_tiled
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .crops import mask_diameters
from .prepare import prepare_input
from .transforms import resize_image

__all__ = ["calibrate_size_model", "fit_size_model", "zoomed_views"]


def fit_size_model(model: ModelBase, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                   channels=None, channel_axis=None, normalize: Any = True,
                   n_per_image: int = 4, jitter: float = 2.0, crop: int = 224,
                   ridge: float = 1.0, seed: int = 0, store: bool = True,
                   batch_size: int = 8, progress: ProgressCallback | None = None,
                   cancel: CancelToken = None) -> dict:
    """Fit ``log(diameter) = A . style + b`` for ``model`` on labelled 2D images.

    Parameters
    ----------
    model : ModelBase
    images, labels : sequences of np.ndarray
        2D images (any channel layout accepted by ``Model.segment``) and their int labels.
    n_per_image : int
        Random views per image.
    jitter : float
        Apparent diameters are drawn log-uniformly in ``[diam_mean / jitter, diam_mean * jitter]``.
    crop : int
        Views are cropped (at random) to at most ``crop`` x ``crop`` pixels.
    ridge : float
        L2 penalty of the ridge regression.
    store : bool
        Put the result in ``model.meta["size_model"]``.

    Returns
    -------
    dict
        ``{"A": list, "b": float, "n": int, "train_r": float}`` (``train_r``: correlation of
        predicted and true log diameters on the fitted views).
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many label images as images (>0), got {len(images)} and "
                         f"{len(labels)}")
    if jitter < 1.0:
        raise ValueError(f"jitter must be >= 1, got {jitter}")
    def prepared():  # one image at a time (at most a few MB each in memory)
        for k, (img, lab) in enumerate(zip(images, labels)):
            x, sdim = prepare_input(model, img, channels=channels, channel_axis=channel_axis,
                                    normalize=normalize)
            if sdim != 2 or x.shape[:2] != np.asarray(lab).shape[:2]:
                raise ValueError(f"image {k}: need a 2D image matching its labels, got image "
                                 f"{x.shape[:-1]} and labels {np.asarray(lab).shape}")
            yield x

    styles, targets = zoomed_views(model, prepared(), labels, n_per_image=n_per_image,
                                   jitter=jitter, crop=crop, seed=seed, batch_size=batch_size,
                                   progress=progress, cancel=cancel)
    if len(styles) < 2:
        raise ValueError("fit_size_model needs label images with objects")
    S = np.asarray(styles, np.float64)
    t = np.asarray(targets, np.float64)
    smean, tmean = S.mean(0), t.mean()
    Sc = S - smean
    A = np.linalg.solve(Sc.T @ Sc + float(ridge) * np.eye(S.shape[1]), Sc.T @ (t - tmean))
    b = float(tmean - A @ smean)
    pred = S @ A + b
    r = float(np.corrcoef(pred, t)[0, 1]) if np.std(t) > 0 and np.std(pred) > 0 else 0.0
    result = {"A": A.tolist(), "b": b, "n": int(S.shape[0]), "train_r": r}
    if store:
        model.meta["size_model"] = result
    return result


def zoomed_views(model: ModelBase, images: Iterable[np.ndarray], labels: Sequence[np.ndarray], *,
                 n_per_image: int = 4, jitter: float = 2.0, crop: int = 224, seed: int = 0,
                 native: bool = False, batch_size: int = 8,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken = None) -> tuple[list, list]:
    """Styles and log apparent diameters of random zoomed views of labelled images.

    ``images`` may be any iterable (e.g. a generator preparing one image at a time).  Each
    view zooms a prepared image ``(H, W, C)`` so its median object diameter becomes
    log-uniform in ``[diam_mean / jitter, diam_mean * jitter]`` (``native``: in
    ``[d / jitter, d * jitter]`` around the image's own diameter ``d``, the scale at which
    :func:`estimate_diameter` computes styles), and is cropped at random to at most ``crop``
    x ``crop``.  Images without objects are skipped.

    Returns
    -------
    styles : list of np.ndarray
        The network's style vector of each view.
    targets : list of float
        ``log`` of the apparent median diameter in each view.
    """
    if jitter < 1.0:
        raise ValueError(f"jitter must be >= 1, got {jitter}")
    rng = np.random.default_rng(seed)
    styles, targets = [], []
    total = len(labels) * int(n_per_image)
    for k, (x, lab) in enumerate(zip(images, labels)):
        check_cancel(cancel)
        d_true, _ = mask_diameters(lab)
        if d_true <= 0:
            continue
        views = []
        for _ in range(int(n_per_image)):
            centre = d_true if native else model.diam_mean
            apparent = centre * float(np.exp(rng.uniform(-np.log(jitter), np.log(jitter))))
            xr = resize_image(x, scale=apparent / d_true)
            H, W = xr.shape[:2]
            y0 = int(rng.integers(0, max(1, H - crop + 1)))
            x0 = int(rng.integers(0, max(1, W - crop + 1)))
            views.append(xr[y0:y0 + crop, x0:x0 + crop])
            targets.append(float(np.log(d_true * xr.shape[0] / x.shape[0])))  # actual size
        for v in views:
            _, st = run_tiled(model.net, v, batch_size=batch_size, cancel=cancel)
            styles.append(st)
        report(progress, "size", min((k + 1) * int(n_per_image), total), total, "style vectors")
    return styles, targets


def calibrate_size_model(model: ModelBase, images: Sequence[np.ndarray],
                         labels: Sequence[np.ndarray], size_model: dict, *,
                         n_views: int = 12, jitter: float = 1.5, crop: int = 224,
                         seed: int = 0, batch_size: int = 8,
                         progress: ProgressCallback | None = None,
                         cancel: CancelToken = None) -> dict:
    """Keep a size model's regression and fit only its offset on a few labelled images.

    Parameters
    ----------
    model : ModelBase
        The (fine-tuned) model whose network gives the styles.
    images : sequence of np.ndarray
        Prepared (channel-selected, normalised) 2D images ``(H, W, C)``.
    labels : sequence of np.ndarray
        Their int labels.
    size_model : dict
        The regression to keep (``{"A": [...], "b": float}``, usually the start model's).
    n_views : int
        Zoomed views in all, spread over the images (at least 4 per image).
    jitter, crop, seed, batch_size
        See :func:`zoomed_views`; the views are zoomed around each image's own scale
        (``native``), where estimation computes styles: the regression was fitted at
        ``diam_mean``-sized views and may extrapolate badly to objects far from that size
        (e.g. 65-px cells for the 17-px nuclei model), which an offset fitted at
        ``diam_mean`` would not correct.

    Returns
    -------
    dict
        ``{"A", "b", "n", "train_r", "offset", "b_start"}``: ``b = b_start + offset`` where
        ``offset`` is the median of ``log(true) - log(predicted)`` over the views;
        ``train_r``: correlation of predicted and true log diameters on the views.

    Raises
    ------
    ValueError
        When no image has objects or the regression does not match the network's styles.
    """
    per = max(4, -(-int(n_views) // max(1, len(images))))
    styles, targets = zoomed_views(model, images, labels, n_per_image=per, jitter=jitter,
                                   crop=crop, seed=seed, native=True, batch_size=batch_size,
                                   progress=progress, cancel=cancel)
    if not styles:
        raise ValueError("calibrating the size model needs label images with objects")
    A = np.asarray(size_model["A"], np.float64)
    S = np.asarray(styles, np.float64)
    if S.shape[1] != A.size:
        raise ValueError(f"size model expects styles of length {A.size}, got {S.shape[1]}")
    b0 = float(size_model["b"])
    t = np.asarray(targets, np.float64)
    pred = S @ A + b0
    offset = float(np.median(t - pred))
    r = float(np.corrcoef(pred, t)[0, 1]) if np.std(t) > 0 and np.std(pred) > 0 else 0.0
    return {"A": A.tolist(), "b": b0 + offset, "n": int(S.shape[0]), "train_r": r,
            "offset": offset, "b_start": b0}
