"""Fine-tuning benchmark (issue 17): ``flowseg train`` on 1 or 3 corrected images of a
modality the start model never learnt, wall time and AP@0.5 on unseen images before/after.

Two directions, both on ``../shared/data`` (read only; the chosen training images are
linked or converted into a temporary folder, never into the repository):

``nuclei-usiigaci``
    From the bundled ``nuclei`` model, fine-tune on 1 or 3 Usiigaci phase-contrast images of
    whole cells (the training part of the fixed split), score the 6 Usiigaci validation
    images (``recipes/splits/usiigaci_val.txt``).
``cyto-stained``
    From the bundled ``cyto`` model, fine-tune on 1 or 3 stained-tissue DSB 2018 images
    (``recipes/data.py``'s ``image_kind``; converted to gray as for the bundled models),
    score the 11 stained images of the DSB validation split.

Every AP is at the diameter the model *estimates* (no true diameters).  Each size is run
for ``--picks`` seeded draws of training images (images with at least ``--min-objects``
objects), because one image is a lottery; the table gives each draw and the mean.  Each
fine-tune is one ``flowseg train --dir TMP --model START --out TMP/m.pt`` process with
default settings (plus ``--train-args``), timed from its start to its exit (Python start-up,
reading, targets, training, check, size model and save).

    python benchmarks/bench_finetune.py                       # all: 2 directions x (1, 3)
    python benchmarks/bench_finetune.py --directions cyto-stained --sizes 1 --picks 1
    python benchmarks/bench_finetune.py --json runs/bench_finetune.json

The machine's load average is recorded with every run: wall times on a shared CPU are
inflated by other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIRECTIONS = {"nuclei-usiigaci": ("nuclei", "usiigaci"), "cyto-stained": ("cyto", "stained")}


def _load(kind: str, data: Path) -> dict:
    """Train pool and validation images of a direction (gray float32 images)."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from data import load_source  # recipes/data.py: fixed splits, image kinds

    if kind == "usiigaci":
        d = load_source("usiigaci", data)
        files = {n: data / "usiigaci" / "train" / n.split("/", 1)[1] for n in d["train_names"]}
        return {**d, "files": files}
    d = load_source("dsb2018", data)
    out: dict = {"files": {}}
    for part in ("train", "val"):
        keep = [i for i, k in enumerate(d[f"{part}_kinds"]) if k == "stained"]
        for key in ("images", "labels", "names"):
            out[f"{part}_{key}"] = [d[f"{part}_{key}"][i] for i in keep]
    return out


def _score(model, images, labels) -> tuple[float, list, list, float]:
    """Mean AP@0.5 at the estimated diameter, per-image APs, diameters, seconds."""
    from flowseg.engine.flows.metrics import average_precision
    from flowseg.engine.training.prep import median_diameter

    t0 = time.monotonic()
    aps, diams = [], []
    for img, gt in zip(images, labels):
        seg = model.segment(img, diameter=None)
        aps.append(float(np.asarray(average_precision(gt, seg.masks, thresholds=(0.5,)))[0]))
        diams.append([round(float(seg.diameter), 1), round(median_diameter(gt), 1)])
    return float(np.mean(aps)), [round(a, 3) for a in aps], diams, time.monotonic() - t0


def _write_set(folder: Path, d: dict, idx: list[int]) -> list[str]:
    """Put the chosen training pairs in ``folder`` (originals linked, or gray TIFFs)."""
    import tifffile

    names = []
    for i in idx:
        name = d["train_names"][i].split("/", 1)[1]
        stem = Path(name).stem
        src = d["files"].get(d["train_names"][i])
        if src is not None and src.suffix.lower() in (".tif", ".tiff"):
            os.symlink(src, folder / src.name)
        else:
            tifffile.imwrite(folder / f"{stem}.tif", np.asarray(d["train_images"][i], np.float32))
        tifffile.imwrite(folder / f"{stem}_masks.tif", np.asarray(d["train_labels"][i], np.uint16))
        names.append(name)
    return names


