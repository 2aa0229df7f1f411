"""Fitting a size model: the regression from a network's style vector to the object diameter.

:func:`fit_size_model` fits the regression for any trained model, in the spirit of the
Cellpose method: each training image is zoomed so its objects have a random apparent
diameter (log-uniform around the model's ``diam_mean``, or over a given range of diameters,
e.g. 8-150 px so the regression does not have to extrapolate), the style of that view is
computed as :func:`~flowseg.engine.inference.size.regression_diameter` reads it, and a ridge
regression maps styles to the log of the apparent diameter (:func:`fit_ridge`; with several
penalties the one that predicts a held-out part of the images best).

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
from scipy import ndimage

from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .crops import mask_diameters
from .prepare import prepare_input
from .style import tiles_style
from .transforms import resize_image

__all__ = ["MIN_OFFSET", "calibrate_size_model", "fit_ridge", "fit_size_model", "image_views",
           "zoom_view", "zoomed_views"]

#: a calibration offset (log) of at most this (10 %) is not applied (see calibrate_size_model)
MIN_OFFSET = float(np.log(1.1))


def zoom_view(x: np.ndarray, zoom: float, crop: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, float]:
    """A random window of a prepared image ``(H, W, C)`` zoomed by ``zoom``, at most ``crop``
    pixels a side, and the zoom actually applied (the window's pixels are rounded).

    The window is cut from ``x`` first (so a large zoom costs no more than the view) and
    resized bilinearly; when shrinking it is smoothed first with a Gaussian of sigma
    ``(1 / zoom - 1) / 2`` (as ``skimage.transform.rescale`` anti-aliases), so a zoomed-out
    view looks like an image taken at that resolution, not an aliased one.
    """
    H, W = x.shape[:2]
    zoom = float(zoom)
    # window side in x's pixels; one extra pixel so the resized view keeps `crop` pixels
    hy, wx = min(H, int(np.ceil(crop / zoom)) + 1), min(W, int(np.ceil(crop / zoom)) + 1)
    y0 = int(rng.integers(0, H - hy + 1))
    x0 = int(rng.integers(0, W - wx + 1))
    v = np.asarray(x[y0:y0 + hy, x0:x0 + wx], np.float32)
    if zoom < 1.0:
        sigma = (1.0 / zoom - 1.0) / 2.0
        v = ndimage.gaussian_filter(v, (sigma, sigma, 0), mode="nearest")
    ny = max(1, round(hy * zoom))
    v = resize_image(v, shape=(ny, max(1, round(wx * zoom))))
    return v[:crop, :crop], ny / hy


def image_views(model: ModelBase, x: np.ndarray, lab: np.ndarray, rng: np.random.Generator, *,
                n: int = 4, jitter: float = 2.0, crop: int = 224, native: bool = False,
                diameters: tuple[float, float] | None = None, tiles: int | None = None,
                batch_size: int = 8, cancel: CancelToken = None
                ) -> tuple[list[np.ndarray], list[float]]:
    """Styles and log apparent diameters of ``n`` zoomed views of one labelled image.

    The apparent diameters are drawn log-uniformly and stratified (view ``j`` in the
    ``j``-th of ``n`` equal parts of the log range, in random order): in ``[diameters[0],
    diameters[1]]`` when ``diameters`` is given, else in ``[c / jitter, c * jitter]`` around
    ``c = diam_mean`` (``native``: the image's own median diameter).  Each view is
    :func:`zoom_view`; its style is :func:`~flowseg.engine.inference.style.tiles_style` on at
    most ``tiles`` of its 224-pixel tiles (None: all, which equals the style of a full
    network pass), the encoder-only read of ``regression_diameter``.  The target is the log
    of the image's median equivalent-circle diameter times the zoom actually applied.
    Returns empty lists for an image without objects.
    """
    if jitter < 1.0:
        raise ValueError(f"jitter must be >= 1, got {jitter}")
    d_true, _ = mask_diameters(lab)
    if d_true <= 0:
        return [], []
    if diameters is not None:
        lo, hi = float(diameters[0]), float(diameters[1])
        if not 0 < lo <= hi:
            raise ValueError(f"diameters must be 0 < low <= high, got {diameters}")
    else:
        c = d_true if native else model.diam_mean
        lo, hi = c / jitter, c * jitter
    n = int(n)
    u = (rng.permutation(n) + rng.uniform(size=n)) / max(n, 1)
    styles, targets = [], []
    for j in range(n):
        check_cancel(cancel)
        apparent = float(np.exp(np.log(lo) + u[j] * (np.log(hi) - np.log(lo))))
        v, zoom = zoom_view(x, apparent / d_true, crop, rng)
        st, _ = tiles_style(model.net, v, max_tiles=tiles, batch_size=batch_size,
                            cancel=cancel)
        styles.append(st)
        targets.append(float(np.log(d_true * zoom)))
    return styles, targets


def zoomed_views(model: ModelBase, images: Iterable[np.ndarray], labels: Sequence[np.ndarray], *,
                 n_per_image: int = 4, jitter: float = 2.0, crop: int = 224, seed: int = 0,
                 native: bool = False, diameters: tuple[float, float] | None = None,
                 tiles: int | None = None, batch_size: int = 8,
                 progress: ProgressCallback | None = None,
                 cancel: CancelToken = None) -> tuple[list, list]:
    """Styles and log apparent diameters of random zoomed views of labelled images.

    ``images`` may be any iterable (e.g. a generator preparing one image at a time) of
    prepared images ``(H, W, C)``; see :func:`image_views` for the views (``n_per_image`` of
    each).  Images without objects are skipped.

    Returns
    -------
    styles : list of np.ndarray
        The network's style vector of each view.
    targets : list of float
        ``log`` of the apparent median diameter in each view.
    """
    styles, targets, _ = _views(model, images, labels, n_per_image=n_per_image, jitter=jitter,
                                crop=crop, seed=seed, native=native, diameters=diameters,
                                tiles=tiles, batch_size=batch_size, progress=progress,
                                cancel=cancel)
    return styles, targets


def _views(model, images, labels, *, n_per_image, jitter, crop, seed, native, diameters, tiles,
           batch_size, progress, cancel) -> tuple[list, list, list]:
    """:func:`zoomed_views` plus the index of the image of each view."""
    if jitter < 1.0:
        raise ValueError(f"jitter must be >= 1, got {jitter}")
    rng = np.random.default_rng(seed)
    styles, targets, groups = [], [], []
    total = len(labels) * int(n_per_image)
    for k, (x, lab) in enumerate(zip(images, labels)):
        s, t = image_views(model, x, lab, rng, n=n_per_image, jitter=jitter, crop=crop,
                           native=native, diameters=diameters, tiles=tiles,
                           batch_size=batch_size, cancel=cancel)
        styles += s
        targets += t
        groups += [k] * len(s)
        report(progress, "size", min((k + 1) * int(n_per_image), total), total, "style vectors")
    return styles, targets, groups


def _ridge(S: np.ndarray, t: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    smean, tmean = S.mean(0), t.mean()
    Sc = S - smean
    A = np.linalg.solve(Sc.T @ Sc + float(ridge) * np.eye(S.shape[1]), Sc.T @ (t - tmean))
    return A, float(tmean - A @ smean)


def fit_ridge(styles: Sequence[np.ndarray] | np.ndarray, targets: Sequence[float] | np.ndarray,
              *, ridge: float | Sequence[float] = 1.0, groups: Sequence[int] | None = None,
              holdout: float = 0.25, seed: int = 0) -> dict:
    """Ridge regression ``log(diameter) = A . style + b``; the penalty chosen on held-out images.

    Parameters
    ----------
    styles : (N, S) array-like
    targets : (N,) array-like
        Log diameters.
    ridge : float or sequence of float
        The L2 penalty, or candidates: each is fitted on the views of all but a random
        ``holdout`` fraction of the groups (images) and scored by the mean absolute log
        error on the views of the held-out groups; the best is then fitted on all views.
    groups : sequence of int, optional
        The image of each view (views of one image are held out together); default: each
        view its own group.
    holdout : float
        Fraction of the groups held out to choose the penalty.
    seed : int
        Seed of the held-out draw.

    Returns
    -------
    dict
        ``{"A": list, "b": float, "n": int, "train_r": float, "ridge": float}``, with
        ``"ridge_scores"`` (penalty -> held-out mean absolute log error) when chosen.
    """
    S = np.asarray(styles, np.float64)
    t = np.asarray(targets, np.float64)
    if S.ndim != 2 or len(S) < 2 or len(t) != len(S):
        raise ValueError(f"need at least 2 styles with one target each, got {S.shape} and "
                         f"{t.shape}")
    cands = [float(r) for r in np.atleast_1d(np.asarray(ridge, np.float64))]
    if not cands or min(cands) < 0:
        raise ValueError(f"ridge penalties must be >= 0, got {ridge!r}")
    out: dict[str, Any] = {}
    best = cands[0]
    if len(cands) > 1:
        g = np.arange(len(S)) if groups is None else np.asarray(groups)
        if g.shape != (len(S),):
            raise ValueError(f"need one group per style, got {g.shape} for {len(S)} styles")
        ug = np.unique(g)
        n_out = int(round(float(holdout) * len(ug)))
        if not 0 < n_out < len(ug):
            raise ValueError(f"holdout {holdout} leaves no groups on one side ({len(ug)} groups)")
        held = np.isin(g, np.random.default_rng(seed).choice(ug, n_out, replace=False))
        scores = {}
        for r in cands:
            A, b = _ridge(S[~held], t[~held], r)
            scores[r] = float(np.mean(np.abs(S[held] @ A + b - t[held])))
        best = min(cands, key=lambda r: (scores[r], -r))
        out["ridge_scores"] = {repr(r): s for r, s in scores.items()}
        out["holdout_groups"] = n_out
    A, b = _ridge(S, t, best)
    pred = S @ A + b
    r = float(np.corrcoef(pred, t)[0, 1]) if np.std(t) > 0 and np.std(pred) > 0 else 0.0
    return {"A": A.tolist(), "b": b, "n": int(S.shape[0]), "train_r": r, "ridge": best, **out}


def fit_size_model(model: ModelBase, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                   channels=None, channel_axis=None, normalize: Any = True,
                   n_per_image: int = 4, jitter: float = 2.0, crop: int = 224,
                   diameters: tuple[float, float] | None = None, tiles: int | None = None,
                   ridge: float | Sequence[float] = 1.0, holdout: float = 0.25,
                   seed: int = 0, store: bool = True,
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
        Without ``diameters``: apparent diameters are drawn log-uniformly in
        ``[diam_mean / jitter, diam_mean * jitter]``.
    crop : int
        Views are cut (at random) to at most ``crop`` x ``crop`` pixels.
    diameters : (float, float), optional
        Draw the apparent diameters log-uniformly in this range instead (e.g. ``(8, 150)``:
        the regression then reads sizes far from ``diam_mean`` without extrapolating).
    tiles : int, optional
        Style from at most this many 224-pixel tiles of a view, as ``regression_diameter``
        reads an image (its ``STYLE_TILES``); None: every tile of the view.
    ridge : float or sequence of float
        L2 penalty of the ridge regression, or candidates chosen on a held-out ``holdout``
        fraction of the images (:func:`fit_ridge`).
    store : bool
        Put the result in ``model.meta["size_model"]``.

    Returns
    -------
    dict
        ``{"A": list, "b": float, "n": int, "train_r": float, "ridge": float}``
        (``train_r``: correlation of predicted and true log diameters on the fitted views).
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many label images as images (>0), got {len(images)} and "
                         f"{len(labels)}")

    def prepared():  # one image at a time (at most a few MB each in memory)
        for k, (img, lab) in enumerate(zip(images, labels)):
            x, sdim = prepare_input(model, img, channels=channels, channel_axis=channel_axis,
                                    normalize=normalize)
            if sdim != 2 or x.shape[:2] != np.asarray(lab).shape[:2]:
                raise ValueError(f"image {k}: need a 2D image matching its labels, got image "
                                 f"{x.shape[:-1]} and labels {np.asarray(lab).shape}")
            yield x

    styles, targets, groups = _views(model, prepared(), labels, n_per_image=n_per_image,
                                     jitter=jitter, crop=crop, seed=seed, native=False,
                                     diameters=diameters, tiles=tiles, batch_size=batch_size,
                                     progress=progress, cancel=cancel)
    if len(styles) < 2:
        raise ValueError("fit_size_model needs label images with objects")
    result = fit_ridge(styles, targets, ridge=ridge, groups=groups, holdout=holdout, seed=seed)
    if store:
        model.meta["size_model"] = result
    return result


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
        (``native``), where estimation computes styles: a regression fitted near
        ``diam_mean`` may extrapolate badly to objects far from that size (e.g. 65-px cells
        for the 17-px nuclei model), which an offset fitted at ``diam_mean`` would not
        correct.

    Returns
    -------
    dict
        ``{"A", "b", "n", "train_r", "offset", "offset_measured", "b_start", "residual"}``:
        ``b = b_start + offset`` where ``offset_measured`` is the median of ``log(true) -
        log(predicted)`` over the views, applied as ``offset`` when larger than
        :data:`MIN_OFFSET` (else 0); ``train_r``: correlation of predicted and true log
        diameters on the views; ``residual``: median absolute log error on the views after
        the measured offset.

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
    measured = float(np.median(t - pred))
    # a median over a few views of one or two images is itself uncertain by ~10 %, and the
    # estimate's own measurement corrects errors of that size: smaller offsets are not applied
    offset = measured if abs(measured) > MIN_OFFSET else 0.0
    r = float(np.corrcoef(pred, t)[0, 1]) if np.std(t) > 0 and np.std(pred) > 0 else 0.0
    return {"A": A.tolist(), "b": b0 + offset, "n": int(S.shape[0]), "train_r": r,
            "offset": offset, "offset_measured": measured, "b_start": b0,
            "residual": float(np.median(np.abs(t - pred - measured)))}
