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

The noise is not enough: two copies of a channel read the same inputs and are read with the
same weights, so SGD gives them the same updates and they stay copies (cosine similarity
0.999 after 100 epochs of stage 4 of the nuclei model), leaving the wide network with the
capacity of the narrow one.  :func:`refresh_copies` fixes such a network: it folds each pair
of copies back into one channel and re-initialises the spare channels at random, with zero
weights reading them, so they start unlike the others and the outputs stay the same.  (On
the nuclei model, 100 epochs after it did not raise the validation AP: docs/training.md.)
"""

from __future__ import annotations

import math
from typing import Any

import torch

import flowseg
from flowseg.engine.network.unet import nbase_for_width

__all__ = ["widen_model", "refresh_copies", "copy_similarity"]


_INPUT_BN = ("downsample.down.res_down_0.conv.conv_0.0.", "downsample.down.res_down_0.proj.0.")
_INPUT_CONV = ("downsample.down.res_down_0.conv.conv_0.2.", "downsample.down.res_down_0.proj.1.")


def _is_hidden_out(name: str, t: torch.Tensor) -> bool:
    """Whether dim 0 of a state-dict entry indexes hidden channels (not the input
    BatchNorms, the diameters or the 3 output maps)."""
    return not (t.ndim == 0 or name.startswith(("diam_", "output.2.", *_INPUT_BN)))


def _is_hidden_in(name: str, t: torch.Tensor) -> bool:
    """Whether dim 1 of a state-dict entry reads hidden channels (not the image channels)."""
    return t.ndim >= 2 and not name.startswith(_INPUT_CONV)


def _widen_tensor(name: str, t: torch.Tensor, factor: int) -> torch.Tensor:
    """The wide version of one state-dict entry (hidden channel ``j`` copies ``j mod w``)."""
    out = t.clone()
    if _is_hidden_out(name, t):
        out = out.repeat(factor, *([1] * (out.ndim - 1)))
    if _is_hidden_in(name, t):
        # each input channel now arrives `factor` times; the style input is also divided
        # by sqrt(factor) by its L2 normalisation, so style projections shrink less
        scale = math.sqrt(factor) if ".full." in name else float(factor)
        out = out.repeat(1, factor, *([1] * (out.ndim - 2))) / scale
    return out.contiguous()


def widen_model(model: flowseg.Model, width: int, *, noise: float = 0.01,
                seed: int = 0) -> flowseg.Model:
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


def refresh_copies(model: flowseg.Model, *, factor: int = 2, scale: float = 0.1,
                   seed: int = 0) -> flowseg.Model:
    """Fold the channel copies of a Net2Net-widened model and re-initialise the spares.

    Hidden channel ``j`` and its copies ``j + k w`` (``w`` = width / ``factor``) become one
    channel ``j`` (weights that read them are summed; the style projections by
    ``sqrt(factor)``, undoing :func:`widen_model`); channels ``w .. width-1`` get random
    weights (``scale`` times the standard deviation of the tensor's kept rows), zero bias,
    fresh BatchNorm statistics, and every weight that reads them is zero.  The outputs are
    unchanged up to the small contribution of the new channels to the style vector's norm,
    and the new channels receive gradients of their own from the first step.

    Parameters
    ----------
    model : flowseg.Model
        A model whose hidden channels are (near-)copies in ``factor`` blocks, e.g. the
        result of :func:`widen_model` after training (not modified).
    factor : int
        Number of copies of each channel.
    scale : float
        Relative size of the new channels' incoming weights.
    seed : int
        Seed of the random weights.

    Returns
    -------
    flowseg.Model
        Same width and architecture; size model dropped (the style vector changes).
    """
    nbase = list(model.net.nbase)
    if factor < 2 or any(c % factor for c in nbase[1:]):
        raise ValueError(f"factor {factor} must be >= 2 and divide every width in {nbase[1:]}")
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, Any] = {}
    for name, t in model.net.state_dict().items():
        w = t.clone()
        if _is_hidden_in(name, t):  # fold the copies' read weights into the first block
            n = t.shape[1] // factor
            parts = w.split(n, dim=1)
            folded = sum(parts[1:], parts[0].clone())
            if ".full." in name:
                folded = folded / math.sqrt(factor)
            w = torch.cat([folded] + [torch.zeros_like(p) for p in parts[1:]], dim=1)
        if _is_hidden_out(name, t):
            n = t.shape[0] // factor
            if not t.is_floating_point():  # BatchNorm batch counters
                pass
            elif name.endswith("running_var") or (t.ndim == 1 and name.endswith(".weight")):
                w[n:] = 1.0  # BatchNorm variances and scales
            elif t.ndim == 1:  # biases, BN shifts and running means
                w[n:] = 0.0
            else:
                std = float(w[:n].std()) or 1.0
                w[n:] = scale * std * torch.randn(w[n:].shape, generator=gen, dtype=w.dtype)
        out[name] = w
    meta = dict(model.meta)
    meta["size_model"] = None
    meta["refreshed_copies"] = int(factor)
    return flowseg.Model.from_state_dict(out, meta)


def copy_similarity(model: flowseg.Model, factor: int = 2) -> float:
    """Mean cosine similarity between each hidden channel's incoming 3x3 convolution weights
    and those of its Net2Net copy (channel ``j`` and ``j + w``): about 1 while the copies
    are still copies, about 0 for independent channels."""
    sims = []
    for t in model.net.state_dict().values():
        if t.ndim == 4 and t.shape[-1] == 3 and t.shape[0] % factor == 0:
            parts = t.float().flatten(1).split(t.shape[0] // factor, dim=0)
            for p in parts[1:]:
                sims.append(torch.nn.functional.cosine_similarity(parts[0], p, dim=1).mean())
    return float(torch.stack(sims).mean()) if sims else float("nan")
