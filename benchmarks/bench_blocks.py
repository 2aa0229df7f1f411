"""Blockwise vs in-memory segmentation of one big 2D image: time, peak memory, agreement.

Builds (and caches) a big image, segments it in memory with ``Model.segment`` and blockwise
with ``flowseg.segment_blocks`` on a LocalCluster, each in a fresh process so the peak
resident memory (``ru_maxrss``) of every process is its own, then compares the two label
images (AP@0.5 / 0.75 of blockwise against in-memory, objects split at block faces)::

    python benchmarks/bench_blocks.py                          # 4096^2 synthetic nuclei
    python benchmarks/bench_blocks.py --workers 1 2            # also the 1-worker throughput
    python benchmarks/bench_blocks.py --workers 1x1 1x2 2x1    # workers x threads per worker
    python benchmarks/bench_blocks.py --source dsb2018 --data ../shared/data/dsb2018/train

``--source dsb2018`` tiles 256 x 256 crops of the real fluorescence nuclei images of the
folder into the mosaic (grayscale, deterministic order); never copy those images elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowseg-bench"


def synthetic(size: int, seed: int = 1) -> np.ndarray:
    """uint16 synthetic nuclei (diameter 17) of ``size`` x ``size``, cached on disk."""
    path = CACHE / f"nuclei_{size}_{seed}.npy"
    if path.is_file():
        return np.load(path)
    from flowseg.engine.data.synthetic import make_sample

    s = make_sample("nuclei", (size, size), seed=seed, noise=1.2, blur=1.2)
    img = (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, img)
    return img


def dsb_mosaic(folder: Path, size: int, tile: int = 256) -> np.ndarray:
    """A mosaic of ``tile``-pixel crops of the fluorescence nuclei images in ``folder``."""
    import skimage.io

    n = (size // tile) ** 2
    crops = []
    for f in sorted(folder.glob("*.png")):
        if f.stem.endswith("_masks"):
            continue
        im = np.asarray(skimage.io.imread(f))
        if im.ndim == 3:
            rgb = im[..., :3].astype(np.float32)
            if np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 2:  # stained tissue: skip
                continue
            im = rgb.mean(-1)
        if min(im.shape) < tile or im.mean() > 0.35 * im.max():  # brightfield: skip
            continue
        for y in range(0, im.shape[0] - tile + 1, tile):
            for x in range(0, im.shape[1] - tile + 1, tile):
                crops.append(im[y:y + tile, x:x + tile])
        if len(crops) >= n:
            break
    if len(crops) < n:
        raise SystemExit(f"only {len(crops)} crops of {tile} px in {folder}; need {n}")
    k = size // tile
    rows = [np.concatenate(crops[r * k:(r + 1) * k], 1) for r in range(k)]
    return (np.concatenate(rows, 0) / 255.0 * 20000 + 100).astype(np.uint16)


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_inmemory(args: argparse.Namespace) -> dict:
    from flowseg.engine.inference.model import Model

    img = np.load(args.image)
    model = Model.load(args.model)
    t0 = time.perf_counter()
    seg = model.segment(img, diameter=args.diameter)
    dt = time.perf_counter() - t0
    np.save(args.out, seg.masks)
    return {"seconds": dt, "peak_rss_mb": _peak_mb(), "n_objects": seg.n_objects}


def child_blocks(args: argparse.Namespace) -> dict:
    from flowseg import segment_blocks
    from flowseg.engine.blocks import ClusterOptions
    from flowseg.engine.inference.model import Model

    model = Model.load(args.model)
    t0 = time.perf_counter()
    res = segment_blocks(args.image, model, block_size=args.block_size, diameter=args.diameter,
                         out=args.out, overwrite=True,
                         cluster=ClusterOptions(workers=args.workers[0],
                                                threads=args.threads))
    dt = time.perf_counter() - t0
    return {"seconds": dt, "stages": res.seconds, "worker_peak_rss_mb": res.peak_rss_mb,
            "client_peak_rss_mb": _peak_mb(), "n_objects": res.n_objects,
            "n_blocks": res.plan.n_blocks, "n_merged": res.n_merged, "workers": res.workers}


def _child(mode: str, args: argparse.Namespace, **extra: str) -> dict:
    load0 = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", mode, "--model", args.model,
           "--diameter", str(args.diameter), "--block-size", str(args.block_size)]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["load_before_after"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--source", choices=("synthetic", "dsb2018"), default="synthetic")
    p.add_argument("--data", type=Path, default=Path("../shared/data/dsb2018/train"))
    p.add_argument("--model", default="nuclei")
    p.add_argument("--diameter", type=float, default=17.0)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--workers", nargs="+", default=["2"],
                   help="runs: W workers (threads: cores / W) or WxT (T threads per worker)")
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--child", choices=("inmemory", "blocks"), help=argparse.SUPPRESS)
    p.add_argument("--image", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.workers = [int(args.workers[0])]
        fn = child_inmemory if args.child == "inmemory" else child_blocks
        print(json.dumps(fn(args)))
        return

    import zarr

    from flowseg.engine.blocks import make_plan
    from flowseg.engine.blocks.quality import face_splits
    from flowseg.engine.flows.metrics import average_precision

    img = synthetic(args.size) if args.source == "synthetic" else dsb_mosaic(args.data,
                                                                             args.size)
    report: dict = {"image": f"{args.source} {img.shape[0]}x{img.shape[1]} uint16",
                    "model": args.model, "diameter": args.diameter,
                    "block_size": args.block_size, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="flowseg-bench-") as tmp:
        npy, zin = Path(tmp) / "img.npy", Path(tmp) / "img.zarr"
        np.save(npy, img)
        z = zarr.create_array(store=str(zin), shape=img.shape, chunks=(1024, 1024),
                              dtype=img.dtype)
        z[...] = img
        print(f"image {report['image']}; in-memory run ...", file=sys.stderr)
        report["inmemory"] = _child("inmemory", args, image=npy, out=Path(tmp) / "m.npy")
        ref = np.load(Path(tmp) / "m.npy")
        for spec in args.workers:
            w, _, t = str(spec).partition("x")
            print(f"blockwise run, {w} worker(s), threads {t or 'cores / workers'} ...",
                  file=sys.stderr)
            out = Path(tmp) / f"b{spec}.zarr"
            extra = {"workers": w} | ({"threads": t} if t else {})
            r = _child("blocks", args, image=zin, out=out, **extra)
            lab = np.asarray(zarr.open_array(str(out), mode="r"))
            ap = average_precision(ref, lab, thresholds=(0.5, 0.75, 0.9))
            plan = make_plan(img.shape, args.block_size, diameter=args.diameter)
            fs = face_splits(lab, ref, plan)
            r.update(ap_vs_inmemory=[round(float(a), 4) for a in ap],
                     crossing_faces=fs.crossing, split_at_faces=fs.split,
                     split_fraction=round(fs.fraction, 5))
            report[f"blocks_{spec}"] = r
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
