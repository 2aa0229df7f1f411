"""Blockwise segmentation for callers holding a lazy image (the napari widget, notebooks).

A napari layer opened from zarr / OME-Zarr or a big TIFF holds a dask or zarr array (the
full-resolution level of a multiscale layer); :func:`needs_blockwise` says whether to take
the blockwise path, :func:`segment_lazy` runs it with the same keyword arguments as
:meth:`flowseg.Model.segment` and picks an output that never replaces anything: a new
label image of an OME-Zarr source, a new ``<name>_masks.zarr`` beside a file, or a folder in
the temporary directory.  The returned :class:`~flowseg.engine.blocks.run.BlockResult`
opens lazily (``result.to_dask()``), so a Labels layer of any size costs no memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import CancelToken, ProgressCallback
from .cluster import ClusterOptions, machine_cores
from .ome import label_exists, read_ome
from .run import BlockResult, segment_blocks
from .source import is_zarr_path, require_zarr

__all__ = [
    "BLOCKWISE_ELEMENTS",
    "LAZY_BLOCKWISE_ELEMENTS",
    "default_output",
    "needs_blockwise",
    "segment_lazy",
]

#: Images with more elements than this (64 Mi, e.g. 8192 x 8192) are segmented blockwise
#: even when they are in memory: the in-memory path would need tens of GB.
BLOCKWISE_ELEMENTS = 1 << 26
#: Lazy (dask / zarr) images with more elements than this (16 Mi, 4096 x 4096) are
#: segmented blockwise; smaller ones are loaded and segmented whole (which keeps the flows
#: for re-thresholding without the network).
LAZY_BLOCKWISE_ELEMENTS = 1 << 24


def needs_blockwise(data: Any) -> bool:
    """Whether an image should be segmented blockwise: a multiscale image (a list of
    levels), a dask / zarr array over :data:`LAZY_BLOCKWISE_ELEMENTS`, or any array over
    :data:`BLOCKWISE_ELEMENTS`."""
    if isinstance(data, (list, tuple)):
        return True
    size = int(np.prod(getattr(data, "shape", ())))
    lazy = type(data).__module__.split(".")[0] in ("dask", "zarr")
    return size > (LAZY_BLOCKWISE_ELEMENTS if lazy else BLOCKWISE_ELEMENTS)


def _ome_group(path: Path) -> Path | None:
    """The OME-Zarr image group a path belongs to (the path or a parent), if any."""
    zarr = require_zarr()
    for p in (path, *path.parents):
        if not is_zarr_path(p):
            continue
        try:
            node = zarr.open(str(p), mode="r")
        except (OSError, ValueError):  # pragma: no cover - unreadable: not ours to judge
            return None
        if not hasattr(node, "shape") and read_ome(node) is not None:
            return p
    return None


def _free_zarr_path(folder: Path, stem: str) -> Path:
    out, k = folder / f"{stem}_masks.zarr", 1
    while out.exists():
        k += 1
        out = folder / f"{stem}_masks-{k}.zarr"
    return out


def default_output(source_path: str | os.PathLike | None, shape: tuple[int, ...]
                   ) -> tuple[Any, Any]:
    """``(OME-Zarr group to read or None, out)``: a new output for an image of ``shape``.

    An OME-Zarr image whose full-resolution array has this shape gets a new label image
    (``flowseg``, ``flowseg-2``, ...; the group is then read, so the label image matches its
    axes); any other file ``NAME.ext`` a new ``NAME_masks.zarr`` (``NAME_masks-2.zarr``,
    ...) in its folder when that is writable; otherwise, or without a path, ``out`` is None
    (a new folder in the temporary directory).  Nothing existing is ever replaced.
    """
    if source_path is None:
        return None, None
    path = Path(source_path).expanduser()
    group = _ome_group(path) if path.exists() else None
    if group is not None:
        g = require_zarr().open_group(str(group), mode="r")
        ome = read_ome(g)
        same = ome is not None and tuple(g[ome.dataset].shape) == tuple(shape)
        if same and os.access(group, os.W_OK):
            name, k = "flowseg", 1
            while label_exists(g, name):
                k += 1
                name = f"flowseg-{k}"
            return group, name
        path = group
    folder = path.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        return None, None
    return None, _free_zarr_path(folder, path.name.split(".")[0])


def segment_lazy(data: Any, model: Any, *, source_path: str | os.PathLike | None = None,
                 out: Any = None, block_size: Any = None, cluster: ClusterOptions | None = None,
                 client: Any = None, progress: ProgressCallback | None = None,
                 cancel: CancelToken = None, **kwargs: Any) -> BlockResult:
    """Segment a lazy (or very big) image blockwise, as the napari widget needs it.

    Parameters
    ----------
    data : array-like or list of array-likes
        numpy, dask or zarr array; for a multiscale image the list of levels (level 0 is
        segmented).
    model : Model
    source_path : str or Path, optional
        Where the image came from (a napari layer's ``source.path``): picks the output
        (:func:`default_output`) when ``out`` is None.
    out : optional
        As in :func:`~flowseg.engine.blocks.run.segment_blocks`.
    block_size : optional
        Default 1024 (2D); in 3D up to 256, as memory allows
        (:func:`~flowseg.engine.blocks.run.default_block_size`).
    cluster : ClusterOptions, optional
        Default: worker threads in this process (no start-up cost, nothing to pickle):
        two workers sharing the cores.
    client, progress, cancel
        As in :func:`~flowseg.engine.blocks.run.segment_blocks`.
    **kwargs
        :meth:`flowseg.Model.segment` arguments (``channels``, ``channel_axis``,
        ``z_axis``, ``diameter``, ``do_3d``, ``anisotropy``, thresholds, ...).
    """
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("empty multiscale image")
        data = data[0]
    read = data
    if out is None:
        group, out = default_output(source_path, tuple(data.shape))
        if group is not None:
            read = group  # same pixels, and the labels go into its labels/ group
    if client is None and cluster is None:
        workers = 2 if machine_cores() >= 2 else 1
        cluster = ClusterOptions(workers=workers, processes=False,
                                 threads=max(1, machine_cores() // workers))
    return segment_blocks(read, model, block_size=block_size, out=out, client=client,
                          cluster=cluster, progress=progress, cancel=cancel, **kwargs)
