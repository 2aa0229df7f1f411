"""Diameter estimation of the default path (``Model.segment(image)``, diameter=None), counted.

For each image: the size model's diameter, the crops' median, the final estimate, the
median equivalent-circle diameter of the image's labels, whether the estimate's own
whole-image pass was kept, the network *work* of the default path and of the given-diameter
path at the estimate (``Model.segment(image, diameter=estimate)``), and AP@0.5 of both
against the labels; then totals per model (sum of work / sum of work), the median relative
error of the estimates against the labels' median and, with ``--baseline``, how many
estimates are within 5 % of an earlier run's.

Work is counted, not timed, so the numbers are deterministic and do not depend on the load
of the machine: pixels through the whole network (every batch of
:func:`flowseg.engine.network.tiling.forward`, which ``run_tiled`` uses, and of
:func:`flowseg.engine.inference.crops.crops_forward`, crops sharing one style) plus
the pixels of the encoder-only style tiles
(:func:`flowseg.engine.inference.style.encoder_styles`) at
:data:`~flowseg.engine.inference.style.ENCODER_SHARE` (41 %) of a network pixel.

Image sets (``--set``):

* ``real``: the images of ``benchmarks/bench_segment.py --real``: the six held-out
  Usiigaci phase-contrast images (1022 x 1024) with ``cyto`` and the five Data Science Bowl
  images of about 1 MP with ``nuclei``;
* ``wide``: all images of the two sources that are large enough for crops: every DSB image
  of at least 0.7 MP in the shared folder (23, most of them training images of ``nuclei``)
  and every Usiigaci image (38) with ``cyto``, for totals less at the mercy of a few images;
* ``other``: images not in ``real``, to check that nothing is tuned to those eleven: every
  DSB validation image (``recipes/splits/dsb2018_val.txt``) larger than 360 x 360 other
  than the ``real`` ones (520 x 696, 603 x 1272, 1024 x 1024) with ``nuclei``, and six other
  Usiigaci images (training images of ``cyto``) with ``cyto``.

Usage (the commands behind the table in docs/segment.md, "Diameter estimation")::

    python benchmarks/bench_estimate.py --set real --json runs/estimate_real.json
    python benchmarks/bench_estimate.py --set other --json runs/estimate_other.json
    python benchmarks/bench_estimate.py --set wide --json runs/estimate_wide.json

``--baseline OLD.json`` compares the estimates with those of an earlier ``--json`` file;
``--models-from DIR`` loads ``DIR/NAME.pt`` instead of the bundled model ``NAME``.

``--set scale``: how much the segmentation depends on the diameter it is made at, which sets
the window in which ``Model.segment`` keeps the estimate's own pass
(:func:`flowseg.engine.inference.size.pass_fits`): AP@0.5/0.75/0.9 against the labels when
segmenting at :data:`FACTORS` x the labels' median diameter, minus AP at 1 x (mean over
images and its standard error), on all Usiigaci images with ``cyto`` and the DSB validation
split with ``nuclei`` (about 30 min on 2 cores)::

    python benchmarks/bench_estimate.py --set scale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

import flowseg.engine  # noqa: F401  (sets the OpenMP wait policy before torch loads)
from flowseg.engine.flows.metrics import average_precision
from flowseg.engine.inference import crops as crops_mod
from flowseg.engine.inference import segment as segment_mod
from flowseg.engine.inference import size as size_mod
from flowseg.engine.inference import style as style_mod
from flowseg.engine.inference.crops import mask_diameters
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.style import ENCODER_SHARE
from flowseg.engine.network import tiling as tiling_mod

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segment import REAL  # noqa: E402  (the ``real`` set)
from bench_segment import load_labelled as load  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Usiigaci images of the ``other`` set (not held out from ``cyto``'s training)
OTHER_USIIGACI = (3, 6, 11, 14, 20, 25)
#: ``--set scale``: diameters relative to the labels' median
FACTORS = (0.8, 0.9, 1.0, 1.1)


def other_images(data: Path) -> dict[str, list[str]]:
    """The ``other`` set: DSB validation images larger than 360 x 360 not in :data:`REAL`,
    and the Usiigaci images :data:`OTHER_USIIGACI`."""
    import imageio.v3 as iio

    names = (ROOT / "recipes" / "splits" / "dsb2018_val.txt").read_text().split()
    dsb = []
    for n in sorted(names):
        rel = f"dsb2018/train/{n if n.endswith('.png') else n + '.png'}"
        if rel in REAL["nuclei"]:
            continue
        shape = iio.improps(data / rel).shape
        if shape[0] * shape[1] > 360 * 360:
            dsb.append(rel)
    return {"nuclei": dsb,
            "cyto": [f"usiigaci/train/set{k:02d}.tif" for k in OTHER_USIIGACI]}


def wide_images(data: Path) -> dict[str, list[str]]:
    """The ``wide`` set: DSB images of at least 0.7 MP, all Usiigaci images."""
    import imageio.v3 as iio

    dsb = []
    for p in sorted((data / "dsb2018" / "train").glob("*.png")):
        if not p.stem.endswith("_masks"):
            shape = iio.improps(p).shape
            if shape[0] * shape[1] >= 700_000:
                dsb.append(str(p.relative_to(data)))
    return {"nuclei": dsb, "cyto": sorted(str(p.relative_to(data))
                                          for p in (data / "usiigaci" / "train").glob("set*.tif"))}


#: steps of the default path whose work is reported apart: (module, function, label)
STEPS = ((size_mod, "regression_diameter", "style"),
         (segment_mod, "regression_diameter", "style"),
         (size_mod, "refine_on_crops", "crops"), (size_mod, "refine_at", "pass1"))


class WorkCounter:
    """Counts pixels through the network (whole) and the encoder alone while installed;
    ``steps`` gets the work of each step of :data:`STEPS` (the rest: ``pass2``)."""

    def __init__(self) -> None:
        self.net = 0
        self.encoder = 0
        self.steps: dict[str, float] = {}
        self._orig = (tiling_mod.forward, style_mod.encoder_styles,
                      getattr(crops_mod, "crops_forward", None))
        self._steps = [(mod, fn, getattr(mod, fn)) for mod, fn, _ in STEPS]

    def __enter__(self) -> WorkCounter:
        fwd, enc, crp = self._orig
        for (mod, fn, orig), (_, _, label) in zip(self._steps, STEPS):
            setattr(mod, fn, self._step(orig, label))

        def fwd_spy(net, x):
            self.net += x.shape[0] * x.shape[2] * x.shape[3]
            return fwd(net, x)

        def enc_spy(net, x):
            self.encoder += x.shape[0] * x.shape[2] * x.shape[3]
            return enc(net, x)

        def crp_spy(net, x, *a, **k):
            self.net += x.shape[0] * x.shape[2] * x.shape[3]
            return crp(net, x, *a, **k)

        tiling_mod.forward, style_mod.encoder_styles = fwd_spy, enc_spy
        if crp is not None:
            crops_mod.crops_forward = crp_spy
        return self

    def _step(self, orig, label: str):
        def wrapped(*a, **k):
            w0 = self.work
            try:
                return orig(*a, **k)
            finally:
                self.steps[label] = self.steps.get(label, 0.0) + self.work - w0
        return wrapped

    def __exit__(self, *exc) -> None:
        tiling_mod.forward, style_mod.encoder_styles = self._orig[:2]
        if self._orig[2] is not None:
            crops_mod.crops_forward = self._orig[2]
        for mod, fn, orig in self._steps:
            setattr(mod, fn, orig)

    @property
    def work(self) -> float:
        """Network pixels, encoder-only pixels counted at ``ENCODER_SHARE``."""
        return self.net + ENCODER_SHARE * self.encoder


def measure(model: Model, img: np.ndarray, lab: np.ndarray) -> dict:
    """One image: the default path and the given-diameter path at its estimate."""
    with WorkCounter() as wd:
        seg = model.segment(img)
    p = seg.params
    est = float(p.get("diameter_estimate", seg.diameter))
    with WorkCounter() as wg:
        giv = model.segment(img, diameter=est)
    ap_d, ap_g = (float(average_precision(lab, s.masks, thresholds=(0.5,))[0])
                  for s in (seg, giv))
    return {"size_model": p.get("diameter_size_model"), "crops": p.get("diameter_crops"),
            "crop_objects": p.get("crops_objects"), "crops_se": p.get("crops_se"), "estimate": est,
            "segmented_at": float(seg.diameter), "kept": bool(p.get("estimate_pass_kept")),
            "labels": float(mask_diameters(lab)[0]), "n_labels": int(lab.max()),
            "work_default": wd.work, "work_given": wg.work,
            "work_steps": dict(wd.steps, pass2=wd.work - sum(wd.steps.values())),
            "ap_default": ap_d, "ap_given": ap_g}


def scale_images(data: Path) -> dict[str, list[str]]:
    """``--set scale``: every Usiigaci image (``cyto``), the DSB validation split (``nuclei``)."""
    names = (ROOT / "recipes" / "splits" / "dsb2018_val.txt").read_text().split()
    return {"nuclei": [f"dsb2018/train/{n if n.endswith('.png') else n + '.png'}"
                       for n in sorted(names)],
            "cyto": sorted(str(p.relative_to(data))
                           for p in (data / "usiigaci" / "train").glob("set*.tif"))}


def run_scale(a) -> int:
    """``--set scale``: AP at :data:`FACTORS` x the labels' median diameter, minus AP at 1 x."""
    from flowseg.engine.flows.metrics import match_stats

    sets = scale_images(a.data)
    for name in a.models:
        model = Model.load(name)
        labs, masks = [], {f: [] for f in FACTORS}
        for rel in sets[name][:a.limit or None]:
            img, lab = load(a.data, rel)
            labs.append(lab)
            d = mask_diameters(lab)[0]
            for f in FACTORS:
                masks[f].append(model.segment(img, diameter=d * f).masks)
        ap = {f: np.asarray(match_stats(labs, masks[f], thresholds=(0.5, 0.75, 0.9)).ap)
              for f in FACTORS}
        for f in FACTORS:
            dl = ap[f] - ap[1.0]
            se = dl.std(0, ddof=1) / np.sqrt(len(dl))
            print(f"{name} ({len(labs)} images) at {f:g} x: " + ", ".join(
                f"AP@{t} {ap[f][:, k].mean():.4f} ({dl[:, k].mean():+.4f} +- {se[k]:.4f}; "
                f"{int((dl[:, k] < -0.05).sum())} images lose > 0.05)"
                for k, t in enumerate((0.5, 0.75, 0.9))), flush=True)
    return 0


