"""Weight-space averaging of a fine-tuned model with the model it started from.

A model fine-tuned from another one stays in the same basin of the loss, so the straight
line between the two weight vectors is a line of good models: the model halfway along it
often generalises better than either end (weight-space ensembling; Wortsman et al.,
"Robust fine-tuning of zero-shot models", CVPR 2022, and "Model soups", ICML 2022).  Unlike
averaging the outputs of two networks it costs nothing at inference.

The nuclei recipe's last stage uses it (``average=0.5`` in ``recipes/data.py``): the
CPU fine-tuning stage is averaged with the GPU model it started from.  BatchNorm running
statistics are averaged with the weights; the size model is fitted anew, because the
style vectors of the averaged network are not those of either end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import flowseg


def average_weights(start: flowseg.Model, tuned: flowseg.Model,
                    weight: float = 0.5) -> flowseg.Model:
    """``(1 - weight) * start + weight * tuned``, tensor by tensor.

    Parameters
    ----------
    start, tuned : flowseg.Model
        Two models of the same architecture (``tuned`` fine-tuned from ``start``).
    weight : float
        Share of ``tuned`` in ``[0, 1]``: 0 gives ``start``, 1 gives ``tuned``.

    Returns
    -------
    flowseg.Model
        ``tuned`` itself, with averaged floating-point tensors (integer buffers such as
        BatchNorm's batch counters are kept from ``tuned``) and ``meta["training"]
        ["average"]`` recording the weight and the starting model.  Its size model is
        the one ``tuned`` had; refit it with :func:`refit_size`.
    """
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight!r}")
    sa, sb = start.net.state_dict(), tuned.net.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ValueError("the two models have different architectures (state dict keys or "
                         "shapes differ); only a model and its fine-tuned copy can be averaged")
    w = float(weight)
    out = {}
    for k, b in sb.items():
        if b.is_floating_point():
            a = sa[k].to(device=b.device, dtype=torch.float32)
            out[k] = ((1.0 - w) * a + w * b.float()).to(b.dtype)
        else:
            out[k] = b
    tuned.net.load_state_dict(out)
    rec = tuned.meta.setdefault("training", {})
    src = start.meta.get("path") or start.meta.get("source") or "start"
    rec["average"] = {"weight": w, "with": Path(str(src)).name}  # no machine paths
    return tuned


def refit_size(model: flowseg.Model, images: Sequence[np.ndarray],
               labels: Sequence[np.ndarray], *, channels=None, seed: int = 0,
               max_images: int = 64) -> Optional[dict]:
    """Fit ``model``'s size model anew on at most ``max_images`` (a seeded subset) of
    ``images``/``labels`` and store it in ``model.meta`` (as :func:`flowseg.train` does)."""
    from flowseg.engine.inference.size import fit_size_model

    keep = np.arange(len(images))
    if len(keep) > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_images, replace=False))
    return fit_size_model(model, [images[i] for i in keep], [labels[i] for i in keep],
                          channels=channels, seed=seed, store=True)
