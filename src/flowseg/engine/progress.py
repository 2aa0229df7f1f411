"""One progress / cancel protocol shared by the CLI, the napari widget and the tests.

Long-running engine functions accept two optional keyword arguments:

``progress``
    A callable receiving :class:`ProgressEvent` objects.  The CLI feeds them to a tqdm
    bar, the napari widget forwards them from its ``thread_worker`` to a progress bar,
    tests collect them in a list.
``cancel``
    Either a callable returning ``True`` when the work should stop, or any object with an
    ``is_set()`` method (e.g. :class:`threading.Event`).  Engine code calls
    :func:`check_cancel` at safe points; it raises :class:`Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Union


class Cancelled(RuntimeError):
    """Raised by engine functions when the caller asked them to stop."""


@dataclass(frozen=True)
class ProgressEvent:
    """A progress report.

    Parameters
    ----------
    stage : str
        Short name of the current stage (``"tiles"``, ``"slices"``, ``"dynamics"``,
        ``"flows"``, ``"epoch"``, ...).
    done : int
        Units of work finished in this stage.
    total : int
        Units of work in this stage (0 when unknown).
    message : str
        Optional human-readable text.
    info : dict
        Optional numbers (e.g. ``{"loss": 0.12}``).
    """

    stage: str
    done: int
    total: int
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Fraction of the stage finished, in [0, 1] (0 when the total is unknown)."""
        return float(self.done) / self.total if self.total else 0.0


ProgressCallback = Callable[[ProgressEvent], Any]


class _EventLike(Protocol):
    def is_set(self) -> bool: ...


CancelToken = Union[Callable[[], bool], _EventLike, None]


def is_cancelled(cancel: CancelToken) -> bool:
    """Return whether ``cancel`` (callable, Event-like or None) asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def check_cancel(cancel: CancelToken) -> None:
    """Raise :class:`Cancelled` if ``cancel`` asks to stop."""
    if is_cancelled(cancel):
        raise Cancelled("cancelled by the caller")


def report(
    progress: Optional[ProgressCallback],
    stage: str,
    done: int,
    total: int,
    message: str = "",
    **info: Any,
) -> None:
    """Send a :class:`ProgressEvent` to ``progress`` if it is not None."""
    if progress is not None:
        progress(ProgressEvent(stage, int(done), int(total), message, dict(info)))


class ProgressCollector:
    """A progress callback that stores every event (handy in tests and notebooks)."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def stages(self) -> list[str]:
        """Distinct stage names in the order they first appeared."""
        seen: list[str] = []
        for e in self.events:
            if e.stage not in seen:
                seen.append(e.stage)
        return seen
