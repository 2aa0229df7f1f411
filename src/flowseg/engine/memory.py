"""How much memory an in-memory segmentation needs, before it runs.

:func:`estimate_segment_memory` predicts the *working memory* of
:meth:`flowseg.Model.segment` on an image of a given shape: the peak resident memory the
call adds to the process (the image itself, Python, torch and the model are not counted:
they are in memory already).  It compares that with the memory available now
(:func:`available_memory`); when it does not fit, the CLI and the napari widget say so and
propose the block-by-block path (:mod:`flowseg.engine.blocks`), whose memory does not grow
with the image.

The formula is a calibrated sum of what the pipeline holds at its peak::

    working = BASE + PER_NET * P * width / 32 + PER_IMAGE * N + PER_UPSCALED * max(M - N, 0)

``N`` is the number of pixels (voxels) of the image, ``M`` of the image resized to the
model's object size (``N * (diam_mean / diameter)^2``, in 3D ``^3`` times the anisotropy;
a stack segmented slice by slice resizes one slab of slices at a time), ``P`` the pixels
of one network batch (a whole image up to 1024 x 1024 after padding, else ``batch_size``
tiles of 224 x 224) and ``width`` the network's first-level channels (32 for
Cellpose-style networks).  Up to ~16 M pixels the network's activations dominate, not the
image.  The coefficients come from measured peaks (``benchmarks/bench_memory.py``: fresh
processes on CPU, dense synthetic nuclei, the bundled models; table in ``docs/scale.md``):
the estimate was 3 % below to 16 % above the measured working memory of 2D images from
512 x 512 to 4096 x 4096 and of volumes from 32 x 128 x 128 to 96 x 384 x 384 (35 % above
for a 256 x 256 image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

# No engine module is imported at module level: this module is imported by the napari
# widget and the CLI before any model is loaded, and the shape rules it needs
# (inference.prepare, inference.transforms, network.tiling) import torch; they are imported
# inside the functions that use them.

__all__ = [
    "MemoryEstimate",
    "available_memory",
    "estimate_segment_memory",
    "format_bytes",
]

# ---- calibration (benchmarks/bench_memory.py, docs/scale.md; bytes) ----------------------
#: Fixed cost of a first run in a fresh process (numba / oneDNN code, thread pools, caches).
BASE_2D, BASE_3D = 0.2 * 2 ** 30, 0.12 * 2 ** 30
#: Network activations per pixel of one batch, for a width-32 network.
PER_NET = 1450.0
#: Bytes per image pixel (voxel): flows, probability, masks, the dynamics' buffers.
PER_IMAGE_2D, PER_IMAGE_3D = 31.0, 42.0
#: Bytes per pixel (voxel) the resize to the model's object size adds beyond the image's
#: own (only when objects are smaller than the model's: the image is enlarged).
PER_UPSCALED_2D, PER_UPSCALED_3D = 30.0, 40.0

_WHOLE_MAX = 1024 * 1024  # Model.segment's default whole_max
_BSIZE = 224
_DEFAULT_NBASE = (2, 32, 64, 128, 256)


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup v2 memory limit (a container's or a cluster
    job's), None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def _machine_available() -> int | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with dask.distributed
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:  # pragma: no cover - without psutil
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return None  # pragma: no cover


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (None when the OS does not say).

    ``psutil.virtual_memory().available`` (psutil comes with dask.distributed; else
    ``MemAvailable`` of ``/proc/meminfo``), or less when a cgroup v2 memory limit (a
    container, a cluster job) leaves less room.
    """
    found = [v for v in (_machine_available(), _cgroup_room()) if v is not None]
    return min(found) if found else None


def format_bytes(n: float) -> str:
    """``n`` bytes as ``"1.5 GB"`` (powers of 1024, spelled as people read them)."""
    if n >= 2 ** 30:
        return f"{n / 2 ** 30:.1f} GB"
    return f"{max(1, math.ceil(n / 2 ** 20))} MB"


@dataclass(frozen=True)
class MemoryEstimate:
    """Predicted working memory of an in-memory run and the memory available now.

    Attributes
    ----------
    working : int
        Bytes the run adds to the process at its peak.
    available : int or None
        Bytes available now (None: unknown, taken as enough).
    image_pixels : int
        Pixels (voxels) of the image.
    model_pixels : int
        Pixels (voxels) at the model's object size.
    spatial_ndim : int
        2 or 3.
    diameter_assumed : bool
        No diameter was given: the model's own was assumed (an estimated diameter that is
        smaller makes the run bigger).
    """

    working: int
    available: int | None
    image_pixels: int
    model_pixels: int
    spatial_ndim: int
    diameter_assumed: bool = False

    @property
    def fits(self) -> bool:
        """Whether the run fits in the memory available now."""
        return self.available is None or self.working <= self.available

    def message(self) -> str:
        """One sentence for the user: what is needed, what is free."""
        need = f"segmenting it in memory needs about {format_bytes(self.working)}"
        if self.diameter_assumed:
            need += " (at the model's own diameter)"
        if self.available is None:
            return need
        return f"{need}; {format_bytes(self.available)} are free now"


