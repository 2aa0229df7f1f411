"""Time segmenting vs tracking 100 frames of 512 x 512 (issue 21's speed target: < 1.5x).

Uses the real Usiigaci T98G phase-contrast time-lapse in ``../shared/data/timelapse`` (left
half of each frame, played forwards then backwards to make 100 frames) and the bundled
``cyto`` model; the diameter is estimated once, as ``flowseg track`` does.

Run::

    python benchmarks/bench_track.py [--data PATH] [--frames 100]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile

DEFAULT = (Path(__file__).resolve().parents[1].parent
           / "shared/data/timelapse/usiigaci_t98g_phase.tif")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT))
    ap.add_argument("--frames", type=int, default=100)
    args = ap.parse_args()
    from flowseg.engine.inference.model import Model
    from flowseg.engine.tracking.driver import segment_frames

    src = tifffile.imread(args.data)[:, :, :512]
    n = src.shape[0]
    pingpong = list(range(n)) + list(range(n - 2, 0, -1))
    order = [pingpong[i % len(pingpong)] for i in range(args.frames)]
    movie = src[order]
    model = Model.load("cyto")
    model.segment(movie[0], diameter=50)  # warm-up (numba compilation) outside the timing
    t0 = time.perf_counter()
    frames = segment_frames(model, movie, t_axis=0, diameter=None)
    t_seg = time.perf_counter() - t0
    t1 = time.perf_counter()
    from flowseg.engine.tracking.link import link_masks  # laptrack's import time counts

    result = link_masks(frames.masks)
    t_link = time.perf_counter() - t1
    print(json.dumps({
        "frames": len(order), "shape": list(movie.shape[1:]), "diameter": frames.diameter,
        "segment_s": round(t_seg, 2), "link_s": round(t_link, 2),
        "ratio": round((t_seg + t_link) / t_seg, 3), "tracks": result.n_tracks,
        "divisions": result.n_divisions,
        "cells_per_frame": float(np.mean([len(np.unique(f)) - 1 for f in frames.masks])),
    }, indent=1))


if __name__ == "__main__":
    main()
