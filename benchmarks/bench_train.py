"""Training throughput (crops/s) of flowseg vs Cellpose 3.1 ``train_seg``, side by side.

Both train the same network size from scratch on the same images (synthetic by default, or
the first N pairs of a Cellpose-style folder with ``--data``), same epochs, batch size and
crop size, SGD; the time of the training loop is measured (targets computed up front are
excluded on both sides).  Runs alternate ours / peer ``--repeats`` times because the CPU is
shared; the median of each is reported.  The peer runs with the same OMP_WAIT_POLICY as our
engine sets (PASSIVE) so both are treated alike on a busy machine.

    FLOWSEG_PEER_PYTHON=$(bash /work/shared/tools/peer_env.sh) python benchmarks/bench_train.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np


def _data(args):
    if args.data:
        from flowseg.engine.io.datasets import load_folder

        f = load_folder(args.data, max_images=args.n_images)
        return f.images, f.labels
    from flowseg.engine.data.synthetic import make_sample

    s = [make_sample("cells", (args.size, args.size), seed=k) for k in range(args.n_images)]
    return [x.image for x in s], [x.labels for x in s]


def _ours(images, labels, width, args) -> float:
    from flowseg.engine.inference.model import Model
    from flowseg.engine.training.train import train

    res = train(Model.new(width=width, seed=0), images, labels, recipe="from_scratch",
                epochs=args.epochs, batch_size=args.batch, crop=args.crop,
                n_per_epoch=len(images), seed=0, learning_rate=0.2)
    return res.crops_per_second


def _peer(npz: str, width: int, args, peer: str) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    script = str(Path(__file__).with_name("_peer_train.py"))
    out = subprocess.run([peer, script, npz, str(width), str(args.epochs), str(args.batch),
                          str(args.crop)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="Cellpose-style folder (default: synthetic images)")
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--size", type=int, default=384, help="synthetic image side")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--widths", type=int, nargs="+", default=[32, 16])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    peer = None if args.no_peer else os.environ.get("FLOWSEG_PEER_PYTHON")
    images, labels = _data(args)
    npz = None
    if peer:
        from flowseg.engine.training.prep import prepare_samples

        s = prepare_samples(images, labels)  # same 2-channel, 1-99 % normalised input
        fd, npz = tempfile.mkstemp(suffix=".npz")
        os.close(fd)
        arrs = {"n": len(s)}
        for k in range(len(s)):
            arrs[f"image{k}"] = np.asarray(s.images[k], np.float32)
            arrs[f"labels{k}"] = np.asarray(labels[k]).astype(np.int32)
        np.savez(npz, **arrs)
    print(f"{len(images)} images, {args.epochs} epochs, batch {args.batch}, crop {args.crop}, "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    try:
        for w in args.widths:
            ours, theirs = [], []
            for _ in range(args.repeats):
                ours.append(_ours(images, labels, w, args))
                if peer:
                    theirs.append(_peer(npz, w, args, peer)["crops_per_s"])
            line = (f"width {w:3d}: flowseg {np.median(ours):.3f} crops/s "
                    f"{np.round(ours, 3).tolist()}")
            if theirs:
                line += (f" | Cellpose 3.1 train_seg {np.median(theirs):.3f} crops/s "
                         f"{np.round(theirs, 3).tolist()} | ratio "
                         f"{np.median(ours) / np.median(theirs):.2f}x")
            print(line, f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        if npz:
            os.unlink(npz)


if __name__ == "__main__":
    main()
