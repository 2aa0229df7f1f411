"""3D segmentation: the 2D network run on YX, ZX and ZY slices, outputs averaged.

Each voxel gets a cell-probability logit from each of the three slice orientations and each
flow component from the two orientations whose plane contains that axis; the averages give
3D unit flows (after dividing the network's 5x flows by 5) and a 3D logit, which the 3D
dynamics turn into masks.  With ``anisotropy`` (z step / xy pixel size) the volume is
stretched along z before the passes and the outputs are resized back.

Memory: slices are processed in slabs of a few planes, so besides the input and one float32
accumulator of shape ``(4, Z, Y, X)`` (flows + logit at the model's scale) only a few slabs'
worth of tiles are alive at any time.

Speed: the slabs are independent, so they run on single-threaded workers
(:mod:`flowseg.engine.inference.workers`: one per PyTorch thread, at most 4), which keeps a
small shared CPU busy better than one multi-threaded call per slab; the outputs are summed
in the calling thread, in the same order as before: results are those of one thread per
slab to float rounding (~1e-6; the masks of the benchmark volumes are identical).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..network.tiling import inference_net, run_tiled
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .transforms import resize_image
from .workers import threaded_map, worker_count

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
    # (orientation, first plane): 0 = YX planes (index z), 1 = ZX (index y), 2 = ZY (index x)
    jobs = ([(0, a) for a in range(0, Zr, slab)] + [(1, a) for a in range(0, Yr, slab)]
            + [(2, a) for a in range(0, Xr, slab)])
    inference_net(model.net)  # build the cached inference copy once, before the workers

    def work(job: tuple[int, int], xr: np.ndarray = xr
             ) -> tuple[int, int, np.ndarray, np.ndarray]:
        k, a = job
        check_cancel(cancel)
        planes = (xr[a:a + slab] if k == 0 else xr[:, a:a + slab].transpose(1, 0, 2, 3)
                  if k == 1 else xr[:, :, a:a + slab].transpose(2, 0, 1, 3))
        y, st = run_tiled(model.net, planes, **opts)
        return k, a, y, st

    for k, a, y, st in threaded_map(work, jobs, worker_count(len(jobs))):
        b = a + y.shape[0]
        if k == 0:  # (n, 3, Y, X): dY, dX, p
            acc[1, a:b] += y[:, 0]
            acc[2, a:b] += y[:, 1]
            acc[3, a:b] += y[:, 2]
            s = st.sum(0)
            style_sum = s if style_sum is None else style_sum + s
        elif k == 1:  # (n, 3, Z, X): dZ, dX, p
            yt = y.transpose(1, 2, 0, 3)  # (3, Z, n, X)
            acc[0, :, a:b] += yt[0]
            acc[2, :, a:b] += yt[1]
            acc[3, :, a:b] += yt[2]
        else:  # (n, 3, Z, Y): dZ, dY, p
            yt = y.transpose(1, 2, 3, 0)  # (3, Z, Y, n)
            acc[0, :, :, a:b] += yt[0]
            acc[1, :, :, a:b] += yt[1]
            acc[3, :, :, a:b] += yt[2]
        done += y.shape[0]
        report(progress, "network", done, total, ("YX", "ZX", "ZY")[k] + " slices")
    del xr, work  # free the resized volume before the resize back and the dynamics
    acc[:3] *= np.float32(1.0 / (2 * 5.0))  # mean of two passes, 5x flows -> unit flows
    acc[3] *= np.float32(1.0 / 3.0)
    if (Zr, Yr, Xr) != (Z, Y, X):
        acc = resize_volume(acc, (Z, Y, X))
    assert style_sum is not None  # Zr >= 1: at least one YX slab ran
    styles = style_sum / max(float(np.sqrt((style_sum ** 2).sum())), 1e-12)
    return acc[:3], acc[3], styles.astype(np.float32)