def _run(start: str, folder: Path, extra: list[str]) -> tuple[float, int, str]:
    out = folder / "m.pt"
    cmd = [sys.executable, "-m", "flowseg.cli", "train", "--dir", str(folder), "--model", start,
           "--out", str(out), *extra]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    return wall, p.returncode, (p.stderr[-2000:] if p.returncode else p.stderr[-600:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=DIRECTIONS)
    ap.add_argument("--sizes", nargs="+", type=int, default=[1, 3])
    ap.add_argument("--picks", type=int, default=3, help="seeded draws of training images")
    ap.add_argument("--min-objects", type=int, default=10)
    ap.add_argument("--train-args", default="", help="extra flowseg train arguments")
    ap.add_argument("--json", help="append every run as a JSON line to this file")
    args = ap.parse_args(argv)

    from flowseg.engine.inference.model import Model

    extra = shlex.split(args.train_args)
    rows = []
    for direction in args.directions:
        start, kind = DIRECTIONS[direction]
        d = _load(kind, Path(args.data))
        m0 = Model.load(start)
        ap0, aps0, _, s0 = _score(m0, d["val_images"], d["val_labels"])
        print(f"{direction}: start model {start}: AP@0.5 {ap0:.3f} at the estimated diameter "
              f"on {len(aps0)} validation images ({s0:.0f} s)", flush=True)
        pool = [i for i, lab in enumerate(d["train_labels"])
                if len(np.unique(lab)) - 1 >= args.min_objects]
        for n in args.sizes:
            for pick in range(args.picks):
                idx = [pool[i] for i in np.random.default_rng(pick).permutation(len(pool))[:n]]
                with tempfile.TemporaryDirectory(prefix="flowseg-ft-") as tmp:
                    names = _write_set(Path(tmp), d, idx)
                    load0 = os.getloadavg()[0]
                    wall, rc, log = _run(start, Path(tmp), extra)
                    if rc != 0:
                        print(f"  flowseg train failed ({rc}):\n{log}", flush=True)
                        continue
                    m = Model.load(Path(tmp) / "m.pt")
                ap1, aps1, diams1, _ = _score(m, d["val_images"], d["val_labels"])
                rec = m.meta["training"]
                row = {"direction": direction, "n_images": n, "pick": pick, "images": names,
                       "wall_s": round(wall, 1), "ap_before": round(ap0, 3),
                       "ap_after": round(ap1, 3), "gain": round(ap1 - ap0, 3),
                       "improved": rec.get("improved"), "note": rec.get("note"),
                       "steps": len(rec.get("loss", [])), "aps_after": aps1,
                       "diameters_after": diams1, "aps_before": aps0,
                       "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
                       "train_args": args.train_args}
                rows.append(row)
                print(f"  {n} image(s), draw {pick} ({', '.join(names)}): {wall:.0f} s, AP@0.5 "
                      f"{ap0:.3f} -> {ap1:.3f} ({ap1 - ap0:+.3f}); {rec.get('note')} "
                      f"[load {load0:.1f}]", flush=True)
                if args.json:
                    with open(args.json, "a") as fh:
                        fh.write(json.dumps(row) + "\n")
    print("\n| direction | images | draws | wall s (max) | AP@0.5 before | after (mean) | gain |")
    print("|---|---|---|---|---|---|---|")
    for direction in args.directions:
        for n in args.sizes:
            r = [x for x in rows if x["direction"] == direction and x["n_images"] == n]
            if r:
                print(f"| {direction} | {n} | {len(r)} | {max(x['wall_s'] for x in r):.0f} | "
                      f"{r[0]['ap_before']:.3f} | {np.mean([x['ap_after'] for x in r]):.3f} | "
                      f"{np.mean([x['gain'] for x in r]):+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
