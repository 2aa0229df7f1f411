"""The training half of the Train tab: fine-tune on the whole training set within a time budget.

*Train* starts from the model chosen in the Segment tab and trains on every pair of the set
but the held-out one, for at most the time budget
(:func:`flowseg.engine.training.train.train`).  The new model is saved to the user model
folder and selected in the Segment tab; then the old and the new model segment the
held-out image and their AP@0.5 on it is shown side by side.
Progress reads in plain words ("Training 2/5 min, loss 0.31") under one bar, with a small
loss plot; Cancel stops after the current batch and keeps the best weights so far.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, FloatSpinBox, LineEdit, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QLabel, QProgressBar

from ._jobs import Job, plain_words
from ._loss_plot import LossPlot
from ._model_registry import user_model_path, user_models, valid_model_name
from ._segment_request import AUTO_MODEL
from .engine.progress import Cancelled, ProgressEvent, report

__all__ = ["TrainSection", "training_words"]


def _duration(elapsed: float, budget: float) -> str:
    if budget >= 120:
        return f"{int(elapsed // 60)}/{budget / 60:g} min"
    return f"{int(elapsed)}/{budget:.0f} s"


def _loss(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def training_words(ev: ProgressEvent) -> str:
    """Plain words for a training job's progress event (``"Training 2/5 min, loss 0.31"``)."""
    info = ev.info
    if ev.stage in ("train", "epoch"):
        if info.get("budget"):
            text = f"Training {_duration(float(info.get('elapsed', 0.0)), float(info['budget']))}"
        else:
            epoch = info.get("epoch", ev.done if ev.stage == "epoch" else None)
            text = "Training" + (f", epoch {int(epoch)}" if epoch is not None else "")
        if info.get("loss") is not None:
            text += f", loss {_loss(float(info['loss']))}"
        return text
    if ev.stage == "read":
        return f"Reading the training set {ev.done}/{ev.total}"
    if ev.stage == "flows":
        return f"Preparing the training images {ev.done}/{ev.total}"
    if ev.stage == "check":
        return "Checking the model on your corrected images"
    if ev.stage == "size":
        return f"Measuring cell sizes for the new model {ev.done}/{ev.total}"
    if ev.stage == "compare":
        return ev.message or "Comparing the new and the old model on the held-out image"
    return plain_words(ev)


def _ap_text(ap: float | None) -> str:
    return "n/a" if ap is None else f"{ap:.2f}"