def _f(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("real", "other", "wide", "scale"), default="real")
    ap.add_argument("--models", nargs="+", default=["cyto", "nuclei"])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "FLOWSEG_DATA", ROOT.parent / "shared" / "data")), help="shared data folder")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--baseline", type=Path, help="an earlier --json: compare estimates")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per model")
    ap.add_argument("--models-from", type=Path,
                    help="load NAME.pt from this folder instead of the bundled NAME (e.g. a "
                         "candidate size model)")
    a = ap.parse_args()
    if a.set == "scale":
        return run_scale(a)
    sets = {"real": lambda d: REAL, "other": other_images, "wide": wide_images}[a.set](a.data)
    base = {}
    if a.baseline:
        base = {(r["model"], r["image"]): r for r in json.loads(a.baseline.read_text())}
    rows = []
    print("model image | size model | crops (objects) | estimate | labels | kept | "
          "work default/given | AP@0.5 default / given", flush=True)
    for name in a.models:
        model = Model.load(a.models_from / f"{name}.pt" if a.models_from else name)
        sm = model.size_model or {}
        fit = (sm.get("fit") or {}).get("diameters")
        print(f"{name}: size model b = {sm.get('b', float('nan')):.4f}, "
              + (f"fitted over {fit[0]:g}-{fit[1]:g} px" if fit else "no recorded fitted range"),
              flush=True)
        for rel in sets[name][:a.limit or None]:
            img, lab = load(a.data, rel)
            r = {"model": name, "image": Path(rel).stem, "shape": list(img.shape),
                 **measure(model, img, lab)}
            rows.append(r)
            old = base.get((name, r["image"]))
            extra = "" if old is None else (
                f" | baseline {old['estimate']:.1f} "
                f"({100 * (r['estimate'] / old['estimate'] - 1):+.1f} %)")
            print(f"{name} {r['image']} {img.shape[0]}x{img.shape[1]} | {_f(r['size_model'])} | "
                  f"{_f(r['crops'])} ({'-' if r['crop_objects'] is None else r['crop_objects']}) | "
                  f"{r['estimate']:.1f} | {r['labels']:.1f} | {'yes' if r['kept'] else 'no'} | "
                  f"{r['work_default'] / r['work_given']:.2f}x ("
                  + " + ".join(f"{k} {v / r['work_given']:.2f}" for k, v in r["work_steps"].items())
                  + ") | "
                  f"{r['ap_default']:.3f} / {r['ap_given']:.3f}{extra}", flush=True)
    for name in a.models:
        r = [x for x in rows if x["model"] == name]
        if not r:
            continue
        wd, wg = sum(x["work_default"] for x in r), sum(x["work_given"] for x in r)
        err = [abs(x["estimate"] / x["labels"] - 1) for x in r]
        line = (f"{name}: {len(r)} images, work default/given {wd / 1e6:.1f} / "
                f"{wg / 1e6:.1f} M px = {wd / wg:.2f}x; kept {sum(x['kept'] for x in r)} of "
                f"{len(r)}; mean AP@0.5 {np.mean([x['ap_default'] for x in r]):.3f} / "
                f"{np.mean([x['ap_given'] for x in r]):.3f}; median error vs labels "
                f"{100 * np.median(err):.1f} %")
        old = [(x, base[(name, x["image"])]) for x in r if (name, x["image"]) in base]
        if old:
            near = sum(abs(x["estimate"] / o["estimate"] - 1) <= 0.05 for x, o in old)
            oerr = [abs(o["estimate"] / x["labels"] - 1) for x, o in old]
            line += (f"; within 5 % of the baseline on {near}/{len(old)} (baseline median "
                     f"error {100 * np.median(oerr):.1f} %)")
        print(line, flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
