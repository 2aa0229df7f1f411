"""Peak memory of the in-memory path (``Model.segment``), measured against the estimate.

Every case runs in a fresh process: it loads the model and a synthetic image (dense nuclei,
the conservative case: the dynamics' memory grows with the foreground; made once by another
process and cached as ``.npy``, so no memory freed by its making is reused), resets the
process's peak-RSS mark (``/proc/self/clear_refs``, Linux) and segments.  The *working
memory* is the peak resident memory during ``Model.segment`` minus the memory held before
it (Python, torch, the model and the image itself); it is what
:func:`flowseg.engine.memory.estimate_segment_memory` predicts::

    python benchmarks/bench_memory.py                    # default 2D and 3D cases
    python benchmarks/bench_memory.py --cases 2d         # only 2D
    python benchmarks/bench_memory.py --json out.json    # also write the measurements

Each line: shape, channels, rescale, anisotropy, model, measured working memory, the
estimate, their ratio, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowseg-bench"

#: (spatial shape, input channels, diameter or None (= the model's), anisotropy, model)
CASES_2D = [
    ((256, 256), 1, None, None, "nuclei"),
    ((512, 512), 1, None, None, "nuclei"),
    ((960, 960), 1, None, None, "nuclei"),    # the largest one-piece network pass
    ((1024, 1024), 1, None, None, "nuclei"),
    ((1024, 1024), 2, None, None, "nuclei"),
    ((1024, 1024), 1, 8.5, None, "nuclei"),   # rescale 2: 4 M pixels at the model's scale
    ((1536, 1536), 1, None, None, "nuclei"),
    ((2048, 2048), 1, None, None, "nuclei"),
    ((3072, 3072), 1, None, None, "nuclei"),
    ((4096, 4096), 1, None, None, "nuclei"),
    ((4096, 4096), 1, 34.0, None, "nuclei"),  # rescale 0.5: the image-scale buffers
    ((2048, 2048), 1, None, None, "cyto"),
]
CASES_3D = [
    ((32, 128, 128), 1, None, None, "nuclei"),
    ((48, 192, 192), 1, None, None, "nuclei"),
    ((64, 256, 256), 1, None, None, "nuclei"),
    ((96, 384, 384), 1, None, None, "nuclei"),
    ((64, 256, 256), 1, 34.0, None, "nuclei"),
    ((32, 192, 192), 1, None, 2.0, "nuclei"),  # anisotropy 2: z stretched twice
    ((64, 256, 256), 1, None, None, "cyto"),
]


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _image(shape: tuple[int, ...], nchan: int, diameter: float, seed: int = 0):
    import numpy as np

    from flowseg.engine.data.synthetic import make_sample

    s = make_sample("nuclei", shape, diameter=diameter, seed=seed, noise=1.0, blur=1.0)
    img = (s.image[..., 0] / max(float(s.image.max()), 1e-6) * 20000 + 100).astype(np.uint16)
    if nchan > 1:
        img = np.stack([img] + [img // (k + 2) for k in range(nchan - 1)], -1)
    return img, s


def _cached(case: dict) -> Path:
    """The case's image file (made here when missing)."""
    import numpy as np

    from flowseg.engine.inference.model import Model

    diameter = case["diameter"] or Model.load(case["model"]).diam_mean
    name = "x".join(map(str, case["shape"])) + f"_c{case['nchan']}_d{diameter:g}.npy"
    path = CACHE / f"memory_{name}"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        img, _ = _image(tuple(case["shape"]), int(case["nchan"]), diameter)
        np.save(path, img)
    return path


def one(case: dict) -> dict:
    """Measure one case in this process (called in a fresh child)."""
    import gc

    import numpy as np

    import flowseg.engine  # noqa: F401  (OpenMP wait policy before torch loads)
    from flowseg.engine.inference.model import Model

    shape, nchan = tuple(case["shape"]), int(case["nchan"])
    model = Model.load(case["model"])
    diameter = case["diameter"] or model.diam_mean
    img = np.load(case["npy"])
    do_3d = len(shape) == 3
    kw = {"diameter": diameter, "do_3d": do_3d,
          "channel_axis": -1 if nchan > 1 else None,
          "channels": (0, 1) if nchan > 1 else None}
    if do_3d:
        kw["z_axis"] = 0
        if case["anisotropy"]:
            kw["anisotropy"] = case["anisotropy"]
    gc.collect()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")  # reset the peak-RSS mark (VmHWM)
    before = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    seg = model.segment(img, **kw)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") * 1024
    return {**case, "work_bytes": int(peak - before), "before_bytes": int(before),
            "peak_bytes": int(peak), "seconds": round(seconds, 1),
            "n_objects": int(seg.n_objects), "image_bytes": int(img.nbytes)}


def predicted(case: dict) -> int:
    """The engine's estimate for a case."""
    from flowseg.engine.inference.model import Model
    from flowseg.engine.memory import estimate_segment_memory

    model = Model.load(case["model"])
    shape, nchan = tuple(case["shape"]), int(case["nchan"])
    full = (*shape, nchan) if nchan > 1 else shape
    est = estimate_segment_memory(
        model, full, channel_axis=-1 if nchan > 1 else None,
        z_axis=0 if len(shape) == 3 else None, do_3d=len(shape) == 3,
        diameter=case["diameter"] or model.diam_mean, anisotropy=case["anisotropy"])
    return int(est.working)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", choices=("2d", "3d", "all"), default="all")
    ap.add_argument("--json", default=None, help="write the measurements here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--make", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(json.loads(args.one))))
        return 0
    if args.make is not None:
        print(_cached(json.loads(args.make)))
        return 0
    cases = (CASES_2D if args.cases in ("2d", "all") else []) + \
        (CASES_3D if args.cases in ("3d", "all") else [])
    rows = []
    gib = 2.0 ** 30
    print(f"{'shape':>16} {'ch':>2} {'diam':>5} {'anis':>4} {'model':>6} "
          f"{'measured':>9} {'estimate':>9} {'ratio':>5} {'time':>7}", flush=True)
    for shape, nchan, diameter, anis, name in cases:
        case = {"shape": list(shape), "nchan": nchan, "diameter": diameter,
                "anisotropy": anis, "model": name}
        made = subprocess.run([sys.executable, __file__, "--make", json.dumps(case)],
                              capture_output=True, text=True, check=True)
        case["npy"] = made.stdout.strip().splitlines()[-1]
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{'x'.join(map(str, shape))}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        try:
            row["estimate_bytes"] = predicted(case)
        except ImportError:  # before flowseg.engine.memory existed
            row["estimate_bytes"] = 0
        rows.append(row)
        ratio = row["estimate_bytes"] / max(row["work_bytes"], 1)
        print(f"{'x'.join(map(str, shape)):>16} {nchan:>2} {diameter or '-':>5} "
              f"{anis or '-':>4} {name:>6} {row['work_bytes'] / gib:8.2f}G "
              f"{row['estimate_bytes'] / gib:8.2f}G {ratio:5.2f} {row['seconds']:6.1f}s",
              flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
