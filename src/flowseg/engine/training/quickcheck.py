"""The quick check that keeps a fine-tune from returning a model worse than its start.

Before training, a few fixed windows of the training images are cut at the model's scale
(each image zoomed by ``diam_mean / diameter``, as the crops are); the start network and
every candidate (the trained network, and intermediate ones) segment them and are scored
by :func:`check_model`: AP@0.5 of the masks against the corrected labels, then AP@0.75,
then the flow loss on the same windows, compared in that order.  A candidate replaces the
start only when its AP@0.5 is higher by :data:`MIN_GAIN` (and a later candidate replaces an
earlier trained one when its score is strictly better).

The windows come from the images the model is trained on (there are only a few, and the
user corrected all of them), so the check is optimistic for the trained network; it is
meant to catch what actually breaks fine-tunes -- a cell probability blown up to +-1000
everywhere, flows that collapse -- at the cost of two segmentations of small windows,
not to estimate the AP on unseen images.  With validation images, :func:`flowseg.train`
uses them instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..flows.diffusion import masks_to_flows
from ..flows.masks import compute_masks
from ..flows.metrics import average_precision
from ..flows.params import MaskParams
from ..inference.transforms import resize_image
from ..network.tiling import run_tiled
from ..progress import CancelToken, check_cancel

__all__ = ["MIN_GAIN", "CheckScore", "CheckSet", "check_model", "make_check_set"]

#: AP@0.5 on the check windows a trained network must gain over the start model to replace
#: it.  The windows come from the few images trained on, so a small gain there says little
#: about other images: on the DSB stained-tissue benchmark, one image the start model already
#: segmented well (check 0.897) reached 0.931 after 70 epochs while its AP@0.5 on 11 other
#: tissue images fell from 0.519 to 0.396 (docs/training.md).  Real adaptations to a new
#: modality gain far more (0.09 -> 0.91 from ``nuclei`` on one phase-contrast image).
MIN_GAIN = 0.05


@dataclass
class CheckSet:
    """Fixed windows of the training images at the model's scale.

    Attributes
    ----------
    images : list of np.ndarray
        ``(H, W, C)`` float32 normalised windows.
    labels : list of np.ndarray
        ``(H, W)`` int32 labels of the windows.
    flows : list of np.ndarray
        ``(2, H, W)`` float32 unit flows of the windows (for the loss).
    """

    images: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    flows: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def pixels(self) -> int:
        """Total pixels of the windows."""
        return int(sum(lab.size for lab in self.labels))


@dataclass(frozen=True)
class CheckScore:
    """Score of one network on a :class:`CheckSet`; ``key`` orders scores (higher is better).

    Attributes
    ----------
    ap50, ap75 : float
        Mean AP at IoU 0.5 and 0.75 over the windows.
    loss : float
        Mean training loss on the windows (lower is better).
    """

    ap50: float
    ap75: float
    loss: float

    @property
    def key(self) -> tuple[float, float, float]:
        """``(ap50, ap75, -loss)``: compared lexicographically."""
        return (round(self.ap50, 6), round(self.ap75, 6), -self.loss)

    def better_than(self, other: CheckScore | None) -> bool:
        """Strictly better than ``other`` (always True against None)."""
        return other is None or self.key > other.key

    def as_dict(self) -> dict:
        """Rounded numbers for the training record."""
        return {"ap50": round(self.ap50, 4), "ap75": round(self.ap75, 4),
                "loss": round(self.loss, 5)}


def _nearest_zoom(lab: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image (pixel-centre aligned, like resize_image)."""
    H, W = lab.shape
    ry = np.minimum(((np.arange(shape[0]) + 0.5) * H / shape[0]).astype(np.int64), H - 1)
    rx = np.minimum(((np.arange(shape[1]) + 0.5) * W / shape[1]).astype(np.int64), W - 1)
    return lab[ry[:, None], rx[None, :]]


def make_check_set(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   scales: Sequence[float], *, max_pixels: int = 256 * 256 * 4,
                   max_windows: int = 8, seed: int = 0) -> CheckSet:
    """Cut the check windows.

    Parameters
    ----------
    images : sequence of np.ndarray
        ``(C, H, W)`` normalised training images (the cached samples).
    labels : sequence of np.ndarray
        Their ``(H, W)`` labels.
    scales : sequence of float
        Zoom of each image to the model's scale (``diam_mean / diameter``).
    max_pixels : int
        Total pixels of all windows (at the model's scale); bounds the check's cost.
    max_windows : int
        At most this many images (spread evenly over the list) give one window each.
    seed : int
        Window positions.

    Returns
    -------
    CheckSet
    """
    n = len(images)
    pick = np.unique(np.linspace(0, n - 1, min(n, int(max_windows))).round().astype(int))
    side = int(np.sqrt(max_pixels / len(pick)))
    rng = np.random.default_rng(seed)
    out = CheckSet()
    for i in pick:
        img, lab, s = images[i], np.asarray(labels[i]), float(scales[i])
        H, W = lab.shape
        h, w = max(1, int(H * s)), max(1, int(W * s))
        # the window in source pixels, then zoomed (cheaper than zooming the whole image)
        wy, wx = min(H, int(np.ceil(side / s))), min(W, int(np.ceil(side / s)))
        y0 = int(rng.integers(0, H - wy + 1))
        x0 = int(rng.integers(0, W - wx + 1))
        shape = (max(16, min(h, round(wy * s))), max(16, min(w, round(wx * s))))
        x = np.moveaxis(np.asarray(img[:, y0:y0 + wy, x0:x0 + wx], np.float32), 0, -1)
        xz = resize_image(x, shape=shape)
        lz = _nearest_zoom(lab[y0:y0 + wy, x0:x0 + wx], shape).astype(np.int32)
        if not lz.any():
            continue
        out.images.append(np.ascontiguousarray(xz, np.float32))
        out.labels.append(lz)
        out.flows.append(masks_to_flows(lz).astype(np.float32))
    return out


def _loss(y: np.ndarray, flows: np.ndarray, fg: np.ndarray) -> float:
    """The training loss (:func:`flowseg.engine.training.schedule.flow_loss`) in numpy."""
    mse = float(np.mean((y[:2] - 5.0 * flows) ** 2)) / 2.0
    z = y[2].astype(np.float64)
    bce = float(np.mean(np.maximum(z, 0) - z * fg + np.log1p(np.exp(-np.abs(z)))))
    return mse + bce


def check_model(net, check: CheckSet, *, niter: int = 200,
                cancel: CancelToken = None) -> CheckScore:
    """Segment the check windows with ``net`` (at the model's scale) and score it.

    Parameters
    ----------
    net : torch.nn.Module
        The flow network (put in eval mode by the inference copy; not modified).
    check : CheckSet
    niter : int
        Dynamics steps (the default of segmentation at the model's diameter).
    cancel
        The engine's cancel token.

    Returns
    -------
    CheckScore
    """
    ap50, ap75, losses = [], [], []
    for x, lab, fl in zip(check.images, check.labels, check.flows):
        check_cancel(cancel)
        y, _ = run_tiled(net, x)
        masks = compute_masks(y[:2] * np.float32(0.2), y[2], MaskParams(niter=niter))
        ap = np.asarray(average_precision(lab, masks, thresholds=(0.5, 0.75)), float).ravel()
        ap50.append(ap[0])
        ap75.append(ap[1])
        losses.append(_loss(y, fl, (lab > 0).astype(np.float32)))
    if not ap50:
        return CheckScore(0.0, 0.0, float("inf"))
    return CheckScore(float(np.mean(ap50)), float(np.mean(ap75)), float(np.mean(losses)))
