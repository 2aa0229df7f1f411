"""Running one stage of a blockwise run on dask.distributed, with progress and cancel.

:class:`Stage` submits tasks under keys unique to the run, gathers their results while
reporting progress (:mod:`flowseg.engine.progress`) and checking the caller's cancel token,
and on a failure or cancel stops them: queued tasks are cancelled and running ones (which
see the run's cancel flag at their next check) are waited for, so nothing writes after the
run is over.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..progress import Cancelled, CancelToken, ProgressCallback, is_cancelled, report

__all__ = ["Stage"]


def _executing(dask_worker: Any) -> list[str]:
    """Keys of the tasks a worker is executing (run on each worker by ``client.run``)."""
    state = getattr(dask_worker, "state", None)
    return [str(getattr(ts, "key", ts)) for ts in getattr(state, "executing", ())]


def _drain(client: Any, prefix: str, timeout: float = 120.0) -> None:
    """Wait until no worker still executes one of this run's tasks (after a cancel)."""
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            running = client.run(_executing)
        except Exception:  # noqa: BLE001 - cluster gone: nothing runs any more
            return
        if not any(k.startswith(prefix) for keys in running.values() for k in keys):
            return
        time.sleep(0.1)


class Stage:
    """Submits a run's tasks and gathers them stage by stage with progress and cancel.

    Parameters
    ----------
    client : distributed.Client
    run : str
        Prefix of the run's task keys (unique per run).
    progress, cancel
        The caller's progress callback and cancel token.
    """

    def __init__(self, client: Any, run: str, progress: ProgressCallback | None,
                 cancel: CancelToken) -> None:
        self.client = client
        self.run = run
        self.progress = progress
        self.cancel = cancel
        self.futures: list[Any] = []
        self._n = 0

    def submit(self, fn: Any, *args: Any) -> Any:
        """Submit ``fn(*args)`` under a key of this run; returns its future."""
        self._n += 1
        fut = self.client.submit(fn, *args, key=f"{self.run}-{fn.__name__}-{self._n}",
                                 pure=False)
        self.futures.append(fut)
        return fut

    def gather(self, futures: Sequence[Any], stage: str, message: str) -> list[Any]:
        """Results of ``futures`` (in order), reporting ``stage`` progress as they finish.

        Raises the first task's error (a dead worker as :class:`MemoryError` with advice),
        or :class:`~flowseg.engine.progress.Cancelled` when the caller cancels.
        """
        from distributed import wait

        pending = set(futures)
        total = len(futures)
        out: dict[Any, Any] = {}
        report(self.progress, stage, 0, total, message)
        while pending:
            try:
                done, pending = wait(pending, timeout=0.25, return_when="FIRST_COMPLETED")
            except TimeoutError:
                done = set()
            for f in done:
                out[f.key] = _result(f)
            if done:
                report(self.progress, stage, total - len(pending), total, message)
            if is_cancelled(self.cancel):
                raise Cancelled("cancelled by the caller")
        return [out[f.key] for f in futures]

    def stop(self) -> None:
        """Cancel the run's queued tasks and wait for the running ones to end."""
        self.client.cancel(self.futures)
        _drain(self.client, self.run)


def _result(fut: Any) -> Any:
    try:
        return fut.result()
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker":
            raise MemoryError(
                "a dask worker died while segmenting a block (most often: out of memory); "
                "use a smaller block_size (--block-size), fewer workers, or a higher "
                f"memory limit per worker ({exc})") from None
        raise
