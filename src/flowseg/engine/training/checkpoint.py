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
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..io.modelfile import atomic_torch_save

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

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
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a torch file, or unsafe content
        raise ValueError(f"{path} is not a flowseg training checkpoint ({exc})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a flowseg training checkpoint")
    return ck
