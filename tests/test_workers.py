"""Single-threaded network workers (3D slabs): order, errors, PyTorch threads, same results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference import volume
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.workers import threaded_map, worker_count
from flowseg.engine.progress import Cancelled, ProgressCollector


def test_threaded_map_keeps_order_and_threads():
    threads = torch.get_num_threads()
    seen = list(threaded_map(lambda i: (i, torch.get_num_threads()), range(11), 2))
    assert [i for i, _ in seen] == list(range(11))
    assert all(n == max(1, threads // 2) for _, n in seen)
    assert torch.get_num_threads() == threads
    # one worker: plain loop in the caller, threads untouched
    assert list(threaded_map(lambda i: torch.get_num_threads(), range(3), 1)) == [threads] * 3
    assert worker_count(1) == 1 and 1 <= worker_count(100) <= 4


def test_threaded_map_raises_and_restores():
    threads = torch.get_num_threads()

    def boom(i):
        if i == 3:
            raise Cancelled("stop")
        return i

    out = []
    with pytest.raises(Cancelled):
        for v in threaded_map(boom, range(20), 2):
            out.append(v)
    assert out == [0, 1, 2] and torch.get_num_threads() == threads
    # a map inside a map runs the inner one in its own worker thread (no nested pools)
    nested = list(threaded_map(lambda i: sum(threaded_map(lambda j: j, range(i), 2)),
                               range(5), 2))
    assert nested == [0, 0, 1, 3, 6]


def test_3d_workers_give_the_sequential_result(monkeypatch):
    m = Model.load("cyto")
    img = make_sample("cells", (20, 72, 80), diameter=30, with_nuclei=True, seed=2).image
    kw = {"channels": (0, 1), "channel_axis": -1, "z_axis": 0, "diameter": 30, "do_3d": True,
          "batch_size": 2}
    pc = ProgressCollector()
    par = m.segment(img, progress=pc, **kw)
    net = [e.done for e in pc.events if e.stage == "network"]
    assert net == sorted(net) and net[-1] == 20 + 72 + 80  # every plane of the 3 passes
    monkeypatch.setattr(volume, "worker_count", lambda n: 1)
    seq = m.segment(img, **kw)
    assert np.abs(par.flows - seq.flows).max() < 1e-4
    assert np.abs(par.cellprob - seq.cellprob).max() < 1e-3
    assert np.array_equal(par.masks, seq.masks)
