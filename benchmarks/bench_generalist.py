"""Generality benchmark (issue 19): AP@0.5 of models on real validation images and on
synthetic stand-ins for the modalities users bring, at the true and at the estimated diameter.

Sets (images are passed as a user would: gray, 16-bit or RGB arrays, no channel setting):

``usiigaci``
    The 6 Usiigaci validation images (phase-contrast whole cells, ``recipes/splits``).
``dsb/<kind>``
    The DSB 2018 validation split (60 images) by kind: fluorescence, brightfield, stained.
``syn/<look>``
    Synthetic renderings (``flowseg.engine.data``) of the image kinds of issue 19's table, each
    ``--n-syn`` images drawn with seeds no training recipe uses: ``fluor_cells`` (16-bit
    fluorescent whole cells ~75 px, elongated 2.5-3.5x), ``dic`` (DIC relief of cells ~115 px),
    ``phase_small`` (phase contrast with halos, cells ~12 px), ``lowcontrast_nuclei`` (16-bit
    nuclei at a few percent contrast), ``noisy_nuclei`` (the same at signal-to-noise
    1.3-4, nuclei 20-50 px), ``he`` (H&E-like RGB nuclei ~16 px).  The generalist
    recipes train on other renderings of the same looks, so these are *not* held out.

    python benchmarks/bench_generalist.py --models cyto nuclei --json runs/generalist_base.jsonl
    python benchmarks/bench_generalist.py --models runs/cpu_gen/cyto_cpu_generalist.pt \\
        --sets usiigaci syn --json runs/generalist_new.jsonl

Prints one line per (model, set): mean AP@0.5 at the true median diameter, at the estimated
diameter, and the median estimated / true diameter ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

#: synthetic sets: (maker, kind, image side, diameter range, elongation range)
SYN = {
    "fluor_cells": ("sample", "cells", 768, (60.0, 90.0), (2.5, 3.5)),
    "dic": ("modality", "dic", 1024, (100.0, 130.0), (1.0, 1.6)),
    "phase_small": ("modality", "phase_halo", 384, (10.0, 14.0), (1.0, 1.5)),
    "lowcontrast_nuclei": ("sample", "nuclei", 512, (14.0, 24.0), (1.0, 1.0)),
    "noisy_nuclei": ("sample", "nuclei", 640, (20.0, 50.0), (1.0, 1.0)),
    "he": ("modality", "stained", 512, (12.0, 20.0), (1.0, 1.0)),
}


def synthetic_set(name: str, n: int, seed: int = 700_000) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, labels) pairs of a synthetic set, as a user's file would hold them."""
    from flowseg.engine.data.modalities import make_modality_sample
    from flowseg.engine.data.synthetic import make_sample

    maker, kind, side, (d0, d1), (e0, e1) = SYN[name]
    out = []
    for k in range(n):
        rng = np.random.default_rng(seed + 97 * k + len(name))
        d = float(rng.uniform(d0, d1))
        el = float(rng.uniform(e0, e1))
        s_seed = int(rng.integers(1 << 30))
        if maker == "sample":
            s = make_sample(kind, (side, side), diameter=d, with_nuclei=False, elongation=el,
                            seed=s_seed, noise=float(rng.uniform(0.5, 1.5)))
        else:
            s = make_modality_sample(kind, (side, side), diameter=d, elongation=el,
                                     seed=s_seed, noise=float(rng.uniform(0.5, 1.5)))
        img = np.asarray(s.image, np.float32)
        img = img[..., 0] if img.shape[-1] == 1 else img
        if name == "fluor_cells":  # 16-bit camera counts, dim cells
            img = (200 + 3000 * img / max(float(img.max()), 1e-6)).astype(np.uint16)
        elif name in ("lowcontrast_nuclei", "noisy_nuclei"):
            # a few percent contrast on a bright offset; noisy: signal-to-noise 1.3-4
            lo, hi = np.percentile(img, (1, 99.9))
            u = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1.5)
            sigma = 120.0 if name == "lowcontrast_nuclei" else float(rng.uniform(300, 900))
            img = (30000 + 1200 * u + rng.normal(0, sigma, u.shape)).clip(0, 65535)
            img = img.astype(np.uint16)
        elif img.ndim == 3:  # RGB renderings as 8-bit
            img = (255 * np.clip(img / max(float(img.max()), 1e-6), 0, 1)).astype(np.uint8)
        out.append((img, np.asarray(s.labels)))
    return out


def real_sets(data: Path, names: list[str]) -> dict[str, list]:
    """The real validation sets asked for: ``usiigaci`` and/or ``dsb`` (split by kind)."""
    sys.path.insert(0, str(ROOT / "recipes"))
    from data import load_source  # fixed splits and image kinds

    sets: dict[str, list] = {}
    if "usiigaci" in names:
        d = load_source("usiigaci", data)
        sets["usiigaci"] = list(zip(d["val_images"], d["val_labels"]))
    if "dsb" in names:
        d = load_source("dsb2018", data)
        for img, lab, kind in zip(d["val_images"], d["val_labels"], d["val_kinds"]):
            sets.setdefault(f"dsb/{kind}", []).append((img, lab))
    return sets


def score(model, img: np.ndarray, lab: np.ndarray) -> dict:
    """AP@0.5 at the true median diameter and at the estimate, and the estimate's ratio."""
    import flowseg
    from flowseg.engine.training.prep import median_diameter

    true_d = float(median_diameter(lab))
    t = time.monotonic()
    seg_t = model.segment(img, diameter=true_d)
    seg_e = model.segment(img, diameter=None)
    est = float(seg_e.diameter)
    return {"true_diameter": round(true_d, 2), "estimate": round(est, 2),
            "ratio": round(est / true_d, 3),
            "ap_true": float(flowseg.average_precision(lab, seg_t.masks)[0]),
            "ap_est": float(flowseg.average_precision(lab, seg_e.masks)[0]),
            "seconds": round(time.monotonic() - t, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cyto", "nuclei"],
                    help="bundled names or model files")
    ap.add_argument("--sets", nargs="+", default=["usiigaci", "dsb", "syn"],
                    choices=["usiigaci", "dsb", "syn"])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--n-syn", type=int, default=4)
    ap.add_argument("--syn", nargs="+", default=list(SYN), choices=list(SYN),
                    help="which synthetic sets (default: all)")
    ap.add_argument("--max-per-set", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="append one JSON line per image")
    a = ap.parse_args(argv)

    import torch

    import flowseg

    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    sets = real_sets(Path(a.data), a.sets)
    if "syn" in a.sets:
        for name in a.syn:
            sets[f"syn/{name}"] = synthetic_set(name, a.n_syn)
    out = open(a.json, "a") if a.json else None  # noqa: SIM115
    for spec in a.models:
        model = flowseg.Model.load(spec)
        for name, pairs in sets.items():
            rows = []
            for k, (img, lab) in enumerate(pairs[:a.max_per_set]):
                r = {"model": spec, "set": name, "image": k, **score(model, img, lab)}
                rows.append(r)
                if out:
                    print(json.dumps(r), file=out, flush=True)
            print(f"{spec:>40s} {name:<24s} n={len(rows):3d} "
                  f"AP@0.5 true {np.mean([r['ap_true'] for r in rows]):.3f} "
                  f"est {np.mean([r['ap_est'] for r in rows]):.3f} "
                  f"ratio {np.median([r['ratio'] for r in rows]):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
