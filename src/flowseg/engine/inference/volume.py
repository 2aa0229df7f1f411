"""3D segmentation: the 2D network run on YX, ZX and ZY slices, outputs averaged.

Each voxel gets a cell-probability logit from each of the three slice orientations and each
flow component from the two orientations whose plane contains that axis; the averages give
3D unit flows (after dividing the network's 5x flows by 5) and a 3D logit, which the 3D
dynamics turn into masks.  With ``anisotropy`` (z step / xy pixel size) the volume is
stretched along z before the passes and the outputs are resized back.

Memory: slices are processed in slabs of a few planes, so besides the input and one float32
accumulator of shape ``(4, Z, Y, X)`` (flows + logit at the model's scale) only a slab's
worth of tiles is alive at any time.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..network.tiling import run_tiled
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .transforms import resize_image

__all__ = ["run_3d", "resize_volume"]


def resize_volume(v: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resize of ``(K, Z, Y, X)`` maps to ``(K, *shape)``, one map at a time."""
    shape = tuple(int(s) for s in shape)
    if tuple(v.shape[1:]) == shape:
        return v
    out = np.empty((v.shape[0], *shape), np.float32)
    with torch.inference_mode():
        for k in range(v.shape[0]):
            t = torch.from_numpy(np.ascontiguousarray(v[k], dtype=np.float32))[None, None]
            r = F.interpolate(t, size=shape, mode="trilinear", align_corners=False)
            out[k] = r[0, 0].numpy()
    return out


def _resize_input(x: np.ndarray, rescale: float, anisotropy: float) -> np.ndarray:
    Z, Y, X, _ = x.shape
    if rescale != 1.0:
        x = resize_image(x, (max(1, int(Y * rescale)), max(1, int(X * rescale))))
    zr = max(1, int(Z * anisotropy * rescale))
    if zr != Z:
        # resize (Z, X) planes indexed by Y
        x = np.ascontiguousarray(resize_image(np.ascontiguousarray(x.transpose(1, 0, 2, 3)),
                                              (zr, x.shape[2])).transpose(1, 0, 2, 3))
    return x


def run_3d(model: ModelBase, x: np.ndarray, rescale: float, *, anisotropy: Optional[float] = None,
           bsize: int = 224, tile_overlap: float = 0.1, batch_size: int = 8,
           augment: bool = False, slab: Optional[int] = None, whole_max: int = 0,
           pad_extra: int = 8,
           progress: Optional[ProgressCallback] = None,
           cancel: CancelToken = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flows, cell probability and style of a normalised volume.

    Parameters
    ----------
    model : ModelBase
    x : np.ndarray
        ``(Z, Y, X, nchan)`` float32, normalised.
    rescale : float
        ``diam_mean / diameter``.
    anisotropy : float, optional
        Z sampling relative to XY (2.0: z step twice the pixel size).
    slab : int, optional
        Planes per network slab (default ``max(batch_size, 8)``).

    Returns
    -------
    flows : np.ndarray
        float32 ``(3, Z, Y, X)`` unit flows (dZ, dY, dX) at image resolution.
    cellprob : np.ndarray
        float32 ``(Z, Y, X)`` mean logit.
    styles : np.ndarray
        float32 ``(S,)`` style of the YX slices.
    """
    Z, Y, X, _ = x.shape
    anis = 1.0 if anisotropy is None else float(anisotropy)
    xr = _resize_input(x, float(rescale), anis)
    Zr, Yr, Xr, _ = xr.shape
    slab = int(slab or max(int(batch_size), 8))
    acc = np.zeros((4, Zr, Yr, Xr), np.float32)  # dZ, dY, dX, logit
    total = Zr + Yr + Xr
    done = 0
    style_sum: Optional[np.ndarray] = None
    opts: dict[str, Any] = {"bsize": bsize, "tile_overlap": tile_overlap, "batch_size": batch_size,
            "augment": augment, "whole_max": whole_max, "pad_extra": pad_extra, "cancel": cancel}
    # pass 0: YX planes (index z) -> (n, 3, Y, X): dY, dX, p
    for a in range(0, Zr, slab):
        check_cancel(cancel)
        y, st = run_tiled(model.net, xr[a:a + slab], **opts)
        acc[1, a:a + slab] += y[:, 0]
        acc[2, a:a + slab] += y[:, 1]
        acc[3, a:a + slab] += y[:, 2]
        s = st.sum(0)
        style_sum = s if style_sum is None else style_sum + s
        done += y.shape[0]
        report(progress, "network", done, total, "YX slices")
    # pass 1: ZX planes (index y) -> (n, 3, Z, X): dZ, dX, p
    for a in range(0, Yr, slab):
        check_cancel(cancel)
        y, _ = run_tiled(model.net, xr[:, a:a + slab].transpose(1, 0, 2, 3), **opts)
        y = y.transpose(1, 2, 0, 3)  # (3, Z, n, X)
        acc[0, :, a:a + slab] += y[0]
        acc[2, :, a:a + slab] += y[1]
        acc[3, :, a:a + slab] += y[2]
        done += y.shape[2]
        report(progress, "network", done, total, "ZX slices")
    # pass 2: ZY planes (index x) -> (n, 3, Z, Y): dZ, dY, p
    for a in range(0, Xr, slab):
        check_cancel(cancel)
        y, _ = run_tiled(model.net, xr[:, :, a:a + slab].transpose(2, 0, 1, 3), **opts)
        y = y.transpose(1, 2, 3, 0)  # (3, Z, Y, n)
        acc[0, :, :, a:a + slab] += y[0]
        acc[1, :, :, a:a + slab] += y[1]
        acc[3, :, :, a:a + slab] += y[2]
        done += y.shape[3]
        report(progress, "network", done, total, "ZY slices")
    del xr
    acc[:3] *= np.float32(1.0 / (2 * 5.0))  # mean of two passes, 5x flows -> unit flows
    acc[3] *= np.float32(1.0 / 3.0)
    if (Zr, Yr, Xr) != (Z, Y, X):
        acc = resize_volume(acc, (Z, Y, X))
    assert style_sum is not None  # Zr >= 1: at least one YX slab ran
    styles = style_sum / max(float(np.sqrt((style_sum ** 2).sum())), 1e-12)
    return acc[:3], acc[3], styles.astype(np.float32)
