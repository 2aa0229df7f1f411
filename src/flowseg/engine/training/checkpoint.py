"""Resumable training checkpoints.

A checkpoint holds everything needed to continue a run exactly where it stopped: the
network weights, the optimizer state (momentum / Adam moments), the learning-rate
schedule, the numpy and torch random states at the start of the next epoch, the number
of finished epochs, the loss / validation history and the best weights so far.  It is a
plain ``torch.save`` file of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` (no code execution), and it is written atomically.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..io.modelfile import atomic_torch_save, load_torch_file

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "resume_checks", "rng_state", "save_checkpoint",
           "set_rng_state"]

CHECKPOINT_FORMAT = "flowseg-train-checkpoint"


def rng_state(rng: np.random.Generator) -> dict:
    """Picklable-with-weights_only state of a numpy Generator and of torch's CPU RNG."""
    st = rng.bit_generator.state
    return {"numpy": {"bit_generator": st["bit_generator"],
                      "state": {k: int(v) for k, v in st["state"].items()},
                      "has_uint32": int(st["has_uint32"]), "uinteger": int(st["uinteger"])},
            "torch": torch.get_rng_state()}


def set_rng_state(rng: np.random.Generator, state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").clone()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, *, net_state: dict, optimizer_state: dict,
                    epoch: int, config: dict, history: dict, rng: dict, meta: dict,
                    best: Optional[dict] = None, seconds: float = 0.0) -> Path:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : path-like
        Destination file.
    net_state, optimizer_state : dict
        ``net.state_dict()`` and ``optimizer.state_dict()``.
    epoch : int
        Finished epochs (training resumes at this epoch index).
    config : dict
        The resolved training settings (recipe, schedule, crop, ...).
    history : dict
        Per-epoch lists (loss, lr, validation).
    rng : dict
        :func:`rng_state` at the start of epoch ``epoch``.
    meta : dict
        The model's metadata.
    best : dict, optional
        ``{"epoch": int, "score": float, "state_dict": {...}}``.
    seconds : float
        Wall-clock seconds of training so far, all runs of a resumed training together.
    """
    payload = {"format": CHECKPOINT_FORMAT, "format_version": 1, "epoch": int(epoch),
               "net": _cpu(net_state), "optimizer": _cpu(optimizer_state),
               "config": dict(config), "history": history, "rng": rng, "meta": dict(meta),
               "best": _cpu(best) if best is not None else None, "seconds": float(seconds)}
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only`` loading)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    ck = load_torch_file(path, ValueError, f"{path} is not a flowseg training checkpoint")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a flowseg training checkpoint")
    return ck


def resume_checks(ck: dict, net, cfg: dict, crop: int, workers: int, resume,
                  precision: str = "fp32") -> None:
    """Check a checkpoint against the run that resumes it and load its weights into ``net``.

    Parameters
    ----------
    ck : dict
        The checkpoint (:func:`load_checkpoint`).
    net : torch.nn.Module
        The network to continue training (its widths must match).
    cfg : dict
        The resuming run's resolved settings.
    crop, workers : int
        Its crop side and batch workers.
    resume : path-like
        The checkpoint's file, for messages.
    precision : {"fp32", "bf16"}
        The resuming run's precision (checkpoints written before the setting were fp32).

    Raises
    ------
    ValueError
        A network of other widths, or a checkpoint of a run under a time budget.  Other
        differences (schedule, crop, workers, precision) only warn.
    """
    if list(ck["meta"].get("nbase", net.nbase)) != list(net.nbase):
        raise ValueError(f"checkpoint {resume} is for a network of widths "
                         f"{ck['meta'].get('nbase')}, not {net.nbase}")
    old = ck["config"]
    if old.get("time_budget") is not None and old.get("epochs") is None:
        raise ValueError(f"checkpoint {resume} is of a run under a time budget; it cannot be "
                         "resumed (fine-tune its saved model again instead)")
    net.load_state_dict(ck["net"])
    for k in ("epochs", "learning_rate", "optimizer", "batch_size", "crop"):
        if k in old and old[k] != {**cfg, "crop": crop}[k]:
            warnings.warn(f"resuming with {k}={({**cfg, 'crop': crop})[k]!r}, the "
                          f"checkpoint used {old[k]!r}", stacklevel=3)
    if bool(old.get("batch_seeds", False)) != (workers > 0):
        warnings.warn(f"resuming with workers={workers}: the checkpoint's batches were made "
                      f"with workers {'>= 1' if old.get('batch_seeds') else '= 0'}, so the "
                      "crops will differ from an uninterrupted run", stacklevel=3)
    if str(old.get("precision", "fp32")) != precision:
        warnings.warn(f"resuming with precision={precision!r}, the checkpoint's epochs were "
                      f"trained in {old.get('precision', 'fp32')!r}", stacklevel=3)