def _nbase(model: Any) -> Sequence[int]:
    net = getattr(model, "net", None)
    nbase = getattr(net, "nbase", None)
    return tuple(nbase) if nbase else _DEFAULT_NBASE


def _padded(n: int) -> int:
    return 16 * math.ceil(n / 16) + 16


def _batch_pixels(h: int, w: int, n_images: int, batch_size: int, augment: bool) -> int:
    """Pixels of the largest network batch for ``n_images`` planes of ``h`` x ``w``."""
    from .network.tiling import tile_starts  # lazy: torch (see the note at the imports)

    hp, wp = _padded(h), _padded(w)
    if not augment and hp * wp <= _WHOLE_MAX:
        ly, lx, ntiles = hp, wp, 1
    else:
        hp, wp = (max(hp, _BSIZE), max(wp, _BSIZE)) if augment else (hp, wp)
        ly, lx = min(_BSIZE, hp), min(_BSIZE, wp)
        ntiles = len(tile_starts(hp, _BSIZE, 0.1, augment)) * \
            len(tile_starts(wp, _BSIZE, 0.1, augment))
    per_batch = max(1, min(batch_size, batch_size * _BSIZE * _BSIZE // (ly * lx)))
    return int(min(per_batch, ntiles * n_images) * ly * lx)


def estimate_segment_memory(model: Any, shape: Sequence[int], *,
                            channel_axis: int | None = None, z_axis: int | None = None,
                            do_3d: bool = False, stitch_threshold: float = 0.0,
                            diameter: float | None = None, anisotropy: float | None = None,
                            batch_size: int = 8, augment: bool = False,
                            available: int | None = None) -> MemoryEstimate:
    """Predicted working memory of ``model.segment`` on an image of ``shape``.

    Parameters
    ----------
    model : Model
        Its ``diam_mean`` and network width are used (anything without them: a width-32
        network at diameter 30).
    shape : sequence of int
        The image's shape, with the same axes rules as :meth:`flowseg.Model.segment`.
    channel_axis, z_axis, do_3d, stitch_threshold, diameter, anisotropy, batch_size, augment
        As in :meth:`flowseg.Model.segment`.  ``diameter=None`` assumes the model's own.
    available : int, optional
        Bytes available (default: :func:`available_memory` now).

    Returns
    -------
    MemoryEstimate

    Raises
    ------
    ValueError
        For a shape :meth:`flowseg.Model.segment` refuses (too few or too many axes, 3D
        settings on a 2D image).
    """
    # lazy: torch (see the note at the imports)
    from .inference.prepare import spatial_ndim
    from .inference.transforms import find_channel_axis

    shape = tuple(int(s) for s in shape)
    sdim = spatial_ndim(SimpleNamespace(ndim=len(shape), shape=shape), channel_axis, z_axis,
                        do_3d, stitch_threshold)
    cax = channel_axis
    if cax is None and len(shape) == sdim + 1:
        cax = find_channel_axis(shape, sdim)
    spatial = [n for a, n in enumerate(shape) if cax is None or a != cax % len(shape)]
    if sdim == 3 and z_axis is not None:
        z = z_axis % len(shape)
        spatial = [shape[z]] + [n for a, n in enumerate(shape)
                                if a != z and (cax is None or a != cax % len(shape))]
    diam_mean = float(getattr(model, "diam_mean", 30.0) or 30.0)
    r = diam_mean / float(diameter) if diameter else 1.0
    width = float(_nbase(model)[1])
    n_img = math.prod(spatial)
    yr, xr = max(1, int(spatial[-2] * r)), max(1, int(spatial[-1] * r))
    if sdim == 3 and do_3d:
        zr = max(1, int(spatial[0] * r * float(anisotropy or 1.0)))
        n_model, n_same = zr * yr * xr, n_img
        base, per_img, per_up = BASE_3D, PER_IMAGE_3D, PER_UPSCALED_3D
        # slabs of planes in three orientations: the largest batch sets the activations
        slab = max(batch_size, 8)
        batch = max(_batch_pixels(h, w, slab, batch_size, augment)
                    for h, w in ((yr, xr), (zr, xr), (zr, yr)))
    else:
        planes = spatial[0] if sdim == 3 else 1
        slab = min(planes, max(1, batch_size) * 4)  # _run_2d resizes slab by slab
        n_model, n_same = slab * yr * xr, slab * spatial[-2] * spatial[-1]
        base, per_img, per_up = BASE_2D, PER_IMAGE_2D, PER_UPSCALED_2D
        batch = _batch_pixels(yr, xr, slab, batch_size, augment)
    working = base + PER_NET * batch * width / 32.0 + per_img * n_img + \
        per_up * max(n_model - n_same, 0)
    if available is None:
        available = available_memory()
    return MemoryEstimate(working=int(working), available=available, image_pixels=int(n_img),
                          model_pixels=int(n_model), spatial_ndim=sdim,
                          diameter_assumed=not diameter)

