"""Worker processes tune glibc malloc; the caller's own process is never changed."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

from flowseg.engine.blocks import work


@pytest.mark.skipif(multiprocessing.parent_process() is not None,
                    reason="the tests themselves run in a multiprocessing child")
def test_caller_process_is_left_alone():
    assert work.tune_malloc() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_worker_process_tunes_once():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        first, again = pool.apply(_tune_twice)
    assert (first, again) == (True, False)


def _tune_twice() -> tuple[bool, bool]:
    from flowseg.engine.blocks import work as w

    return w.tune_malloc(), w.tune_malloc()


_THREADS_CHECK = """
import threading, torch
from flowseg.engine.blocks.work import _set_threads
out = []
def task():
    _set_threads(1)
    out.append(torch.get_num_threads())
t = threading.Thread(target=task)
t.start()
t.join()
print(out[0])
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to differ")
def test_a_task_keeps_one_torch_thread_after_numba_starts():
    """Starting numba's thread pool (first ``numba.set_num_threads`` in a fresh process) put
    PyTorch back on all cores; a worker's first block then ran on 2 threads next to the
    other worker's.  Fresh process: the pool must not have started yet."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")  # as dask's nanny starts its workers
    run = subprocess.run([sys.executable, "-c", _THREADS_CHECK], capture_output=True,
                         text=True, env=env, timeout=120, check=True)
    assert run.stdout.strip().splitlines()[-1] == "1", run.stdout + run.stderr
