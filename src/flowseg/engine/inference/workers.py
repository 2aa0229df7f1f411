"""Network passes on independent pieces (3D slabs) run by single-threaded workers.

On a small CPU shared with other programs, one network call using every core with PyTorch's
intra-op threads waits at each layer for its slowest thread: when another process holds a
core, the whole call stalls.  Independent pieces of work (the slabs of slices of a 3D pass)
run instead by ``n`` worker threads, each with one intra-op thread, keep every core busy
without that lock-step.  Measured on the project's 2-core machine while another process
loaded it: 2 workers x 1 thread ran 48 x 144 slices 3-8x and 144 x 144 / 272 x 272 slices
1.5-3x faster than 1 call x 2 threads (``benchmarks/bench_segment.py``).

:func:`threaded_map` returns results in order, keeps at most ``2 * n`` pieces in flight
(bounded memory) and restores PyTorch's thread count afterwards.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["MAX_WORKERS", "threaded_map", "worker_count"]

T = TypeVar("T")
R = TypeVar("R")

#: at most this many workers (each holds one batch of activations)
MAX_WORKERS = 4
_LOCK = threading.Lock()  # one threaded_map at a time changes the process' thread count


def worker_count(n_items: int) -> int:
    """Workers for ``n_items`` pieces: PyTorch's thread count, at most :data:`MAX_WORKERS`."""
    return max(1, min(int(torch.get_num_threads()), MAX_WORKERS, int(n_items)))


def threaded_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn(item)`` for each item, in order, on ``workers`` threads of one PyTorch thread each.

    With ``workers <= 1`` (or another map running) the items run one by one in the calling
    thread with PyTorch's threads unchanged.  An exception in ``fn`` (e.g.
    :class:`~flowseg.engine.progress.Cancelled`) stops the map: pending items are dropped and
    the exception is raised in the caller.
    """
    if workers <= 1 or not _LOCK.acquire(blocking=False):
        for it in items:
            yield fn(it)
        return
    threads = torch.get_num_threads()
    per = max(1, threads // workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flowseg-net")
    pending: deque[Future] = deque()
    try:
        torch.set_num_threads(per)
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(threads)
        _LOCK.release()
