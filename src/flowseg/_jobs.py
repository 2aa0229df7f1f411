"""One long-running job of a panel: a worker thread, its own cancel event, its progress.

A :class:`Job` runs ``func(progress, cancel)`` in a napari ``thread_worker``.  ``progress``
is the engine's progress callback (:mod:`flowseg.engine.progress`); ``cancel`` is a
:class:`threading.Event` made fresh for every start, so cancelling one job never touches
another job, and a Cancel never leaks into the next run.  Progress events travel from the
worker thread to the Qt main thread through a signal, where they drive a
:class:`~qtpy.QtWidgets.QProgressBar` and a :class:`~qtpy.QtWidgets.QLabel` in plain words
(:func:`plain_words`, or the job's own ``describe`` function).

Typical use in a panel::

    self.job = Job("segment", bar=bar, label=label, cancel_button=cancel_btn)
    self.job.started.connect(lambda: run_btn.setEnabled(False))
    self.job.finished.connect(lambda: run_btn.setEnabled(True))
    self.job.start(lambda progress, cancel: model.segment(x, progress=progress, cancel=cancel),
                   on_done=self._show, message="Loading the model")
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton

from .engine.progress import Cancelled, ProgressEvent

__all__ = ["STAGE_WORDS", "Job", "plain_words"]

#: Engine stage names -> what a biologist reads.
STAGE_WORDS = {
    "prepare": "Preparing the image",
    "network": "Finding cells",
    "tiles": "Finding cells",
    "slices": "Finding cells",
    "dynamics": "Drawing cell outlines",
    "stitch": "Joining slices into 3D cells",
    "size": "Measuring cell size",
    "read": "Reading images",
    "flows": "Preparing training data",
    "train": "Training",
    "epoch": "Training",
    "validate": "Checking the new model",
    "blocks": "Finding cells block by block",
    "merge": "Joining cells across blocks",
    "write": "Writing labels",
    "pyramid": "Writing lower resolutions",
}

Describe = Callable[[ProgressEvent], str]
WorkFunc = Callable[[Callable[[ProgressEvent], None], threading.Event], Any]


def plain_words(event: ProgressEvent) -> str:
    """A short plain-language line for a progress event (``"Finding cells 3/12"``)."""
    words = STAGE_WORDS.get(event.stage, event.stage.replace("_", " ").capitalize())
    if event.total > 1:
        words += f" {min(event.done, event.total)}/{event.total}"
    loss = event.info.get("loss")
    if loss is not None:
        words += f", loss {float(loss):.3f}"
    return words


class Job(QObject):
    """A worker thread with its own cancel event and a progress bar + label.

    Parameters
    ----------
    name : str
        What the job does, in words (``"segmentation"``); used in messages.
    bar : QProgressBar, optional
        Bar to drive; one is made (``job.bar``) when not given.  Hidden while idle.
    label : QLabel, optional
        Label for the plain-word status; one is made (``job.label``) when not given.
    cancel_button : QPushButton, optional
        Enabled only while the job runs; clicking it calls :meth:`cancel`.
    describe : callable, optional
        ``ProgressEvent -> str`` for the label (default :func:`plain_words`).

    Signals
    -------
    started()
        Emitted by :meth:`start` once the worker is launched.
    progressed(ProgressEvent)
        Every progress event of the current run, in the main thread.
    finished()
        Emitted in the main thread after ``on_done`` / ``on_error`` ran (also after a
        cancel or an error); :attr:`running` is already False.
    """

    started = Signal()
    progressed = Signal(object)
    finished = Signal()
    _event = Signal(int, object)  # (run number, ProgressEvent) from the worker thread

    def __init__(self, name: str, bar: QProgressBar | None = None,
                 label: QLabel | None = None, cancel_button: QPushButton | None = None,
                 describe: Describe | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.bar = bar if bar is not None else QProgressBar()
        self.label = label if label is not None else QLabel()
        self.label.setWordWrap(True)
        self.cancel_button = cancel_button
        self.describe: Describe = describe or plain_words
        self.cancel_event = threading.Event()
        self.worker: Any = None
        self.events: list[ProgressEvent] = []
        self._run = 0
        self._on_done: Callable[[Any], Any] | None = None
        self._on_error: Callable[[BaseException], Any] | None = None
        self._event.connect(self._handle_event)
        self.bar.setVisible(False)
        if cancel_button is not None:
            cancel_button.setEnabled(False)
            cancel_button.clicked.connect(self.cancel)

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        """Whether a run is in progress (between :meth:`start` and ``finished``)."""
        return self.worker is not None

    @property
    def cancelled(self) -> bool:
        """Whether Cancel was pressed during the current (or last) run."""
        return self.cancel_event.is_set()

    def set_text(self, text: str) -> None:
        """Show ``text`` in the job's label."""
        with contextlib.suppress(RuntimeError):  # the panel was closed
            self.label.setText(text)

    # ------------------------------------------------------------------ running
    def start(self, func: WorkFunc, on_done: Callable[[Any], Any] | None = None,
              on_error: Callable[[BaseException], Any] | None = None,
              message: str = "") -> Any:
        """Run ``func(progress, cancel)`` in a worker thread.

        Parameters
        ----------
        func : callable
            Called in the worker thread with the progress callback and this run's cancel
            event; its return value goes to ``on_done``.
        on_done : callable, optional
            ``on_done(result)`` in the main thread.  An exception it raises is handled
            like an error of ``func``.
        on_error : callable, optional
            ``on_error(exc)`` in the main thread, for errors and for
            :class:`~flowseg.engine.progress.Cancelled`.  The label already says
            "Cancelled" / "Failed: ..." and errors are logged; without ``on_error`` the
            error is also shown as a napari notification.
        message : str
            First text of the label (e.g. ``"Loading the model"``).

        Returns
        -------
        worker
            The napari ``WorkerBase`` (already started).

        Raises
        ------
        RuntimeError
            If the job is already running (check :attr:`running` first).
        """
        from napari.qt.threading import create_worker

        if self.running:
            raise RuntimeError(f"the {self.name} is already running")
        self._run += 1
        run = self._run
        self.cancel_event = cancel = threading.Event()
        self.events = []
        self._on_done, self._on_error = on_done, on_error

        def progress(event: ProgressEvent) -> None:
            try:
                self._event.emit(run, event)
            except RuntimeError:  # the panel was closed while the worker ran
                cancel.set()

        def work() -> tuple[bool, Any]:
            try:
                return True, func(progress, cancel)
            except Exception as exc:  # noqa: BLE001 - handed to on_error in the main thread
                return False, exc

        self.bar.setRange(0, 0)  # busy until the first event with a total
        self.bar.setVisible(True)
        self.set_text(message or f"{self.name.capitalize()}…")
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        worker = create_worker(work)
        worker.returned.connect(lambda out: self._returned(run, out))
        self.worker = worker
        worker.start()
        self.started.emit()
        return worker

    def cancel(self) -> None:
        """Ask the current run to stop (no effect when idle or on other jobs)."""
        if not self.running:
            return
        self.cancel_event.set()
        self.set_text("Cancelling…")
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)

    # ------------------------------------------------------------------ main-thread side
    def _handle_event(self, run: int, event: ProgressEvent) -> None:
        if run != self._run or not self.running or self.cancel_event.is_set():
            return  # a late event of a finished or cancelled run
        self.events.append(event)
        with contextlib.suppress(RuntimeError):  # the panel was closed during the run
            if event.total > 0:
                if self.bar.maximum() != event.total:
                    self.bar.setRange(0, event.total)
                self.bar.setValue(min(event.done, event.total))
            else:
                self.bar.setRange(0, 0)
        self.set_text(self.describe(event))
        self.progressed.emit(event)

    def _returned(self, run: int, out: tuple[bool, Any]) -> None:
        if run != self._run:
            return
        ok, value = out
        self._idle()
        try:
            if ok:
                if self._on_done is not None:
                    self._on_done(value)
            else:
                self._failed(value)
        except Exception as exc:  # noqa: BLE001 - e.g. a result layer could not be made
            self._failed(exc)
        finally:
            self.finished.emit()

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, Cancelled):
            self.set_text("Cancelled.")
        else:
            logging.getLogger("flowseg").error("%s failed", self.name, exc_info=exc)
            self.set_text(f"Failed: {exc}")
        if self._on_error is not None:
            self._on_error(exc)
        elif not isinstance(exc, Cancelled):
            from napari.utils.notifications import show_error

            show_error(f"{self.name} failed: {type(exc).__name__}: {exc}")

    def _idle(self) -> None:
        self.worker = None
        with contextlib.suppress(RuntimeError):  # the panel was closed during the run
            self.bar.setVisible(False)
            if self.cancel_button is not None:
                self.cancel_button.setEnabled(False)
