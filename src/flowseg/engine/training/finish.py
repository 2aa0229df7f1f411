"""End of training: the training record in the model's metadata and the size model.

Metadata written here (besides ``meta["training"]``, the record of the run):

``diam_labels``
    Mean of the training images' median object diameters (also in the network's state).
``diam_train``
    Median equivalent-circle diameter of *all* objects of the training images (pixels): the
    natural default diameter for images like the training images, for the GUI and CLI.
``size_model``
    A fine-tune from a model with a size model that keeps its start's weights keeps its size
    model; one that keeps trained weights keeps the regression and re-fits only the
    offset (:func:`flowseg.engine.inference.size.calibrate_size_model`), or drops it when the
    calibrated regression does not follow the zoomed views of the training images
    (:data:`MAX_CALIBRATION_RESIDUAL`; estimates then start from
    ``diam_train``, :func:`flowseg.engine.inference.size.start_diameter`); a model trained from
    scratch (or fine-tuned from one without a size model on at least 16 images) gets a new
    regression (:func:`fit_size`); a fine-tune on fewer images of a model without one gets
    none (sizes are then estimated by segmenting at ``diam_train``).
``style``
    The style centroid of the training images (:func:`flowseg.engine.inference.zoo.training_style`),
    replacing the start model's: ``--model auto`` compares images with it.
"""

from __future__ import annotations

import datetime as _dt
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..inference.base import device_name
from ..inference.size import calibrate_size_model, fit_size_model
from ..inference.zoo import training_style
from ..progress import Cancelled
from .prep import SampleSet

__all__ = ["SIZE_VIEWS", "finish_model", "fit_size", "images_style", "size_views",
           "training_diameter"]

#: a model without a size model gets a new regression only from this many 2D samples
MIN_SAMPLES_NEW_SIZE_MODEL = 16
#: zoomed views of the training images that calibrate a fine-tuned model's size model
SIZE_VIEWS = 12
#: a calibrated size model is kept only when its median absolute log error on those views
#: is at most this (25 %): a network whose encoder moved far from the start's gives styles
#: the start's regression cannot read (`cyto` fine-tuned on one stained-tissue image: median
#: error x3.6 on its own views after an offset of x93; kept, its estimates on other stained
#: images were 0.4-3.2x the truth).  The correlation over the views is not a test: on one
#: image of large cells a usable calibration (median error 20 %) had a negative one.
MAX_CALIBRATION_RESIDUAL = float(np.log(1.25))


def _samples_2d(samples: SampleSet, labels: Sequence[np.ndarray], max_images: int,
                seed: int) -> tuple[list, list]:
    """Prepared ``(H, W, C)`` float32 images and labels of (a seeded subset of) the XY samples."""
    keep = [i for i, (k, z) in enumerate(samples.sources) if z is None or z >= 0]
    if len(keep) > max_images:
        keep = sorted(np.random.default_rng(seed).choice(keep, max_images, replace=False))
    imgs, labs = [], []
    for i in keep:
        k, z = samples.sources[i]
        lab = np.asarray(labels[k]) if z is None else np.asarray(labels[k])[z]
        imgs.append(np.moveaxis(np.asarray(samples.images[i], np.float32), 0, -1))
        labs.append(lab)
    return imgs, labs


def fit_size(model, samples: SampleSet, labels: Sequence[np.ndarray], *, max_images: int = 64,
             seed: int = 0, progress=None, cancel=None) -> dict | None:
    """Fit the style -> diameter regression (:func:`flowseg.engine.inference.size.fit_size_model`).

    Uses the prepared (normalised) 2D training samples -- XY slices for volumes -- and
    their labels, at most ``max_images`` of them (a seeded random subset).
    """
    imgs, labs = _samples_2d(samples, labels, max_images, seed)
    if not imgs:
        return None
    return fit_size_model(model, imgs, labs, normalize=False, seed=seed, store=False,
                          progress=progress, cancel=cancel)


def training_diameter(samples: SampleSet, labels: Sequence[np.ndarray]) -> float | None:
    """Median equivalent-circle diameter of all objects of the XY training samples."""
    diams = []
    for k, z in samples.sources:
        if z is not None and z < 0:
            continue
        lab = np.asarray(labels[k]) if z is None else np.asarray(labels[k])[z]
        counts = np.bincount(lab.ravel().astype(np.int64))[1:]
        counts = counts[counts > 0]
        diams.append(2.0 * np.sqrt(counts / np.pi))
    d = np.concatenate(diams) if diams else np.zeros(0)
    return float(np.median(d)) if d.size else None


def size_views(cfg: dict, start_size_model: dict | None, samples: SampleSet) -> int:
    """Network passes the size model will take (see the module text): 0 when none is fitted."""
    if start_size_model is not None:
        return SIZE_VIEWS
    n2d = sum(1 for _, z in samples.sources if z is None or z >= 0)
    if cfg.get("recipe") == "finetune" and n2d < MIN_SAMPLES_NEW_SIZE_MODEL:
        return 0
    return 4 * min(64, n2d)


