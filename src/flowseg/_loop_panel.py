"""The training-set half of the Train tab: keep corrected images, open the next image.

**Training set**: a folder (:class:`flowseg.engine.training.trainset.TrainingSet`, Cellpose layout)
chosen once; reopening the folder in a later session lists its pairs.  *Add to training
set* stores the chosen labels layer with its image -- the channels the masks were made with,
and for a 3D stack its current slice or every labelled slice.  **Next image** opens the next
file of an image folder that is neither in the set nor open, and segments it with the
current model through the dock (``owner.run``); it is added on top of the earlier ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, Select
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QAbstractItemView, QLabel

from . import _layers
from ._inputs import Axes, check_axes, guess_axes

__all__ = ["FILE_KEY", "SLICE_MODES", "LoopPanel", "pair_arrays"]

SLICE_MODES = ("current slice", "all slices with labels")
#: ``layer.metadata`` key holding the file an image was opened from by "Next image".
FILE_KEY = "flowseg_file"


def _z_index(viewer: Any, labels: Any) -> int:
    """Data index along the first axis of a 3D labels layer at the viewer's current point."""
    point = np.asarray(viewer.dims.point, float)[-labels.ndim:]
    data = np.asarray(labels.world_to_data(point))
    return int(np.clip(round(float(data[0])), 0, labels.data.shape[0] - 1))


def pair_arrays(viewer: Any, image: Any, labels: Any, slice_mode: str = SLICE_MODES[0]
                ) -> list[tuple[np.ndarray, np.ndarray, int | None]]:
    """2D ``(image (Y, X, C), labels (Y, X), z)`` samples from one layer pair.

    ``C`` is the cytoplasm channel, then the nuclear channel if the masks were made with
    one; the axes and channels are those of the run that made the labels (their
    ``metadata``), else guessed from the image shape.  ``z`` is the slice of a 3D stack
    (None in 2D).
    """
    params = ((labels.metadata or {}).get(_layers.META_KEY) or {}).get("params") or {}
    shape = tuple(image.data.shape)
    if "channel_axis" in params:
        ax = Axes(params.get("channel_axis"), params.get("z_axis"))
    else:
        ax = guess_axes(shape, bool(image.rgb))
    check_axes(shape, ax, bool(image.rgb))
    x = np.asarray(image.data[0] if image.multiscale else image.data)
    if ax.channel_axis is None:
        x = x[..., None]
        zax = ax.z_axis
    else:
        x = np.moveaxis(x, ax.channel_axis, -1)
        zax = None if ax.z_axis is None else ax.z_axis - (ax.z_axis > ax.channel_axis)
    if zax is not None:
        x = np.moveaxis(x, zax, 0)
    cyto, nuc = params.get("channels") or [0, 1 if x.shape[-1] == 2 else None]
    cx = x.mean(-1) if cyto is None else x[..., cyto]
    x = np.stack([cx] if nuc is None else [cx, x[..., nuc]], -1)
    lab = np.asarray(labels.data)
    if lab.shape != x.shape[:-1]:
        raise ValueError(f"labels {labels.name!r} {lab.shape} do not match image {image.name!r} "
                         f"{x.shape[:-1]} (spatial shape)")
    if lab.ndim == 2:
        return [(x, lab, None)]
    if slice_mode == SLICE_MODES[0]:
        zs = [_z_index(viewer, labels)]
    else:
        zs = [z for z in range(lab.shape[0]) if lab[z].any()]
    return [(x[z], lab[z], z) for z in zs]


def _source_file(layer: Any) -> str:
    """The file an image layer was opened from ('' when unknown)."""
    path = (layer.metadata or {}).get(FILE_KEY) or getattr(layer.source, "path", None)
    return str(path) if path else ""


