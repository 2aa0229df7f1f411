"""Validation during training: loss on fixed crops and AP of full segmentations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

from ..flows.metrics import average_precision
from ..progress import check_cancel, report
from .augment import make_batch
from .prep import SampleSet, median_diameter
from .schedule import flow_loss

__all__ = ["validate", "val_loss", "segmentation_ap"]


def val_loss(net: torch.nn.Module, val: SampleSet, scales: np.ndarray, crop: int,
             batch_size: int = 8) -> float:
    """Mean loss on un-augmented crops (same position every call) of the validation set."""
    rng = np.random.default_rng(0)
    device = next(net.parameters()).device
    net.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(val), batch_size):
            idx = list(range(s, min(s + batch_size, len(val))))
            x, y = make_batch(val.images, val.flows, val.fgs, scales, idx, rng, crop,
                              scale_range=(1.0, 1.0), rotate=False, flip=False)
            out = net(torch.from_numpy(x).to(device))[0]
            total += float(flow_loss(out, torch.from_numpy(y).to(device))) * len(idx)
    return total / len(val)


def _ap50(result) -> float:
    ap = result[0] if isinstance(result, tuple) else result
    return float(np.asarray(ap, dtype=np.float64).ravel()[0])


def segmentation_ap(model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    channels=None, progress=None, cancel=None) -> Optional[float]:
    """Mean AP@0.5 of ``model.segment`` (at the true median diameter) over the images.

    Returns None when no image has 2D labels with objects.
    """
    aps = []
    if hasattr(model, "_fast_net"):
        model._fast_net = None  # weights changed since any cached inference copy was made
    for k, (img, gt) in enumerate(zip(images, labels)):
        check_cancel(cancel)
        gt = np.asarray(gt)
        d = median_diameter(gt) if gt.ndim == 2 else None
        if gt.ndim != 2 or not d:
            continue
        seg = model.segment(img, diameter=d, channels=channels)
        aps.append(_ap50(average_precision(gt, seg.masks, thresholds=(0.5,))))
        report(progress, "validate", k + 1, len(images))
    return float(np.mean(aps)) if aps else None


def validate(model, val: SampleSet, images, labels, *, crop: int, rescale: bool = True,
             channels=None, progress=None, cancel=None) -> tuple[float, Optional[float]]:
    """Validation loss and AP@0.5; leaves the network in eval mode."""
    dm = model.diam_mean
    scales = (np.clip(dm / np.maximum(val.diameters, 1e-3), 0.125, 8.0) if rescale
              else np.ones(len(val)))
    vl = val_loss(model.net, val, scales, crop)
    ap = segmentation_ap(model, images, labels, channels=channels, progress=progress,
                         cancel=cancel)
    return vl, ap