def _size_model(model, samples: SampleSet, labels: Sequence[np.ndarray], cfg: dict,
                start_size_model: dict | None, progress, *, improved: bool,
                diam_train: float | None) -> tuple[dict | None, str]:
    """The saved model's size model and, when the start's was dropped, why (module text)."""
    if start_size_model is not None and not improved:
        # the start model's weights were kept: so is its size model, so that the saved model
        # segments exactly as its start (an offset measured on the few training images moved
        # AP@0.5 by -0.02 on a synthetic modality and by +-0.01 on stained tissue)
        return start_size_model, ""
    seed = int(cfg.get("seed") or 0)
    try:
        if start_size_model is not None:
            imgs, labs = _samples_2d(samples, labels, 64, seed)
            sm = calibrate_size_model(model, imgs, labs, start_size_model, n_views=SIZE_VIEWS,
                                      seed=seed, progress=progress)
            if sm["residual"] > MAX_CALIBRATION_RESIDUAL:
                return None, (
                    "the start model's size model does not read the fine-tuned network's "
                    f"styles (median error {100 * np.expm1(sm['residual']):.0f} % on zoomed "
                    "views of the training images), so it was dropped: diameters are "
                    f"estimated from the training objects' median ({diam_train or 0:.1f} px)")
            return sm, ""
        if size_views(cfg, start_size_model, samples) == 0:
            return None, ""  # too few images for a new regression; diam_train is the default
        return fit_size(model, samples, labels, seed=seed, progress=progress), ""
    except ValueError as exc:  # e.g. too few objects to fit
        warnings.warn(f"size model not fitted: {exc}", stacklevel=4)
        return start_size_model, ""


def images_style(images: Sequence[np.ndarray], channels=None, cancel=None) -> dict | None:
    """Style centroid of the training images (None, with a warning, if it cannot be made).

    It depends on the images only (the zoo's fixed reference networks), so :func:`train`
    computes it before training, inside its time budget.
    """
    try:
        return training_style(images, channels=channels, cancel=cancel)
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - the model is still good without a centroid
        warnings.warn(f"no style centroid stored (the model is left out of --model auto): "
                      f"{exc}", stacklevel=4)
        return None


def finish_model(model, samples: SampleSet, labels: Sequence[np.ndarray], cfg: dict, hist: dict,
                 best: dict | None, *, cancelled: bool, epochs_done: int, seconds: float,
                 progress=None, start_size_model: dict | None = None, improved: bool = True,
                 note: str = "", style: dict | None = None) -> None:
    """Write the training record, ``diam_labels``, ``diam_train`` and the size model into
    ``model.meta`` (see the module text).

    Parameters
    ----------
    start_size_model : dict, optional
        The start model's size model, for a checked fine-tune: kept, offset re-fitted.
    improved, note : bool, str
        The outcome of a checked fine-tune (:func:`flowseg.engine.training.finetune.outcome`).
    style : dict, optional
        The style centroid of the training images (:func:`images_style`); it replaces the
        start model's ``meta["style"]`` (None removes it: a fine-tuned model must not claim
        its start's centroid), for ``--model auto``.
    """
    d = samples.diameters
    diam_labels = float(np.mean(d[d > 0])) if np.any(d > 0) else float(model.diam_mean)
    with torch.no_grad():
        model.net.diam_labels.fill_(diam_labels)
    meta = model.meta
    meta["diam_labels"] = diam_labels
    meta["diam_train"] = training_diameter(samples, labels)
    if cfg.get("channels") is not None:
        meta["channels"] = list(cfg["channels"])
    start = meta.get("path") or meta.get("source") or meta.get("training", {}).get("start")
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "start": None if start is None else str(start),
        "config": dict(cfg.items()),
        "images": list(dict.fromkeys(n.split("[")[0] for n in samples.names)),
        "n_samples": len(samples),
        "epochs_done": int(epochs_done),
        "cancelled": bool(cancelled),
        "seconds": round(float(seconds), 1),
        "loss": [round(float(v), 5) for v in hist["loss"]],
        "val_epoch": list(hist["val_epoch"]),
        "val_loss": [round(float(v), 5) for v in hist["val_loss"]],
        "val_ap": [None if v is None else round(float(v), 4) for v in hist["val_ap"]],
        "check_epoch": list(hist.get("check_epoch", [])),
        "check_ap": [None if v is None else round(float(v), 4)
                     for v in hist.get("check_ap", [])],
        "best_epoch": None if best is None else int(best["epoch"]),
        "improved": bool(improved),
        "note": str(note),
        "device": device_name(next(model.net.parameters()).device),
    }
    meta["training"] = record
    meta["source"] = "trained"
    meta.pop("path", None)
    sm, why = _size_model(model, samples, labels, cfg, start_size_model, progress,
                          improved=improved, diam_train=meta["diam_train"])
    if why:
        record["note"] = f"{record['note']}; {why}" if record["note"] else why
    meta["size_model"] = sm
    meta["style"] = style
