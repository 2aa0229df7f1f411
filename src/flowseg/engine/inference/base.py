"""``ModelBase``: a flow network plus its metadata; loading, saving, copying; devices.

``ModelBase.load`` accepts

* a model name, resolved by :mod:`flowseg.engine.io.registry`: a bundled model (``"cyto"``,
  ``"nuclei"``: files ``flowseg/models/<name>.pt``), then a user model (``<name>.pt`` in the
  user model folder, where the napari Train tab saves), then a model Cellpose downloaded
  (:func:`cellpose_models_dir`), so ``Model.load("cyto3")`` finds a Cellpose 3 model;
* a path to one of our model files (state dict + metadata, see
  :mod:`flowseg.engine.io.modelfile`),
* a path to a Cellpose 1-3 weight file (e.g. ``~/.cellpose/models/cyto3``), used as-is.

The inference modules (:mod:`~flowseg.engine.inference.prepare`,
:mod:`~flowseg.engine.inference.segment`, :mod:`~flowseg.engine.inference.volume`,
:mod:`~flowseg.engine.inference.size`) work on a ``ModelBase``;
:class:`flowseg.engine.inference.model.Model` adds the ``segment`` and
``estimate_diameter`` methods on top of them, so no inference module imports ``Model``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io.modelfile import (
    ModelFileError,
    _cellpose_meta,
    check_state_dict,
    export_cellpose,
    load_model_file,
    save_model_file,
)
from ..io.registry import bundled_model_dir, bundled_models, find_model
from ..network.tiling import run_tiled
from ..network.unet import FlowNet, nbase_for_width

__all__ = [
    "ModelBase",
    "available_models",
    "device_name",
    "resolve_device",
]

_DEFAULT_NORMALIZE = [1.0, 99.0]


def _models_dir() -> Path:
    return bundled_model_dir()


def available_models() -> list[str]:
    """Names of the bundled models (``flowseg/models/<name>.pt``); every model that loads
    by name is listed by :func:`flowseg.engine.io.registry.model_entries`."""
    return sorted(bundled_models(_models_dir()))


def resolve_device(device: Any = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else MPS if available, else CPU."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev


def device_name(device: torch.device) -> str:
    """``"cpu"``, ``"mps"`` or ``"cuda: <GPU name>"``, for logs and training records."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


class ModelBase:
    """A flow network (:class:`~flowseg.engine.network.unet.FlowNet`) with its metadata.

    Parameters
    ----------
    net : FlowNet
    meta : dict
        JSON-able metadata: ``nbase``, ``nchan``, ``diam_mean``, ``normalize`` (lo, hi),
        ``channels``, ``size_model`` ({"A": [...], "b": float} or None), ``training``, ...
    device : str or torch.device, optional
        See :func:`resolve_device`.
    """

    def __init__(self, net: FlowNet, meta: dict | None = None, device: Any = None) -> None:
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        meta = dict(meta or {})
        meta["nbase"] = list(net.nbase)
        meta["nchan"] = net.nchan
        meta.setdefault("diam_mean", float(net.diam_mean.item()))
        meta.setdefault("normalize", list(_DEFAULT_NORMALIZE))
        meta.setdefault("size_model", None)
        meta.setdefault("channels", None)
        self.meta = meta
        with torch.no_grad():
            self.net.diam_mean.fill_(float(meta["diam_mean"]))
        self._fast_net = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def new(cls, width: int = 32, nchan: int = 2, diam_mean: float = 30.0,
            device: Any = None, seed: int | None = None) -> ModelBase:
        """A fresh, randomly initialised model of base ``width`` (Cellpose: 32)."""
        if int(width) < 1 or int(nchan) < 1:
            raise ValueError(f"width and nchan must be >= 1, got width={width}, nchan={nchan}")
        if not float(diam_mean) > 0:
            raise ValueError(f"diam_mean must be > 0, got {diam_mean}")
        if seed is not None:
            torch.manual_seed(int(seed))
        net = FlowNet(nbase_for_width(int(width), int(nchan)), diam_mean=float(diam_mean))
        return cls(net, {"diam_mean": float(diam_mean), "diam_labels": float(diam_mean),
                         "source": "new"}, device=device)

    @classmethod
    def from_state_dict(cls, state_dict: dict, meta: dict | None = None,
                        device: Any = None) -> ModelBase:
        """Build a model from a (Cellpose-layout) state dict and optional metadata."""
        meta = {**_cellpose_meta(state_dict), **dict(meta or {})}
        net = FlowNet(meta["nbase"], diam_mean=float(meta["diam_mean"]))
        net.load_state_dict(check_state_dict(state_dict, net.state_dict()))
        return cls(net, meta, device=device)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike, device: Any = None) -> ModelBase:
        """Load a model by name (bundled, user or Cellpose, see :mod:`flowseg.engine.io.registry`),
        or our model file or a Cellpose 1-3 weight file by path."""
        if isinstance(name_or_path, ModelBase):
            return name_or_path
        s = os.fspath(name_or_path)
        p = Path(s).expanduser()
        if p.is_file():
            path = p
        elif p.is_dir():
            raise ValueError(f"model path {p} is a directory, not a model file")
        elif os.sep not in s and "/" not in s:  # a bare name; the error lists the names
            path = find_model(s, bundled_dir=_models_dir()).path
        else:
            raise FileNotFoundError(f"model file {p} not found")
        sd, meta = load_model_file(path)
        try:
            model = cls.from_state_dict(sd, meta, device=device)
        except (ModelFileError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelFileError(f"{path}: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                                 ) from None
        model.meta["path"] = str(path)
        return model

    def save(self, path: str | os.PathLike, overwrite: bool = False, half: bool = False
             ) -> Path:
        """Save weights and metadata in our format (atomic write); ``half`` stores the
        weights as float16 (half the size; loaded back as float32)."""
        meta = {k: v for k, v in self.meta.items() if k not in ("path", "source")}
        return save_model_file(path, self.net.state_dict(), meta, overwrite=overwrite,
                               half=half)

    def export_cellpose(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the weights as a Cellpose 3 ``CPnet`` state dict file."""
        return export_cellpose(self.net.state_dict(), path, overwrite=overwrite)

    def copy(self) -> ModelBase:
        """A deep copy (weights and metadata)."""
        return type(self)(copy.deepcopy(self.net), copy.deepcopy(self.meta),
                          device=self.device)

    # ------------------------------------------------------------------ properties
    @property
    def diam_mean(self) -> float:
        """Object diameter (pixels) the network works at; images are resized to it."""
        return float(self.meta["diam_mean"])

    @property
    def nchan(self) -> int:
        """Network input channels."""
        return int(self.net.nchan)

    @property
    def normalize(self) -> tuple[float, float]:
        """Default normalisation percentiles ``(lo, hi)``."""
        lo, hi = self.meta.get("normalize") or _DEFAULT_NORMALIZE
        return float(lo), float(hi)

    @property
    def size_model(self) -> dict | None:
        """``{"A": [...], "b": float}`` regression from style to log-diameter, or None."""
        return self.meta.get("size_model")

    def __repr__(self) -> str:
        name = self.meta.get("path") or self.meta.get("source", "")
        return (f"Model(nbase={self.net.nbase}, diam_mean={self.diam_mean:g}, "
                f"device={self.device.type!s}, {name})")

    def run_net(self, x: np.ndarray, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Network outputs on a prepared image; see
        :func:`flowseg.engine.network.tiling.run_tiled` for the keyword arguments."""
        return run_tiled(self.net, x, **kwargs)
