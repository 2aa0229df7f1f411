"""Grow a trained model to a wider network without changing what it computes (Net2WiderNet).

A narrow model trained on the CPU is a good starting point for a wider one: every hidden
channel ``c`` of the wide network is a copy of channel ``c mod w`` of the narrow one (``w``
its width), and every weight that reads hidden channels is divided by the number of copies,
so the wide network gives the same outputs (to rounding) before training.  BatchNorm
statistics are copied with their channels; the style vector is L2-normalised over twice as
many equal entries, which the style projections undo by a factor ``sqrt(factor)``.  Small
noise is added to the copies so that training can tell them apart.

Chen, Goodfellow & Shlens, "Net2Net: accelerating learning via knowledge transfer",
ICLR 2016.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import flowseg
from flowseg.engine.net import nbase_for_width

__all__ = ["widen_model"]


_INPUT_BN = ("downsample.down.res_down_0.conv.conv_0.0.", "downsample.down.res_down_0.proj.0.")
_INPUT_CONV = ("downsample.down.res_down_0.conv.conv_0.2.", "downsample.down.res_down_0.proj.1.")


def _widen_tensor(name: str, t: torch.Tensor, factor: int) -> torch.Tensor:
    """The wide version of one state-dict entry (hidden channel ``j`` copies ``j mod w``)."""
    if t.ndim == 0 or name.startswith("diam_") or name.startswith(_INPUT_BN):
        return t.clone()
    out = t
    if not name.startswith("output.2."):  # dim 0 is hidden except for the 3 output maps
        out = out.repeat(factor, *([1] * (out.ndim - 1)))
    if out.ndim >= 2 and not name.startswith(_INPUT_CONV):  # dim 1 reads hidden channels
        # each input channel now arrives `factor` times; the style input is also divided
        # by sqrt(factor) by its L2 normalisation, so style projections shrink less
        scale = math.sqrt(factor) if ".full." in name else float(factor)
        out = out.repeat(1, factor, *([1] * (out.ndim - 2))) / scale
    return out.contiguous()


def widen_model(model: "flowseg.Model", width: int, *, noise: float = 0.01,
                seed: int = 0) -> "flowseg.Model":
    """A copy of ``model`` with base width ``width`` (a multiple of its own) and the same
    outputs before training.

    Parameters
    ----------
    model : flowseg.Model
        The trained narrow model (not modified).
    width : int
        New base width, an integer multiple of the model's.
    noise : float
        Relative standard deviation of the noise added to the widened convolution and
        linear weights (0 keeps the outputs identical).
    seed : int
        Seed of that noise.

    Returns
    -------
    flowseg.Model
        The widened model; its size model is dropped (the style vector changed length).
    """
    nbase = list(model.net.nbase)
    old = nbase[1]
    if width % old or width < old:
        raise ValueError(f"width {width} must be a multiple of the model's width {old}")
    factor = width // old
    new_nbase = nbase_for_width(width, nchan=nbase[0], depth=len(nbase) - 1)
    state = model.net.state_dict()
    gen = torch.Generator().manual_seed(int(seed))
    wide: dict[str, Any] = {}
    for name, t in state.items():
        w = _widen_tensor(name, t, factor)
        if noise and t.ndim >= 2 and factor > 1 and t.is_floating_point():
            w = w + noise * w.std() * torch.randn(w.shape, generator=gen, dtype=w.dtype)
        wide[name] = w
    meta = dict(model.meta)
    meta["nbase"] = new_nbase
    meta["size_model"] = None
    meta["widened_from"] = old
    return flowseg.Model.from_state_dict(wide, meta)

