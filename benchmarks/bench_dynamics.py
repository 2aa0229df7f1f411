"""Benchmark of the flow engine: labels -> flows and flows -> masks, vs Cellpose.

Usage::

    python benchmarks/bench_dynamics.py [--repeats 5] [--cases 512,2048,3d] [--no-compile]
    FLOWSEG_PEER_PYTHON=$(bash /work/shared/tools/peer_env.sh) python benchmarks/bench_dynamics.py

Cases (synthetic touching cells from ``flowseg.engine.data.synthetic.make_labels``, seed 0,
diameters chosen to match the cell counts of the reference figures): 2D 512^2 (~215
cells), 2D 2048^2 (~3581), 3D 96x128x128 (~81).  ``flows_to_masks`` gets the exact unit
flows and ``cellprob = +-5``; the round trip is scored by AP at IoU 0.9.

Timings are best-of-N wall-clock seconds after a warm-up call (numba compilation excluded;
it is measured separately in a fresh process with an empty numba cache).  ``cpu`` is the
process CPU time of the best run (both threads): on a shared machine a cpu/wall ratio
well below the thread count means the run waited for the CPU.  With FLOWSEG_PEER_PYTHON set,
Cellpose 3.1 runs on the same labels in a subprocess (best of ``--peer-repeats``); the
Cellpose 4.2 figures are the reference numbers of /work/shared/tools/README.md.
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

from flowseg.engine.data.synthetic import make_labels
from flowseg.engine.flows.diffusion import masks_to_flows
from flowseg.engine.flows.dynamics import compute_masks
from flowseg.engine.flows.metrics import average_precision

CASES = {
    "512": ((512, 512), 44.0),
    "2048": ((2048, 2048), 42.0),
    "3d": ((96, 128, 128), 36.0),
}
# reference figures (2-core machine of this type): (CP3.1, CP4.2) seconds
REFERENCE = {
    "512": {"flows": (2.8, 0.48), "masks": (0.75, 0.65), "cells": 215},
    "2048": {"flows": (29.2, 20.5), "masks": (14.6, 23.9), "cells": 3581},
    "3d": {"flows": (6.9, 4.6), "masks": (5.0, 7.1), "cells": 81},
}
HERE = Path(__file__).resolve().parent


def _best(fn, repeats):
    best, cpu, out = np.inf, 0.0, None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        if dt < best:
            best, cpu = dt, time.process_time() - c0
    return best, cpu, out


def compile_times() -> dict:
    """First-call cost in a fresh process with an empty numba cache, and with the cache."""
    code = ("import time, numpy as np; t=time.perf_counter();"
            "from flowseg import masks_to_flows, flows_to_masks;"
            "from flowseg.engine.data.synthetic import make_labels;"
            "l2=make_labels((64,64),20); l3=make_labels((16,32,32),12);"
            "t0=time.perf_counter();"
            "[flows_to_masks(masks_to_flows(l), np.where(l>0,5.,-5.)) for l in (l2,l3)];"
            "print(time.perf_counter()-t0)")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        for key in ("fresh", "cached"):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True)
            out[key] = float(r.stdout.strip().splitlines()[-1])
    return out


def run_peer(peer: str, lab: np.ndarray, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        np.save(Path(d) / "lab.npy", lab)
        subprocess.run([peer, str(HERE / "_peer_dynamics.py"), str(Path(d) / "lab.npy"),
                        str(repeats), str(Path(d) / "res")], check=True, capture_output=True)
        res = json.loads((Path(d) / "res.json").read_text())
        res["ap90"] = float(average_precision(lab, np.load(Path(d) / "res_masks.npy"),
                                              [0.9])[0])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peer-repeats", type=int, default=1)
    ap.add_argument("--cases", default="512,2048,3d")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    args = ap.parse_args(argv)
    peer = os.environ.get("FLOWSEG_PEER_PYTHON")
    import numba

    print(f"numba threads: {numba.get_num_threads()}, cpus: {os.cpu_count()}, "
          f"load average: {os.getloadavg()[0]:.1f}")
    if not args.no_compile:
        ct = compile_times()
        print(f"first call (compile, empty cache): {ct['fresh']:.1f} s; "
              f"first call with the on-disk cache: {ct['cached']:.2f} s")
    # warm up (compilation / cache load) outside the timings
    for shape in ((64, 64), (16, 32, 32)):
        w = make_labels(shape, 12)
        compute_masks(masks_to_flows(w), np.where(w > 0, 5.0, -5.0))

    rows = []
    for key in args.cases.split(","):
        shape, diam = CASES[key]
        lab = make_labels(shape, diam, seed=0)
        cp = np.where(lab > 0, 5.0, -5.0).astype(np.float32)
        reps = args.repeats if lab.size <= 2**20 else max(2, args.repeats // 2)
        tf, cf, flows = _best(lambda lab=lab: masks_to_flows(lab), reps)
        tm, cm, res = _best(lambda flows=flows, cp=cp: compute_masks(flows, cp), reps)
        ap90 = float(average_precision(lab, res.masks, [0.9])[0])
        row = {"case": key, "shape": "x".join(map(str, shape)), "cells": int(lab.max()),
                   "flows": tf, "flows_cpu": cf, "masks": tm, "masks_cpu": cm, "ap90": ap90,
                   "steps": res.work / max(res.points.shape[1], 1)}
        if peer:
            row["peer"] = run_peer(peer, lab, args.peer_repeats)
        rows.append(row)
        print(f"  done {key}: flows {tf:.3f} s, masks {tm:.3f} s, AP@0.9 {ap90:.4f}",
              flush=True)

    print()
    hdr = ("| case | cells | labels→flows s (cpu) | CP3.1 now | ref best | x ref | x now | "
           "flows→masks s (cpu) | CP3.1 now | ref best | x ref | x now | AP@0.9 ours / CP3.1 |")
    print(hdr)
    print("|---" * 13 + "|")
    for r in rows:
        ref = REFERENCE[r["case"]]
        p = r.get("peer")
        cells = [f"| {r['shape']} | {r['cells']} "]
        for kind, key in (("flows", "flows_s"), ("masks", "masks_s")):
            ours = r[kind]
            best_ref = min(ref[kind])
            now = p[key] if p else float("nan")
            cells.append(f"| {ours:.3f} ({r[kind + '_cpu']:.2f}) | {now:.2f} | {best_ref:.2f} | "
                         f"{best_ref / ours:.0f}x | {now / ours:.0f}x ")
        ap_peer = p["ap90"] if p else float("nan")
        cells.append(f"| {r['ap90']:.4f} / {ap_peer:.4f} |")
        print("".join(cells))
    print("\n'ref best' = the faster of Cellpose 3.1 and 4.2 in the reference table "
          "(/work/shared/tools/README.md);\n'x ref' = ref best / ours (target >= 10x); "
          "'x now' = Cellpose 3.1 timed in this run / ours (same load).")
    if not peer:
        print("CP3.1 'now' not measured (FLOWSEG_PEER_PYTHON not set).")
    print("mean Euler steps per pixel (early stop, niter=200): "
          + ", ".join(f"{r['case']}: {r['steps']:.1f}" for r in rows))
    print(f"load average after the run: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
