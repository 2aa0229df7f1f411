"""Peak memory per worker of blockwise 3D segmentation vs the size of the volume.

A worker holds one padded block at a time, so its peak memory should not depend on the
volume.  Each run segments a uint16 volume of the given shape (``--shapes``, default 2, 8.6
and 17 GB) on a LocalCluster of worker processes, in a fresh process; the volume is a lazy
dask array tiling one periodic 64^3 tile of blurred blobs (seamless, so objects cross block
faces; nothing is stored on disk), and a foreground mask keeps the same few blocks
(``--blocks``) of every volume, so every run does the same work.  Printed per run: the
volume, blocks segmented / planned, the largest worker peak RSS, the caller's peak RSS and
the wall time, next to the engine's per-task estimate::

    python benchmarks/bench_blocks3d.py                       # 3 volume sizes, block 128
    python benchmarks/bench_blocks3d.py --shapes 1024,1024,1024 --block-size 128

``--agreement`` instead segments a 3D volume that fits in memory (synthetic nuclei,
``--agree-shape``, default 48 x 192 x 192) both in memory (``Model.segment(do_3d=True)``)
and blockwise (``--agree-block``, default 24 x 96 x 96: 2 x 2 x 2 blocks, faces along
every axis) and reports AP@0.5 / 0.75 / 0.9 of blockwise against in memory and the
objects split at block faces::

    python benchmarks/bench_blocks3d.py --agreement
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SHAPES = ["1024,1024,1024", "1024,2048,2048", "2048,2048,2048"]
TILE = 64


def periodic_tile(diameter: float, seed: int = 0):
    """A ``TILE``^3 uint16 tile of blurred blobs that repeats seamlessly."""
    import numpy as np
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vol = np.zeros((TILE,) * 3, np.float32)
    n = int(TILE ** 3 / diameter ** 3 * 0.5)
    vol[tuple(rng.integers(0, TILE, n) for _ in range(3))] = 1.0
    vol = ndi.gaussian_filter(vol, diameter / 4.0, mode="wrap")
    vol = vol / max(float(vol.max()), 1e-6) * 4000.0 + rng.normal(300, 30, vol.shape)
    return np.clip(vol, 0, 65535).astype(np.uint16)


def child(args: argparse.Namespace) -> dict:
    import dask.array as da
    import numpy as np

    import flowseg.engine  # noqa: F401  (OpenMP wait policy before torch loads)
    from flowseg import segment_blocks
    from flowseg.engine.blocks import ClusterOptions
    from flowseg.engine.inference.model import Model

    shape = tuple(int(s) for s in args.shape.split(","))
    model = Model.load(args.model)
    if args.block_size <= 0:  # the engine's default for this model and diameter
        from flowseg.engine.blocks.run import default_block_size

        args.block_size = default_block_size(shape, model, 1, True, args.diameter)
    tile = da.from_array(periodic_tile(args.diameter), chunks=TILE)
    vol = da.tile(tile, tuple(s // TILE for s in shape)).rechunk(128)
    # a foreground mask at 1/8 resolution: one cell at the centre of each chosen block's
    # core, out of reach of the neighbours' padded regions, so exactly those blocks run
    from flowseg.engine.blocks.plan import default_overlap

    overlap = max(default_overlap(args.diameter, 3))
    if args.block_size // 2 - 8 < overlap:
        raise SystemExit(f"--block-size {args.block_size}: a block's centre lies within the "
                         f"{overlap}-voxel overlap of its neighbours, so the mask would select "
                         f"them too; use a block size >= {2 * (overlap + 8)}")
    grid = tuple(-(-s // args.block_size) for s in shape)
    mask = np.zeros(tuple(-(-s // 8) for s in shape), bool)
    for k in range(args.blocks):
        idx = (grid[0] // 2, grid[1] // 2, grid[2] // 2 + k - args.blocks // 2)
        mask[tuple((i * args.block_size + args.block_size // 2) // 8 for i in idx)] = True
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowseg-bench3d-") as tmp:
        res = segment_blocks(vol, model, block_size=args.block_size, diameter=args.diameter,
                             do_3d=True, z_axis=0, mask=mask, out=Path(tmp) / "labels.zarr",
                             cluster=ClusterOptions(workers=args.workers))
    seconds = time.perf_counter() - t0
    from flowseg.engine.blocks.run import task_memory

    est = task_memory(res.plan, model, 1, True, args.diameter, None)
    return {"shape": list(shape), "gbytes": round(2 * float(np.prod(shape)) / 1e9, 2),
            "block_size": args.block_size, "padded": list(res.plan.padded_max),
            "n_blocks": res.plan.n_blocks, "segmented": res.n_segmented,
            "n_objects": res.n_objects, "worker_peak_mb": round(res.peak_rss_mb),
            "caller_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "task_estimate_mb": round(est / 2 ** 20), "seconds": round(seconds, 1),
            "workers": res.workers}


def agreement(args: argparse.Namespace) -> dict:
    """In-memory vs blockwise 3D segmentation of one synthetic nuclei volume."""
    import numpy as np

    import flowseg.engine  # noqa: F401  (OpenMP wait policy before torch loads)
    from flowseg import segment_blocks
    from flowseg.engine.blocks import ClusterOptions
    from flowseg.engine.blocks.quality import face_splits
    from flowseg.engine.data.synthetic import make_sample
    from flowseg.engine.flows.metrics import average_precision
    from flowseg.engine.inference.model import Model

    shape = tuple(int(v) for v in args.agree_shape.split(","))
    block = tuple(int(v) for v in args.agree_block.split(","))
    s = make_sample("nuclei", shape, seed=7, diameter=args.diameter, noise=1.0, blur=1.0)
    vol = (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)
    model = Model.load(args.model)
    t0 = time.perf_counter()
    ref = model.segment(vol, diameter=args.diameter, do_3d=True, z_axis=0).masks
    t_mem = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="flowseg-bench3d-") as tmp:
        t0 = time.perf_counter()
        res = segment_blocks(vol, model, block_size=block, diameter=args.diameter,
                             do_3d=True, z_axis=0, out=Path(tmp) / "labels.zarr",
                             cluster=ClusterOptions(workers=args.workers))
        t_blk = time.perf_counter() - t0
        lab = np.asarray(res.labels)
    ap = average_precision(ref, lab, thresholds=(0.5, 0.75, 0.9))
    fs = face_splits(lab, ref, res.plan)
    return {"shape": list(shape), "block_size": list(block),
            "padded": list(res.plan.padded_max), "n_blocks": res.plan.n_blocks,
            "diameter": args.diameter, "n_inmemory": int(ref.max()),
            "n_blockwise": res.n_objects, "n_truth": int(s.labels.max()),
            "ap_vs_inmemory": [round(float(a), 4) for a in ap],
            "crossing_faces": fs.crossing, "split_at_faces": fs.split,
            "inmemory_s": round(t_mem, 1), "blockwise_s": round(t_blk, 1),
            "workers": args.workers}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="Z,Y,X (multiples of 64)")
    ap.add_argument("--block-size", type=int, default=128, help="0: the engine's default")
    ap.add_argument("--blocks", type=int, default=2, help="blocks segmented in every volume")
    ap.add_argument("--diameter", type=float, default=17.0)
    ap.add_argument("--model", default="nuclei")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--agreement", action="store_true",
                    help="in-memory vs blockwise on a volume that fits (see above)")
    ap.add_argument("--agree-shape", default="48,192,192")
    ap.add_argument("--agree-block", default="24,96,96")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.agreement:
        r = agreement(args)
        print(json.dumps(r, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
        return 0
    rows = []
    print(f"{'volume':>16} {'GB':>5} {'block':>5} {'padded':>12} {'blocks':>9} "
          f"{'worker peak':>11} {'estimate':>8} {'caller':>7} {'time':>7}", flush=True)
    for shape in args.shapes:
        cmd = [sys.executable, __file__, "--child", "--shape", shape,
               "--block-size", str(args.block_size), "--blocks", str(args.blocks),
               "--diameter", str(args.diameter), "--model", args.model,
               "--workers", str(args.workers)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"{shape}: failed\n{out.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{'x'.join(map(str, r['shape'])):>16} {r['gbytes']:5.1f} {r['block_size']:>5} "
              f"{'x'.join(map(str, r['padded'])):>12} {r['segmented']:>4}/{r['n_blocks']:<4} "
              f"{r['worker_peak_mb']:>8} MB {r['task_estimate_mb']:>5} MB "
              f"{r['caller_peak_mb']:>4} MB {r['seconds']:6.0f}s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
