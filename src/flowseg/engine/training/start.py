"""Pieces of :func:`flowseg.engine.training.train.train`: its result, the model to start from,
output-path checks and the per-image zoom of the crops."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.model import Model
from .prep import SampleSet

__all__ = ["TrainResult", "base_scales", "check_writable", "epoch_indices", "resolve_model"]


@dataclass
class TrainResult:
    """What :func:`train` returns; unpacks as ``model, history = train(...)``.

    Attributes
    ----------
    model : flowseg.Model
        The trained model, in eval mode, with its training record in ``model.meta``: the
        best by validation when validation data was given; for a fine-tune the best
        *checked* weights, which are the start model's own when no trained candidate
        checked better (``improved`` False); else the last.
    history : dict
        Per-epoch lists: ``epoch``, ``loss``, ``lr``, ``seconds``; per validation or
        check: ``val_epoch``, ``val_loss``, ``val_ap`` (AP@0.5 mean, None when unavailable;
        epoch 0 is the start model of a fine-tune).
    best_epoch : int or None
        1-based epoch whose weights were kept (0: the start model's), None when nothing
        was validated or checked.
    improved : bool
        False when a fine-tune kept its start model's weights (see ``note``).
    note : str
        What was kept and why, in plain words (also ``model.meta["training"]["note"]``).
    cancelled : bool
        Whether ``cancel`` stopped the run early.
    save_path, checkpoint_path : Path or None
        Files written.
    seconds : float
        Wall-clock training time, including the earlier runs of a resumed training.
    crops_per_second : float
        Training throughput of this call's epochs.
    precision : {"fp32", "bf16"}
        The precision this call trained in (:mod:`flowseg.engine.training.precision`).
    """

    model: Any
    history: dict
    best_epoch: int | None = None
    cancelled: bool = False
    save_path: Path | None = None
    checkpoint_path: Path | None = None
    seconds: float = 0.0
    crops_per_second: float = 0.0
    improved: bool = True
    note: str = ""
    precision: str = "fp32"
    extra: dict = field(default_factory=dict)

    def __iter__(self):
        yield self.model
        yield self.history


def check_writable(path: os.PathLike | None, overwrite: bool, what: str) -> Path | None:
    """``path`` as a Path after checking it can be written (None passes through).

    Raises ValueError (a folder), FileNotFoundError (no parent folder), PermissionError
    (read-only folder) or FileExistsError (exists and not ``overwrite``).
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder; give a file name")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"the folder of the {what} {p} does not exist")
    try:  # a real write also catches read-only file systems (and works for root)
        if not os.access(p.parent, os.W_OK | os.X_OK):
            raise OSError
        fd, tmp = tempfile.mkstemp(prefix=".flowseg-write-test.", dir=p.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError:
        raise PermissionError(f"cannot write the {what} {p}: folder {p.parent} is read-only"
                              ) from None
    if p.exists() and not overwrite:
        raise FileExistsError(f"{what} {p} already exists (pass overwrite=True to replace it)")
    return p


def resolve_model(model: Any, width: int, diam_mean: float | None, seed: int | None):
    """A copy of the start model (a Model, a name or path), or a new one for None."""
    if model is None:
        return Model.new(width=width, nchan=2, diam_mean=30.0 if diam_mean is None else diam_mean,
                         seed=seed)
    if isinstance(model, Model):
        return model.copy()
    if isinstance(model, (str, os.PathLike)):
        return Model.load(model)
    raise ValueError(f"model must be a flowseg Model, a model name or path, or None; got "
                     f"{type(model).__name__}")


def epoch_indices(rng: np.random.Generator, n: int, n_per_epoch: int) -> np.ndarray:
    """Sample indices of one epoch: whole permutations of ``range(n)``, cut to length."""
    reps = -(-n_per_epoch // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:n_per_epoch]


def base_scales(samples: SampleSet, diam_mean: float, rescale: bool,
                 diameter: float | None) -> np.ndarray:
    """Per-sample zoom bringing the objects to the model's diameter (clipped to 1/8..8)."""
    if not rescale:
        return np.ones(len(samples))
    d = np.full(len(samples), float(diameter)) if diameter else samples.diameters
    return np.clip(diam_mean / np.maximum(d, 1e-3), 0.125, 8.0)
