"""Measure a machine's training throughput and print the epochs that fit a time budget.

Usage::

    python recipes/gpu_bench.py MINUTES [--crop 224] [--batch 8] [--workers 12]
                                 [--n-per-epoch 1024] [--width 32]

Times the network step (forward, loss, backward, SGD) on random crops (8 s by default) on the
default device, and the crop workers (:class:`flowseg.engine.training.batches.BatchMaker`) on
synthetic nuclei images; the slower of the two sets the rate.  Prints ``EPOCHS N``: the epochs of
``n_per_epoch`` crops that fill 80 % of ``MINUTES`` (the rest is left for validation and
the size model).  Used to size the nuclei run on a lent GPU (docs/training.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("minutes", type=float)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--n-per-epoch", type=int, default=1024)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seconds", type=float, default=8.0, help="how long to time the network")
    a = p.parse_args(argv)
    import torch

    from flowseg.engine.data.synthetic import make_sample
    from flowseg.engine.inference.model import Model
    from flowseg.engine.training.batches import BatchMaker
    from flowseg.engine.training.prep import prepare_samples
    from flowseg.engine.training.schedule import flow_loss

    m = Model.new(width=a.width, diam_mean=17.0, seed=0)
    net = m.net.train()
    name = torch.cuda.get_device_name() if m.device.type == "cuda" else ""
    print("device", m.device, name)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch, 2, a.crop, a.crop, device=m.device)
    y = torch.rand(a.batch, 3, a.crop, a.crop, device=m.device)

    def step() -> float:
        loss = flow_loss(net(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    for _ in range(10):
        step()
    t, n = time.time(), 0
    while time.time() - t < a.seconds:
        step()
        n += 1
    net_rate = n * a.batch / (time.time() - t)
    ss = [make_sample("nuclei", (400, 400), seed=k) for k in range(24)]
    sm = prepare_samples([s.image for s in ss], [s.labels for s in ss], nchan=2)
    scales = 17.0 / np.maximum(sm.diameters, 1)
    rng = np.random.default_rng(0)
    with BatchMaker(sm.images, sm.flows, sm.fgs, scales, a.crop, a.workers) as bm:
        list(bm.epoch(rng, rng.integers(0, len(ss), 64), a.batch))  # start the workers
        t, k = time.time(), 0
        for idx, _, _ in bm.epoch(rng, rng.integers(0, len(ss), 2048), a.batch):
            k += len(idx)
        data_rate = k / (time.time() - t)
    print(f"network {net_rate:.0f} crops/s, crop workers {data_rate:.0f} crops/s "
          f"(workers {a.workers})")
    print("EPOCHS", int(min(net_rate, data_rate) * 0.8 * a.minutes * 60 / a.n_per_epoch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
