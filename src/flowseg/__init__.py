"""napari-flowseg: cell segmentation with flows (a re-implementation of the Cellpose method).

Importing :mod:`flowseg` is cheap and never imports napari or Qt: the heavy parts (torch,
the model) load on first use of :class:`Model` or :func:`train`.

The public API is what this module exports (``flowseg.<name>``).  :mod:`flowseg.engine` and
its sub-modules are internal: their layout may change between releases.

Progress and cancel: long calls (:meth:`Model.segment`, :func:`train`, ...) take
``progress=`` (a callable receiving :class:`ProgressEvent` objects) and ``cancel=`` (anything
with ``is_set()``, e.g. a :class:`threading.Event`); a cancelled call raises
:class:`Cancelled` or, for training, returns its best model so far.

Errors: input flowseg cannot use (an image, a file, a parameter, a model file) raises
:class:`InputError`, a ``ValueError`` with a message saying what is wrong, or one of its
subclasses :class:`FileReadError` (a corrupt / unreadable file, named), :class:`ModelFileError`,
:class:`UnsafeFileError` (a pickle that could run code, refused) and
:class:`NotEnoughMemoryError` (an in-memory run that would not fit in the free memory).
"""

from __future__ import annotations

from typing import Any

from ._version import __version__

__all__ = [
    "__version__",
    "masks_to_flows",
    "flows_to_masks",
    "average_precision",
    "stitch_masks",
    "Model",
    "Segmentation",
    "train",
    "ProgressEvent",
    "Cancelled",
    "load_sample",
    "segment_blocks",
    "InputError",
    "FileReadError",
    "ModelFileError",
    "UnsafeFileError",
    "NotEnoughMemoryError",
]

_LAZY = {
    "masks_to_flows": "flowseg.engine.flows.diffusion",
    "flows_to_masks": "flowseg.engine.flows.dynamics",
    "average_precision": "flowseg.engine.flows.metrics",
    "stitch_masks": "flowseg.engine.flows.stitch",
    "Model": "flowseg.engine.inference.model",
    "Segmentation": "flowseg.engine.inference.result",
    "train": "flowseg.engine.training.train",
    "ProgressEvent": "flowseg.engine.progress",
    "Cancelled": "flowseg.engine.progress",
    "load_sample": "flowseg.engine.data.samples",
    "segment_blocks": "flowseg.engine.blocks",
    "InputError": "flowseg.engine.errors",
    "FileReadError": "flowseg.engine.errors",
    "NotEnoughMemoryError": "flowseg.engine.errors",
    "ModelFileError": "flowseg.engine.io.modelfile",
    "UnsafeFileError": "flowseg.engine.io.segfile",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flowseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