class TrainSection(Container):
    """New model name, time budget, Train / Cancel, progress, loss plot and the comparison.

    ``owner`` is the dock; ``get_set`` returns the open
    :class:`~flowseg.engine.training.trainset.TrainingSet` (or None).
    """

    def __init__(self, owner: Any, get_set: Any) -> None:
        super().__init__(labels=True)
        self.owner, self.get_set = owner, get_set
        self.budget = FloatSpinBox(label="time budget (min)", min=0.05, max=600.0, step=0.5,
                                   value=2.0,
                                   tooltip="the whole training (preparation, training, checks, "
                                   "saving) ends within this time; 2 min is enough for a few "
                                   "corrected images on a laptop CPU")
        self.model_name = LineEdit(label="new model name", value="")
        self._suggested = ""  # the last name proposed by suggest_name
        self.train_btn = PushButton(text="Train on the training set")
        self.cancel_btn = PushButton(text="Cancel (keep best so far)")
        self.result = QLabel()  # what the last training gave, full width
        self.result.setWordWrap(True)
        bar, text = QProgressBar(), QLabel()
        self.plot = LossPlot()
        self.job = Job("training", bar=bar, label=text, cancel_button=self.cancel_btn.native,
                       describe=training_words)
        self.extend([self.budget, self.model_name, self.train_btn, self.cancel_btn])
        for native in (bar, text, self.result, self.plot):
            self.native.layout().addWidget(native)
        self.job.progressed.connect(self._on_progress)
        self.job.started.connect(lambda: setattr(self.train_btn, "enabled", False))
        self.job.finished.connect(lambda: setattr(self.train_btn, "enabled", True))
        self.train_btn.changed.connect(lambda *_: self.train())

    # ------------------------------------------------------------------ naming
    def suggest_name(self, force: bool = True) -> None:
        """Propose ``<set name>-<k>`` with the first ``k`` not taken in the model folder.

        With ``force=False`` a name the user typed is left alone.
        """
        if not force and self.model_name.value not in ("", self._suggested):
            return
        from .engine.training.trainset import safe_name

        ts = self.get_set()
        if ts is None:
            return
        try:
            stem = valid_model_name(safe_name(ts.folder.name)[:56])
        except ValueError:
            stem = "my-model"
        taken = set(user_models())
        k = 1
        while f"{stem}-{k}" in taken:
            k += 1
        self.model_name.value = self._suggested = f"{stem}-{k}"

    # ------------------------------------------------------------------ training
    def _on_progress(self, ev: ProgressEvent) -> None:
        if ev.stage == "epoch" and ev.info.get("loss") is not None:
            self.plot.add_point(int(ev.done), float(ev.info["loss"]))

    def _request(self) -> dict:
        ts = self.get_set()
        if ts is None:
            raise ValueError("choose a training-set folder first")
        if not ts.training_names():
            raise ValueError(f"the training set {ts.folder.name!r} is empty: correct a "
                             "segmentation and press Add to training set")
        base = self.owner.current_model_name()
        if not base:
            raise ValueError("choose the model to start from in the Segment tab")
        name = valid_model_name(self.model_name.value)
        path = user_model_path(name)
        if path.exists():
            raise ValueError(f"a model called {name!r} already exists ({path}); choose another "
                             "name")
        return {"set": ts, "base": str(base), "device": self.owner.current_device(),
                "path": path, "budget": float(self.budget.value) * 60.0}

    def train(self) -> Any:
        """Check the inputs and train in a worker; returns the worker (None on bad input)."""
        if self.job.running:
            show_error("training is already running")
            return None
        try:
            req = self._request()
        except ValueError as exc:
            show_error(str(exc))
            return None
        self.plot.clear()
        self.result.setText("")
        return self.job.start(lambda progress, cancel: _work(req, progress, cancel),
                              on_done=self._trained, on_error=self._failed,
                              message=f"Loading the training set {req['set'].folder.name}")

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.result.setText("Cancelled before any training step: no model was saved.")
        else:
            show_error(f"training failed: {type(exc).__name__}: {exc}")
            self.result.setText(f"Training failed: {exc}")

    def _trained(self, out: dict) -> None:
        path = out["path"]
        self.owner.refresh_models(select=str(path))
        first = f"Saved model {path.stem!r}"
        if out["cancelled"]:
            first = f"Stopped early. {first}"
        if not out["improved"]:
            first += " with the weights of the model you started from"
        lines = [first + "; it is selected in the Segment tab."]
        if out.get("auto_base"):
            lines.append(f"Started from {out['auto_base']!r}, the model whose training images "
                         "look most like yours (auto).")
        if out["note"]:
            note = str(out["note"])
            lines.append(note[:1].upper() + note[1:] + ("" if note.endswith(".") else "."))
        if out["held_out"] is None:
            lines.append("No held-out image yet: add a second image to compare models.")
        elif out["cancelled"]:
            lines.append("Not compared on the held-out image (cancelled).")
        else:
            lines.append(f"Held-out image {out['held_out']!r}: AP@0.5 old model "
                         f"{_ap_text(out['ap_old'])} → new model {_ap_text(out['ap_new'])}.")
        self.result.setText("\n".join(lines))
        self.job.set_text(f"Done in {out['seconds'] / 60:.1f} min.")
        show_info(lines[0])
        self.suggest_name()


def _work(req: dict, progress: Any, cancel: Any) -> dict:
    """Train on the set, then score the old and the new model on the held-out image."""
    from .engine.inference.model import Model
    from .engine.training.train import train
    from .engine.training.validate import segmentation_ap

    ts = req["set"]
    held = ts.held_out()
    images, labels, names = ts.load(ts.training_names(), progress=progress, cancel=cancel)
    auto_base = None
    if req["base"] == AUTO_MODEL:  # the zoo's choice for the set's first training image
        from .engine.inference.zoo import choose_model

        auto_base = choose_model(images[0], channels=ts.channels, device=req["device"],
                                 cancel=cancel)[0]
    base = Model.load(auto_base or req["base"], device=req["device"])
    res = train(base, images, labels, channels=ts.channels, names=names,
                time_budget=req["budget"], save_path=req["path"], progress=progress,
                cancel=cancel)
    out = {"path": req["path"], "cancelled": res.cancelled, "held_out": held,
           "improved": res.improved, "note": res.note, "seconds": res.seconds,
           "auto_base": auto_base,
           "ap_old": None, "ap_new": None}
    if held is None or res.cancelled:
        return out
    msg = f"Comparing the old and the new model on {held!r}"
    try:
        (himg,), (hlab,), _ = ts.load([held])
        report(progress, "compare", 0, 2, msg)
        out["ap_old"] = segmentation_ap(base, [himg], [hlab], channels=ts.channels,
                                        cancel=cancel)
        report(progress, "compare", 1, 2, msg)
        out["ap_new"] = (segmentation_ap(res.model, [himg], [hlab], channels=ts.channels,
                                         cancel=cancel) if res.improved else out["ap_old"])
        report(progress, "compare", 2, 2, msg)
    except Cancelled:  # the model is saved; only the comparison was stopped
        out["cancelled"] = True
    return out
