"""The Segment tab's path for big images: block-by-block runs and the memory check.

No widgets are kept here; :class:`~flowseg._segment_panel.SegmentPanel` calls:

* :func:`layer_image` / :func:`goes_blockwise`: a multiscale layer, a lazy (dask / zarr)
  layer over 16 M pixels or any layer over 64 M pixels is segmented block by block
  (:mod:`flowseg.engine.blocks.lazy`); its labels go to a zarr file, never into memory;
* :func:`memory_check`: before an in-memory run, the predicted peak memory
  (:func:`flowseg.engine.memory.estimate_segment_memory`) against the free memory;
* :func:`ask_blockwise`: when that does not fit, a dialog offering the block-by-block run;
* :func:`blockwise_work`: the job function of a block-by-block run;
* :func:`estimate_crop`: the central window of a big image the diameter is estimated on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._segment_request import SegmentRequest
from .engine.memory import MemoryEstimate, estimate_segment_memory

__all__ = [
    "BLOCKWISE",
    "CANCEL",
    "IN_MEMORY",
    "NO_FLOWS",
    "ask_blockwise",
    "blockwise_work",
    "estimate_crop",
    "goes_blockwise",
    "layer_image",
    "memory_check",
]

BLOCKWISE, IN_MEMORY, CANCEL = "block by block", "in memory", "cancel"
#: What the panel says about thresholds of a block-by-block result.
NO_FLOWS = ("Segmented block by block: no flows are kept (no flow layers), so new "
            "thresholds apply when you press Run again.")
#: Edge of the central window (in pixels) the diameter of a big image is estimated on.
ESTIMATE_CROP = 1024


def layer_image(layer: Any) -> Any:
    """What a block-by-block run reads: the list of levels of a multiscale layer (level 0
    is segmented), else the layer's data (numpy, dask or zarr; never loaded here)."""
    return list(layer.data) if layer.multiscale else layer.data


def goes_blockwise(layer: Any) -> bool:
    """Whether ``layer`` is segmented block by block without asking (multiscale, lazy
    over 16 M pixels, or over 64 M pixels)."""
    from .engine.blocks.lazy import needs_blockwise

    return needs_blockwise(layer_image(layer))


def memory_check(req: SegmentRequest, model: Any) -> MemoryEstimate:
    """Predicted working memory of segmenting ``req`` in memory, and the memory free now."""
    return estimate_segment_memory(
        model, tuple(req.data.shape), channel_axis=req.channel_axis, z_axis=req.z_axis,
        do_3d=req.do_3d, stitch_threshold=req.mask.stitch_threshold, diameter=req.diameter,
        anisotropy=req.anisotropy, augment=req.augment)


def ask_blockwise(parent: Any, estimate: MemoryEstimate, name: str) -> str:
    """Ask how to segment an image whose in-memory run would not fit in free memory.

    Returns :data:`BLOCKWISE`, :data:`IN_MEMORY` or :data:`CANCEL`.
    """
    from qtpy.QtWidgets import QMessageBox

    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Warning)
    box.setWindowTitle("Not enough free memory")
    box.setText(f"{name}: {estimate.message()}")
    box.setInformativeText(
        "Block by block, the image is cut into overlapping blocks that are segmented one "
        "after the other; the labels are written to a zarr file next to the image and shown "
        "without loading them. Threshold changes then need a new run (no flows are kept).")
    block = box.addButton("Segment block by block", QMessageBox.AcceptRole)
    anyway = box.addButton("Run in memory anyway", QMessageBox.DestructiveRole)
    box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(block)
    box.exec_()
    clicked = box.clickedButton()
    if clicked is block:
        return BLOCKWISE
    return IN_MEMORY if clicked is anyway else CANCEL


def source_path(layer: Any) -> str | None:
    """The file or zarr group the layer was opened from (None for arrays made in Python)."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return None if not path else str(path)


def blockwise_work(load_model: Callable[[], Any], req: SegmentRequest
                   ) -> Callable[[Any, Any], Any]:
    """The job function segmenting ``req``'s layer block by block.

    Parameters
    ----------
    load_model : callable
        Returns the model (called in the worker thread).
    req : SegmentRequest

    Returns
    -------
    callable
        ``work(progress, cancel) -> BlockResult``, for :meth:`flowseg._jobs.Job.start`.
    """
    image, path = layer_image(req.layer), source_path(req.layer)

    def work(progress: Any, cancel: Any) -> Any:
        from .engine.blocks.lazy import segment_lazy

        return segment_lazy(image, load_model(), source_path=path, progress=progress,
                            cancel=cancel, **req.engine_kwargs())

    return work


def estimate_crop(data: Any, channel_axis: int | None, z_axis: int | None,
                  size: int = ESTIMATE_CROP) -> tuple[np.ndarray, int | None]:
    """The middle z slice (of a volume) and a central ``size`` x ``size`` window, loaded.

    Only that window is read from a lazy (dask / zarr) image.  Returns ``(crop,
    channel_axis of the crop)``.
    """
    nd = len(data.shape)
    index: list[Any] = [slice(None)] * nd
    if z_axis is not None:
        index[z_axis % nd] = data.shape[z_axis] // 2
    skip = {a % nd for a in (channel_axis, z_axis) if a is not None}
    spatial = [a for a in range(nd) if a not in skip]
    for a in spatial[-2:]:
        n = int(data.shape[a])
        lo = max(0, (n - size) // 2)
        index[a] = slice(lo, min(n, lo + size))
    crop = np.asarray(data[tuple(index)])
    cax = channel_axis
    if cax is not None:
        cax %= nd
        if z_axis is not None and cax > z_axis % nd:
            cax -= 1
    return crop, cax
