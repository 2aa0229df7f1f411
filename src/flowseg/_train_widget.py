"""The "Train" tab: the Cellpose 2.0 loop -- correct, add to the training set, train, repeat.

1. **Training set** (:mod:`flowseg._loop_panel`): a folder of corrected images in Cellpose's
   layout, reopened in a later session; *Add to training set* stores the corrected labels
   with their image, *Next image* opens and segments the next file of an image folder.
2. **Train** (:mod:`flowseg._train_panel`): fine-tune the Segment tab's model on the set
   within a time budget; the new model is selected and compared with the old one on the
   set's held-out image.
"""

from __future__ import annotations

import threading
from typing import Any

from magicgui.widgets import Container, Label

from ._loop_panel import SLICE_MODES, LoopPanel, pair_arrays
from ._train_panel import TrainSection

__all__ = ["SLICE_MODES", "TrainPanel", "pair_arrays"]


class TrainPanel(Container):
    """The Train tab; ``owner`` is the dock widget (:class:`flowseg._widget.SegmentWidget`).

    The dock's signal ``segmented(image_layer, labels_layer)``, when it has one, makes the
    newest result the labels offered for *Add to training set*.
    """

    def __init__(self, viewer: Any, owner: Any) -> None:
        super().__init__(labels=False)
        self.viewer, self.owner = viewer, owner
        self.loop = LoopPanel(viewer, owner, on_set_changed=self._set_changed)
        self.training = TrainSection(owner, lambda: self.loop.trainset)
        self.extend([Label(value="<b>1. Training set</b> — your corrected images"), self.loop,
                     Label(value="<b>2. Train</b> — a new model from the whole set"),
                     self.training])
        for c in (self.loop, self.training):
            c.native.layout().setContentsMargins(0, 0, 0, 0)
        segmented = getattr(owner, "segmented", None)
        if segmented is not None:
            segmented.connect(self.loop.follow)
        job = self.training.job  # closing the dock mid-training stops it (best weights kept)
        self.native.destroyed.connect(lambda *_: job.cancel_event.set())

    @property
    def job(self) -> Any:
        """The training :class:`~flowseg._jobs.Job`."""
        return self.training.job

    @property
    def cancel_event(self) -> threading.Event:
        """The running training's cancel event (setting it stops the training)."""
        return self.training.job.cancel_event

    def reset_choices(self, *args: Any) -> None:
        """Refresh the layer pickers (layers were added, removed or reordered)."""
        self.loop.reset_choices()

    def _set_changed(self, trainset: Any) -> None:
        if trainset is not None:
            self.training.suggest_name(force=False)
