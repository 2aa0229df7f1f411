"""The "Train" tab: fine-tune the chosen model on corrected (image, labels) pairs.

Pairs default to the plugin's own mask layers (which the user corrects with napari's label
tools) with their source images; more pairs can be added by hand.  3D pairs contribute
their current Z slice (or every slice that holds labels).  Training runs
:func:`flowseg.engine.train.train` in a worker with a progress bar showing the loss; Cancel
stops it and the best weights so far are kept.  The new model is saved to the user's
model folder and selected in the Segment tab.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from magicgui.widgets import (ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton,
                              Select, SpinBox)
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from . import _layers
from ._inputs import Axes, check_axes, guess_axes
from ._model_registry import user_model_path, valid_model_name
from ._progress import ProgressBridge, start_worker

__all__ = ["TrainPanel", "pair_arrays"]

SLICE_MODES = ("current slice", "all slices with labels")


def _recipe_defaults(recipe: str = "finetune") -> dict:
    """The engine's settings for a training recipe (epochs, learning_rate, ...)."""
    from .engine.schedule import RECIPES

    return dict(RECIPES.get(recipe, {}))


def _z_index(viewer: Any, labels: Any) -> int:
    """Data index along the first axis of a 3D labels layer at the viewer's current point."""
    point = np.asarray(viewer.dims.point, float)[-labels.ndim:]
    data = np.asarray(labels.world_to_data(point))
    return int(np.clip(round(float(data[0])), 0, labels.data.shape[0] - 1))


def pair_arrays(viewer: Any, image: Any, labels: Any, slice_mode: str = SLICE_MODES[0]) -> list:
    """2D ``(image (Y, X, C), labels (Y, X))`` training samples from one layer pair.

    The axes and channels are the ones the masks were made with (from the labels layer's
    metadata) or guessed from the image shape.
    """
    params = ((labels.metadata or {}).get(_layers.META_KEY) or {}).get("params") or {}
    shape = tuple(image.data.shape)
    if "channel_axis" in params:
        ax = Axes(params.get("channel_axis"), params.get("z_axis"))
    else:
        ax = guess_axes(shape, bool(image.rgb))
    check_axes(shape, ax, bool(image.rgb))
    x = np.asarray(image.data)
    if ax.channel_axis is None:
        x = x[..., None]
        zax = ax.z_axis
    else:
        x = np.moveaxis(x, ax.channel_axis, -1)
        zax = None if ax.z_axis is None else ax.z_axis - (ax.z_axis > ax.channel_axis)
    if zax is not None:
        x = np.moveaxis(x, zax, 0)
    chans = params.get("channels") or [0, 1 if x.shape[-1] == 2 else None]
    cyto, nuc = chans
    cx = x.mean(-1) if cyto is None else x[..., cyto]
    cols = [cx] if nuc is None else [cx, x[..., nuc]]
    x = np.stack(cols, -1).astype(np.float32)
    lab = np.asarray(labels.data)
    if lab.shape != x.shape[:-1]:
        raise ValueError(f"labels {labels.name!r} {lab.shape} do not match image {image.name!r} "
                         f"{x.shape[:-1]} (spatial shape)")
    if lab.ndim == 2:
        return [(x, lab.astype(np.int32))]
    if slice_mode == SLICE_MODES[0]:
        zs = [_z_index(viewer, labels)]
    else:
        zs = [z for z in range(lab.shape[0]) if lab[z].any()]
    return [(x[z], lab[z].astype(np.int32)) for z in zs]


