"""End of training: the training record in the model's metadata and the size model."""

from __future__ import annotations

import datetime as _dt
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

from .model import device_name
from .trainprep import SampleSet

__all__ = ["finish_model", "fit_size"]


def fit_size(model, samples: SampleSet, labels: Sequence[np.ndarray], *, max_images: int = 64,
             seed: int = 0, progress=None, cancel=None) -> Optional[dict]:
    """Fit the style -> diameter regression (:func:`flowseg.engine.size.fit_size_model`).

    Uses the prepared (normalised) 2D training samples -- XY slices for volumes -- and
    their labels, at most ``max_images`` of them (a seeded random subset).
    """
    from .size import fit_size_model

    keep = [i for i, (k, z) in enumerate(samples.sources) if z is None or z >= 0]
    if len(keep) > max_images:
        keep = sorted(np.random.default_rng(seed).choice(keep, max_images, replace=False))
    imgs, labs = [], []
    for i in keep:
        k, z = samples.sources[i]
        lab = np.asarray(labels[k]) if z is None else np.asarray(labels[k])[z]
        imgs.append(np.moveaxis(np.asarray(samples.images[i], np.float32), 0, -1))
        labs.append(lab)
    if not imgs:
        return None
    return fit_size_model(model, imgs, labs, normalize=False, seed=seed, store=False,
                          progress=progress, cancel=cancel)


def finish_model(model, samples: SampleSet, labels: Sequence[np.ndarray], cfg: dict, hist: dict,
                 best: Optional[dict], *, cancelled: bool, epochs_done: int, seconds: float,
                 progress=None) -> None:
    """Write the training record (and the fitted size model) into ``model.meta``."""
    d = samples.diameters
    diam_labels = float(np.mean(d[d > 0])) if np.any(d > 0) else float(model.diam_mean)
    with torch.no_grad():
        model.net.diam_labels.fill_(diam_labels)
    meta = model.meta
    meta["diam_labels"] = diam_labels
    if cfg.get("channels") is not None:
        meta["channels"] = list(cfg["channels"])
    start = meta.get("path") or meta.get("source") or meta.get("training", {}).get("start")
    record = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "start": None if start is None else str(start),
        "config": {k: v for k, v in cfg.items()},
        "images": list(dict.fromkeys(n.split("[")[0] for n in samples.names)),
        "n_samples": len(samples),
        "epochs_done": int(epochs_done),
        "cancelled": bool(cancelled),
        "seconds": round(float(seconds), 1),
        "loss": [round(float(v), 5) for v in hist["loss"]],
        "val_epoch": list(hist["val_epoch"]),
        "val_loss": [round(float(v), 5) for v in hist["val_loss"]],
        "val_ap": [None if v is None else round(float(v), 4) for v in hist["val_ap"]],
        "best_epoch": None if best is None else int(best["epoch"]),
        "device": device_name(next(model.net.parameters()).device),
    }
    meta["training"] = record
    meta["source"] = "trained"
    meta.pop("path", None)
    try:
        sm = fit_size(model, samples, labels, seed=int(cfg.get("seed") or 0), progress=progress)
    except ValueError as exc:  # e.g. too few objects to fit
        warnings.warn(f"size model not fitted: {exc}", stacklevel=3)
        sm = None
    meta["size_model"] = sm  # the starting model's regression no longer fits the new styles
