"""Engine progress events -> a napari progress bar, across threads.

The engine calls the progress callback from the worker thread; a Qt signal carries each
:class:`~flowseg.engine.progress.ProgressEvent` to the main thread, where the napari
progress bar (shown in the viewer's activity dock) and an optional status callback are
updated.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from qtpy.QtCore import QObject, Signal

from .engine.progress import ProgressEvent

__all__ = ["ProgressBridge", "start_worker"]


def start_worker(func: Callable[[], Any], on_result: Callable[[Any], Any],
                 on_error: Callable[[BaseException], Any],
                 on_finished: Optional[Callable[[], Any]] = None) -> Any:
    """Run ``func`` in a napari worker thread; results and errors come back in the main thread.

    Exceptions (including :class:`~flowseg.engine.progress.Cancelled`) are caught in the
    worker and handed to ``on_error``, so the widget -- not napari's generic traceback
    relay -- tells the user what went wrong, once.
    """
    from napari.qt.threading import create_worker

    def work():
        try:
            return True, func()
        except Exception as exc:  # noqa: BLE001 - reported to the user by on_error
            return False, exc

    def dispatch(out):
        ok, value = out
        if not ok:
            on_error(value)
            return
        try:
            on_result(value)
        except Exception as exc:  # noqa: BLE001 - e.g. a layer could not be made
            on_error(exc)

    worker = create_worker(work)
    worker.returned.connect(dispatch)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return worker


class ProgressBridge(QObject):
    """Thread-safe progress callback driving a napari ``progress`` bar.

    Parameters
    ----------
    on_event : callable, optional
        Called in the main thread with every event (e.g. to show the loss in a label).
    """

    event = Signal(object)

    def __init__(self, on_event: Optional[Callable[[ProgressEvent], Any]] = None) -> None:
        super().__init__()
        self._on_event = on_event
        self._bar = None
        self.events: list[ProgressEvent] = []
        self.event.connect(self._handle)

    def start(self, desc: str) -> None:
        """Open a fresh progress bar."""
        from napari.utils import progress

        self.close()
        self.events = []
        self._bar = progress(total=0, desc=desc)

    def __call__(self, event: ProgressEvent) -> None:
        """The engine-side callback (any thread)."""
        try:
            self.event.emit(event)
        except RuntimeError:  # the widget was closed while the worker ran
            pass

    def _handle(self, ev: ProgressEvent) -> None:
        self.events.append(ev)
        bar = self._bar
        if bar is not None:
            desc = ev.stage
            if "loss" in ev.info:
                desc += f" (loss {float(ev.info['loss']):.4f})"
            if bar.total != ev.total:
                bar.total = ev.total
            bar.n = min(ev.done, ev.total) if ev.total else ev.done
            bar.set_description(desc)
            bar.refresh()
        if self._on_event is not None:
            self._on_event(ev)

    def close(self) -> None:
        """Close the progress bar (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