class TrainPanel(Container):
    """Controls of the Train tab; ``owner`` is the :class:`~flowseg._widget.SegmentWidget`."""

    def __init__(self, viewer: Any, owner: Any) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.owner = owner
        self.cancel_event = threading.Event()
        self.worker = None
        self.manual_pairs: list[tuple[Any, Any]] = []
        self._seen: set = set()  # (id(image), id(labels)) of pairs already offered
        self.losses: list[float] = []
        self.progress = ProgressBridge(self._on_progress)
        d = _recipe_defaults("finetune")
        self.pairs = Select(label="training pairs", choices=self._pair_choices)
        self.image = ComboBox(label="add: image", choices=self._image_choices, nullable=True)
        self.labels = ComboBox(label="add: labels", choices=self._labels_choices, nullable=True)
        self.add_btn = PushButton(text="add pair")
        self.slices = ComboBox(label="3D stacks", choices=list(SLICE_MODES))
        self.recipe = ComboBox(label="recipe", choices=["finetune"], value="finetune")
        self.epochs = SpinBox(label="epochs", min=1, max=10000, value=int(d.get("epochs", 100)))
        self.learning_rate = FloatSpinBox(label="learning rate", min=1e-6, max=1.0, step=0.005,
                                          value=float(d.get("learning_rate", 0.05)))
        self.learning_rate.native.setDecimals(6)
        self.model_name = LineEdit(label="new model name", value="")
        self.train_btn = PushButton(text="Train")
        self.cancel_btn = PushButton(text="Cancel (keep best)", enabled=False)
        self.status = Label(value="")
        self.extend([self.pairs, self.image, self.labels, self.add_btn, self.slices, self.recipe,
                     self.epochs, self.learning_rate, self.model_name, self.train_btn,
                     self.cancel_btn, self.status])
        self.pairs.native.setMaximumHeight(110)
        self.status.native.setWordWrap(True)
        self.add_btn.changed.connect(lambda *_: self.add_pair())
        self.train_btn.changed.connect(lambda *_: self.train())
        self.cancel_btn.changed.connect(lambda *_: self.cancel_event.set())

    # ------------------------------------------------------------------ pairs
    def _image_choices(self, widget: Any = None) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers
                if isinstance(ly, Image) and _layers.role_of(ly) is None]

    def _labels_choices(self, widget: Any = None) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Labels)]

    def candidate_pairs(self) -> list[tuple[Any, Any]]:
        """Our mask layers with their source images, then the pairs added by hand."""
        layers = list(self.viewer.layers)
        by_id = {str(ly.unique_id): ly for ly in layers}
        out = []
        for ly in layers:
            if _layers.role_of(ly) == "masks" and _layers.source_of(ly) in by_id:
                out.append((by_id[_layers.source_of(ly)], ly))
        out += [(i, m) for i, m in self.manual_pairs
                if i in layers and m in layers and (i, m) not in out]
        return out

    def _pair_choices(self, widget: Any = None) -> list:
        return [(f"{i.name}  ↔  {m.name}", (i, m)) for i, m in self.candidate_pairs()]

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer lists; pairs not seen before are selected, others keep their state."""
        selected = {(id(i), id(m)) for i, m in self.pairs.value}
        for w in (self.pairs, self.image, self.labels):
            w.reset_choices()
        choices = list(self.pairs.choices)
        keep = [(i, m) for i, m in choices
                if (id(i), id(m)) in selected or (id(i), id(m)) not in self._seen]
        self._seen = {(id(i), id(m)) for i, m in choices}
        self.pairs.value = keep
        if not self.model_name.value:
            self.model_name.value = "my-model"

    def add_pair(self, image: Any = None, labels: Any = None) -> None:
        """Add an (image, labels) pair and select it."""
        image = image if image is not None else self.image.value
        labels = labels if labels is not None else self.labels.value
        if image is None or labels is None:
            show_error("choose an image layer and a labels layer to add a training pair")
            return
        self.manual_pairs.append((image, labels))
        self._seen.discard((id(image), id(labels)))
        self.reset_choices()

    # ------------------------------------------------------------------ training
    def _on_progress(self, ev: Any) -> None:
        if ev.stage == "epoch" and "loss" in ev.info:
            self.losses.append(float(ev.info["loss"]))
            self.status.value = f"epoch {ev.done}/{ev.total}  loss {float(ev.info['loss']):.4f}"
        elif ev.stage == "train" and "loss" in ev.info:
            self.status.value = (f"epoch {int(ev.info.get('epoch', 0)) + 1}  "
                                 f"batch loss {float(ev.info['loss']):.4f}")
        else:
            self.status.value = f"{ev.stage} {ev.done}/{ev.total}"

    def train(self) -> Any:
        """Validate the inputs and train in a worker; returns the worker (None on bad input)."""
        if self.worker is not None:
            show_warning("training is already running")
            return None
        try:
            job = self._job()
        except ValueError as exc:
            show_error(str(exc))
            return None
        self.cancel_event.clear()
        self.losses = []
        progress, cancel = self.progress, self.cancel_event

        def work():
            from .engine.model import Model
            from .engine.train import train

            model = Model.load(job["base"], device=job["device"])
            kwargs = dict(recipe=job["recipe"], epochs=job["epochs"],
                          learning_rate=job["learning_rate"], save_path=str(job["path"]),
                          progress=progress, cancel=cancel)
            # on cancel, train() stops after the current batch and saves the best so far
            train(model, job["images"], job["labels"], channels=job["channels"], **kwargs)
            if not job["path"].is_file():
                raise RuntimeError(f"training ended without writing {job['path']}")
            return job["path"]

        def failed(exc):
            show_error(f"training failed: {type(exc).__name__}: {exc}")
            self.status.value = f"error: {exc}"

        self.train_btn.enabled, self.cancel_btn.enabled = False, True
        self.progress.start(f"training {job['path'].stem}")
        worker = start_worker(work, self._trained, failed, self._finished)
        self.worker = worker
        return worker

    def _job(self) -> dict:
        pairs = list(self.pairs.value)
        if not pairs:
            raise ValueError("no training pairs: segment an image (its masks are offered here) "
                             "or add an (image, labels) pair")
        base = self.owner.controls.model.value
        if base in (None, "load file…"):
            raise ValueError("choose the model to fine-tune in the Segment tab")
        name = valid_model_name(self.model_name.value)
        path = user_model_path(name)
        if path.exists():
            raise ValueError(f"a model called {name!r} already exists ({path}); choose another name")
        images, labels = [], []
        for img, lab in pairs:
            for x, y in pair_arrays(self.viewer, img, lab, self.slices.value):
                images.append(x)
                labels.append(y)
        if not any(int(y.max(initial=0)) > 0 for y in labels):
            raise ValueError("the chosen labels layers hold no labels to train on")
        nch = {x.shape[-1] for x in images}
        if len(nch) > 1:
            raise ValueError("all training images must have the same channels (cytoplasm only, "
                             "or cytoplasm + nucleus)")
        channels = (0, 1) if nch.pop() == 2 else (0, None)
        return {"base": base, "device": self.owner.controls.device.value, "path": path,
                "images": images, "labels": labels, "channels": channels,
                "recipe": self.recipe.value, "epochs": int(self.epochs.value),
                "learning_rate": float(self.learning_rate.value)}

    def _trained(self, path: Any) -> None:
        self.owner.refresh_models(select=str(path))
        note = " (cancelled: best weights so far)" if self.cancel_event.is_set() else ""
        show_info(f"saved model {path.stem!r} to {path}{note}")
        loss = f", last epoch loss {self.losses[-1]:.4f}" if self.losses else ""
        self.status.value = f"saved model {path.stem!r}{loss}{note}; selected in the Segment tab"

    def _finished(self) -> None:
        self.worker = None
        self.progress.close()
        self.train_btn.enabled, self.cancel_btn.enabled = True, False
