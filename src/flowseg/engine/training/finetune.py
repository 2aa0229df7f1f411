"""Scoring, time reservation and the plain-words outcome of a fine-tune
(:func:`flowseg.engine.training.train.train`).

* :func:`make_scorer`: how candidates are compared -- validation images when given, else
  (for a fine-tune from a trained model) the quick check on windows of the training images
  (:mod:`flowseg.engine.training.quickcheck`); None for a run that keeps its last weights.
* :func:`reserve_time`: under a time budget, the seconds kept for the work after training
  (the last score, the size model, the save), measured where possible.
* :func:`outcome`: ``(improved, note)``: whether a fine-tune kept trained weights or its
  start's, and why, in words for the user.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..network.tiling import run_tiled
from ..progress import report
from .budget import TimeBudget
from .prep import SampleSet
from .quickcheck import MIN_GAIN, check_model, make_check_set
from .validate import validate

__all__ = ["make_scorer", "outcome", "reserve_time"]


def _check_labels(samples: SampleSet, labels: Sequence[np.ndarray]) -> list:
    """The 2D label image of every cached sample (XZ / YZ slices: None)."""
    out = []
    for k, z in samples.sources:
        lab = np.asarray(labels[k])
        out.append(lab if z is None else (lab[z] if z >= 0 else None))
    return out


def make_scorer(model, samples: SampleSet, labels: Sequence[np.ndarray], scales: np.ndarray,
                val, val_images, val_labels, *, checked: bool, crop: int, rescale: bool,
                channels, seed: int, progress=None, cancel=None
                ) -> tuple[Callable[[], tuple[list, float, float | None]] | None, str]:
    """The scoring function of a run and the history prefix it records under.

    Returns
    -------
    scorer : callable or None
        ``scorer() -> (key, loss, ap)``; keys compare as lists (higher is better).
    prefix : str
        ``"val"`` (validation images) or ``"check"`` (the fine-tune check).
    """
    if val is not None:
        def by_validation() -> tuple[list, float, float | None]:
            vloss, vap = validate(model, val, val_images, val_labels, crop=crop,
                                  rescale=rescale, channels=channels, progress=progress,
                                  cancel=cancel)
            # best by AP@0.5, ties (e.g. all 0 early on) broken by the validation loss
            return [float(vap) if vap is not None else 0.0, -float(vloss)], vloss, vap

        return by_validation, "val"
    if not checked:
        return None, "val"

    labs = _check_labels(samples, labels)
    keep = [i for i, lab in enumerate(labs) if lab is not None]
    check = make_check_set([samples.images[i] for i in keep], [labs[i] for i in keep],
                           [scales[i] for i in keep], seed=seed)

    def by_check() -> tuple[list, float, float | None]:
        report(progress, "check", 0, 1, "checking the model on the training images")
        cs = check_model(model.net, check, cancel=cancel)
        report(progress, "check", 1, 1, "checking the model on the training images",
               ap=cs.ap50, loss=cs.loss)
        return list(cs.key), cs.loss, cs.ap50

    return by_check, "check"


def reserve_time(budget: TimeBudget, model, *, score_seconds: float, views: int) -> None:
    """Under a time budget, reserve the seconds needed after training.

    The last score takes about as long as the first (``score_seconds``, with 20 % margin);
    the size model costs one network pass per zoomed view (``views``; one 224-pixel pass is
    timed here, after one pass that builds the inference copy); the save about a second plus
    the time to write the weights.
    """
    if budget.seconds is None:
        return

    tile = np.zeros((224, 224, model.nchan), np.float32)
    run_tiled(model.net, tile)  # the first pass also builds the inference copy
    t0 = time.monotonic()
    run_tiled(model.net, tile)
    t_view = time.monotonic() - t0
    nbytes = sum(p.numel() * 4 for p in model.net.parameters())
    budget.reserve(1.2 * score_seconds + 1.2 * views * t_view + 1.0 + nbytes / 100e6
                   + 0.02 * budget.seconds)


def outcome(loop, checked: bool, prefix: str) -> tuple[bool, str]:
    """``(improved, note)`` of a finished run (see :class:`.trainsetup.TrainResult`)."""
    hist, best = loop.hist, loop.best
    what = "the validation images" if prefix == "val" else "its training images"
    aps = dict(zip(hist[f"{prefix}_epoch"], hist[f"{prefix}_ap"]))
    if not checked:
        if best is None:
            return True, f"kept the weights of the last epoch ({len(hist['epoch'])})"
        return True, (f"kept the weights of epoch {best['epoch']}, the best on {what} "
                      f"(AP@0.5 {_ap(aps.get(best['epoch']))})")
    start_ap = _ap(aps.get(0))
    if best is not None and int(best["epoch"]) > 0:
        return True, (f"the fine-tuned model checked better than the start model on {what} "
                      f"(AP@0.5 {_ap(aps.get(best['epoch']))} against {start_ap}); "
                      f"kept its weights of epoch {best['epoch']}")
    if loop.step == 0:
        why = ("training was cancelled before its first step" if loop.cancelled
               else "the time budget was used up before training could start")
        return False, f"{why}, so the start model's weights were kept"
    trained = [e for e in hist[f"{prefix}_epoch"] if e > 0]
    if loop.cancelled and not trained:
        return False, ("training was cancelled before the trained model could be checked, so "
                       "the start model's weights were kept")
    best_trained = max((aps[e] or 0.0 for e in trained), default=0.0)
    if prefix == "check" and best_trained > float(aps.get(0) or 0.0):
        why = (f"the fine-tuned model was only slightly better than the start model on {what} "
               f"(AP@0.5 {best_trained:.3f} against {start_ap}; it must gain {MIN_GAIN:.2f}, "
               "a smaller gain on the images trained on is likely not to hold on others)")
    else:
        why = (f"the fine-tuned model was not better than the start model on {what} "
               f"(AP@0.5 {best_trained:.3f} against {start_ap})")
    return False, (f"{why}, so the start model's weights were kept; try more corrected "
                   "images, or a longer time budget")


def _ap(v: float | None) -> str:
    return "n/a" if v is None else f"{float(v):.3f}"
