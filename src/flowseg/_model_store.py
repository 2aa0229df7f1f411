"""The models the dock offers: bundled and user models, files loaded by hand, a load cache.

Shared by the Segment and Train tabs through the dock widget.  Loading happens in worker
threads (:meth:`ModelStore.load`); reading a model's default diameter for the picker loads
it once in the main thread (small files, cached).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ._model_registry import available_models
from ._segment_request import AUTO_MODEL, LOAD_FILE

__all__ = ["AUTO_LABEL", "ModelStore", "devices"]

#: the picker's label of :data:`AUTO_MODEL`
AUTO_LABEL = "auto (nearest style)"


def devices() -> list[str]:
    """Torch devices usable here (``cpu`` first)."""
    import torch

    out = ["cpu"]
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


class ModelStore:
    """Model choices for the pickers and a cache of loaded models."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], Any] = {}  # (path, device) -> Model
        self.extra: list[tuple[str, str]] = []  # (label, path) of files loaded by the user
        self._lock = threading.Lock()

    def choices(self) -> list[tuple[str, str]]:
        """``(label, path)`` of every model, then "auto" and the "load file…" entry."""
        items = [(label, str(path)) for label, path in available_models()]
        paths = {p for _, p in items}
        items += [(label, path) for label, path in self.extra if path not in paths]
        return items + [(AUTO_LABEL, AUTO_MODEL), (LOAD_FILE, LOAD_FILE)]

    def label_of(self, path: str | None) -> str | None:
        """The picker label of a model path (None when unknown)."""
        return next((label for label, p in self.choices() if p == str(path)), None)

    def add_file(self, path: str) -> str:
        """Offer a model file (ours or Cellpose 1-3); returns its path as a string."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"model file {path!r} does not exist")
        if str(p) not in {v for _, v in self.choices()}:
            self.extra.append((f"{p.name} (file)", str(p)))
        return str(p)

    def load(self, path: str, device: str = "cpu") -> Any:
        """Load (and cache) a model; safe to call from worker threads."""
        from .engine.inference.model import Model

        key = (str(path), str(device))
        with self._lock:
            if key not in self.cache:
                self.cache[key] = Model.load(path, device=device)
            return self.cache[key]

    def resolve(self, path: str, image: Any, *, channels: Any = None,
                channel_axis: int | None = None, z_axis: int | None = None,
                device: str = "cpu", cancel: Any = None) -> tuple[Any, str | None]:
        """The model to run on ``image``: ``(model, chosen)``.

        For :data:`AUTO_MODEL` the model zoo picks the bundled or user model whose training
        style is nearest to the image's (:func:`flowseg.engine.inference.zoo.choose_model`) and
        ``chosen`` is its name; for any other choice ``chosen`` is None.  Safe in worker
        threads.
        """
        if path != AUTO_MODEL:
            return self.load(path, device), None
        from .engine.inference.zoo import choose_model

        name, _ = choose_model(image, channels=channels, channel_axis=channel_axis,
                               z_axis=z_axis, device=device, cancel=cancel)
        return self.load(name, device), name

    def default_diameter(self, path: str | None, device: str = "cpu") -> float | None:
        """Median object diameter of the model's training images, when it records one.

        ``meta["diam_train"]`` (set by fine-tuning) is preferred over ``meta["diam_labels"]``;
        None when neither is known or the file cannot be read (the run will report why).
        """
        if path in (None, LOAD_FILE, AUTO_MODEL):
            return None
        try:
            meta = getattr(self.load(str(path), device), "meta", None) or {}
        except Exception:  # noqa: BLE001 - a broken file is reported when it is used
            return None
        for key in ("diam_train", "diam_labels"):
            value = meta.get(key)
            if value is not None and float(value) > 0:
                return round(float(value), 1)
        return None
