"""Worker processes tune glibc malloc; the caller's own process is never changed."""

from __future__ import annotations

import multiprocessing
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