class LoopPanel(Container):
    """Training-set folder, its pairs, *Add to training set* and *Next image*.

    ``owner`` is the dock (:class:`flowseg._widget.SegmentWidget`); ``on_set_changed`` is
    called after the set was opened or grew.
    """

    def __init__(self, viewer: Any, owner: Any, on_set_changed: Any = None) -> None:
        super().__init__(labels=True)
        self.viewer, self.owner = viewer, owner
        self.trainset: Any = None
        self.on_set_changed = on_set_changed
        self.set_folder = FileEdit(label="training set", mode="d",
                                   tooltip="a folder for your corrected images (made if new; "
                                           "choose it again in a later session)")
        self.set_pairs = Select(label="pairs", choices=[])
        self.set_pairs.native.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.set_pairs.native.setMaximumHeight(80)
        self.set_info = QLabel("no training set open")  # full width, below the list
        self.set_info.setWordWrap(True)
        self.labels = ComboBox(label="corrected labels", choices=self._labels_choices,
                               nullable=True)
        self.slices = ComboBox(label="3D stacks", choices=list(SLICE_MODES))
        self.add_btn = PushButton(text="Add to training set")
        self.image_folder = FileEdit(label="image folder", mode="d",
                                     tooltip="the images to go through, one by one")
        self.next_btn = PushButton(text="Next image")
        self.extend([self.set_folder, self.set_pairs, self.labels, self.slices, self.add_btn,
                     self.image_folder, self.next_btn])
        self.native.layout().insertWidget(2, self.set_info)
        self.set_folder.changed.connect(lambda *_: self.open_set())
        viewer.layers.selection.events.active.connect(self._on_active_layer)
        self.add_btn.changed.connect(lambda *_: self.add_to_set())
        self.next_btn.changed.connect(lambda *_: self.next_image())

    # ------------------------------------------------------------------ layers
    def _labels_choices(self, widget: Any = None) -> list:
        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Labels)]

    def reset_choices(self, *args: Any) -> None:
        """Refresh the labels list; when the chosen layer is gone, take the newest masks."""
        self.labels.reset_choices()
        if self.labels.value is None:
            masks = [ly for ly in self.viewer.layers if _layers.role_of(ly) == "masks"]
            if masks:
                self.labels.value = masks[-1]

    def _on_active_layer(self, event: Any = None) -> None:
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Labels) and layer in self.viewer.layers:
            self.follow(None, layer)  # the labels being edited are the ones to add

    def follow(self, image: Any, labels: Any) -> None:
        """Offer ``labels`` (just made for ``image``) for the next *Add*."""
        self.labels.reset_choices()
        if labels in self.viewer.layers:
            self.labels.value = labels

    def _image_for(self, labels: Any) -> Any:
        src = _layers.source_of(labels)
        by_id = {str(ly.unique_id): ly for ly in self.viewer.layers}
        if src in by_id:
            return by_id[src]
        image = getattr(self.owner, "image_layer", None)
        if isinstance(image, Image):
            return image
        raise ValueError(f"cannot tell which image the labels {labels.name!r} belong to: "
                         "choose that image in the Segment tab")

    # ------------------------------------------------------------------ the set
    def open_set(self, folder: Any = None) -> Any:
        """Open (or create) the training-set folder and list its pairs; None on error."""
        from .engine.training.trainset import TrainingSet

        folder = self.set_folder.value if folder is None else folder
        if folder is None or str(folder) in ("", "."):
            return None
        try:
            self.trainset = TrainingSet(folder)
        except (OSError, ValueError) as exc:
            self.trainset = None
            show_error(f"cannot open the training set {folder}: {exc}")
            self.refresh_set()
            return None
        if Path(str(self.set_folder.value)) != self.trainset.folder:
            self.set_folder.value = self.trainset.folder  # re-enters with the same folder
        self.refresh_set()
        return self.trainset

    def refresh_set(self) -> None:
        """Show the set's pairs (held-out one marked) and what training will use."""
        ts = self.trainset
        if ts is None:
            self.set_pairs.choices = []
            self.set_info.setText("no training set open")
        else:
            held = ts.held_out()
            names = ts.names()
            self.set_pairs.choices = [f"{n}  (held out: compares models)" if n == held else n
                                      for n in names]
            if not names:
                self.set_info.setText(f"{ts.folder.name}: empty. Correct a segmentation, then "
                                      "Add to training set.")
            elif held is None:
                self.set_info.setText(f"{ts.folder.name}: 1 image. Add a second one: the first "
                                      "is then kept aside to compare models.")
            else:
                self.set_info.setText(f"{ts.folder.name}: {len(names)} images; training uses "
                                      f"{len(names) - 1}, {held!r} is held out.")
        if self.on_set_changed is not None:
            self.on_set_changed(ts)

    def add_to_set(self) -> list:
        """Store the chosen labels with their image in the set; returns the stored pairs."""
        try:
            if self.trainset is None:
                raise ValueError("choose a training-set folder first (Train tab, top)")
            labels = self.labels.value
            if labels is None:
                raise ValueError("no labels layer: segment an image and correct its masks first")
            image = self._image_for(labels)
            samples = pair_arrays(self.viewer, image, labels, self.slices.value)
            if not samples or not any(lab.any() for _, lab, _ in samples):
                raise ValueError(f"the labels {labels.name!r} hold no objects to train on")
        except ValueError as exc:
            show_error(str(exc))
            return []
        params = ((labels.metadata or {}).get(_layers.META_KEY) or {}).get("params") or {}
        diameter = params.get("diameter_used") or params.get("diameter")
        source = _source_file(image) or image.name
        stored, errors = [], []
        for x, lab, z in samples:
            name = image.name if z is None else f"{image.name}_z{z:03d}"
            try:
                pair, replaced = self.trainset.add(
                    x, lab, name, diameter=diameter,
                    source=source if z is None else f"{source} [z={z}]")
            except (OSError, ValueError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            stored.append((pair, replaced))
        self.refresh_set()
        if errors:
            show_error("not added: " + "; ".join(errors))
        if stored:
            words = [f"{'updated' if r else 'added'} {p.name!r}" for p, r in stored]
            show_info(f"training set {self.trainset.folder.name}: " + ", ".join(words))
        return [p for p, _ in stored]

    # ------------------------------------------------------------------ next image
    def next_image(self) -> Any:
        """Open the next image of the image folder and segment it; returns the new layer."""
        from .engine.io.datasets import read_image
        from .engine.training.trainset import image_files

        folder = self.image_folder.value
        try:
            if folder is None or str(folder) in ("", "."):
                raise ValueError("choose the image folder to go through first")
            files = image_files(folder)
            if self.trainset is not None and Path(folder).resolve() == self.trainset.folder:
                raise ValueError("the image folder is the training set itself: choose the "
                                 "folder of the images still to segment")
        except (OSError, ValueError) as exc:
            show_error(str(exc))
            return None
        if getattr(self.owner, "worker", None) is not None:
            show_info("a segmentation is running: wait for it (or cancel it) first")
            return None
        done = self.trainset.sources() if self.trainset is not None else set()
        opened = {_source_file(ly) for ly in self.viewer.layers if isinstance(ly, Image)}
        todo = [f for f in files if str(f) not in done and str(f) not in opened]
        if not todo:
            show_info(f"every image of {folder} is in the training set or open")
            return None
        path = todo[0]
        try:
            data = read_image(path)
        except Exception as exc:  # noqa: BLE001 - any reader error, shown to the user
            show_error(f"cannot read {path.name}: {exc}")
            return None
        # the new image goes on top of the earlier ones (which stay as they are: hiding them
        # here crashed napari's OpenGL drawing under Mesa when the Segment tab's diameter
        # preview had just been shown)
        layer = self.viewer.add_image(data, name=path.stem, metadata={FILE_KEY: str(path)})
        self.viewer.layers.selection.active = layer
        self.owner.run(layer)
        return layer
