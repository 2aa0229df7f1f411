"""Peak memory (and time) of a full 3D segmentation of a big volume.

Builds a seeded 16-bit volume (default 256 x 512 x 512) of bright blobs, segments it with
``do_3d=True`` and prints the peak resident memory of the process (``ru_maxrss``) next to the
sizes of the volume and of the results.  The network width only changes the (bounded,
tile-sized) activation memory, not the volume-sized buffers, so a narrow network keeps the
run short on a CPU::

    python benchmarks/bench_memory3d.py --width 8            # random width-8 weights
    python benchmarks/bench_memory3d.py --weights FILE        # any model file
    python benchmarks/bench_memory3d.py --blob-net            # realistic foreground, fast
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
from scipy import ndimage as ndi

import flowseg.engine  # noqa: F401  (OpenMP wait policy before torch loads)
from flowseg.engine.inference.model import Model


def make_volume(shape: tuple[int, int, int], diameter: float, seed: int = 0) -> np.ndarray:
    """uint16 volume of blurred blobs of about ``diameter`` voxels on a noisy background."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape) / diameter ** 3 * 0.4)
    vol = np.zeros(shape, np.float32)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    vol[idx] = 1.0
    vol = ndi.gaussian_filter(vol, diameter / 4.0)
    vol = vol / max(float(vol.max()), 1e-6) * 4000.0 + rng.normal(300, 30, shape).astype(np.float32)
    return np.clip(vol, 0, 65535).astype(np.uint16)


class BlobNet(torch.nn.Module):
    """A cheap stand-in network with realistic outputs for memory measurements.

    Foreground where the smoothed input is bright; flows = 5 x the normalised gradient of
    the smoothed input (pointing to the blob centres).  Gives the dynamics a realistic amount
    of foreground to follow, at almost no network cost.
    """

    def __init__(self, style: int = 256) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.nbase = [2, 32, 64, 128, style]
        self.nchan = 2

    def forward(self, x: torch.Tensor):
        img = x[:, :1]
        k = torch.ones(1, 1, 9, 9) / 81.0
        sm = torch.nn.functional.conv2d(img, k, padding=4)
        gy = torch.zeros_like(sm)
        gx = torch.zeros_like(sm)
        gy[..., 1:-1, :] = sm[..., 2:, :] - sm[..., :-2, :]
        gx[..., :, 1:-1] = sm[..., :, 2:] - sm[..., :, :-2]
        n = torch.sqrt(gy ** 2 + gx ** 2).clamp_min(1e-6)
        prob = (sm - 0.35) * 20.0
        out = torch.cat([5 * gy / n, 5 * gx / n, prob], 1)
        return out, torch.ones(x.shape[0], self.nbase[-1]) / self.nbase[-1] ** 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 512, 512))
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--diameter", type=float, default=30.0)
    ap.add_argument("--blob-net", action="store_true",
                    help="cheap stand-in network with realistic foreground (dynamics memory)")
    a = ap.parse_args()
    model = Model.load(a.weights) if a.weights else Model.new(width=a.width, seed=0)
    if a.blob_net:
        model.net = BlobNet()
    t0 = time.perf_counter()
    vol = make_volume(tuple(a.shape), a.diameter)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"volume {vol.shape} {vol.dtype} ({vol.nbytes / 2**20:.0f} MiB) built in "
          f"{time.perf_counter() - t0:.0f} s; peak RSS so far {base:.0f} MiB; model {model}",
          flush=True)
    t0 = time.perf_counter()
    last = [t0]

    def progress(ev) -> None:
        if ev.done == ev.total or time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  {time.perf_counter() - t0:7.0f} s {ev.stage} {ev.done}/{ev.total} "
                  f"(peak RSS {rss:.0f} MiB)", flush=True)

    seg = model.segment(vol, do_3d=True, diameter=a.diameter, progress=progress)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res = (seg.masks.nbytes + seg.flows.nbytes + seg.cellprob.nbytes) / 2**20
    print(f"3D segmentation of {vol.shape}: {dt:.0f} s, {seg.n_objects} objects; peak RSS "
          f"{peak:.0f} MiB (results hold {res:.0f} MiB)")


if __name__ == "__main__":
    main()
