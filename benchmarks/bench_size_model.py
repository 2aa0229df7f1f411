"""How well a model's size model reads object sizes: validation images and zoomed copies.

Usage (from the repository root)::

    python benchmarks/bench_size_model.py nuclei [--model-file FILE] [--real]

Reads the size model as ``estimate_diameter(refine=False)`` does
(:func:`~flowseg.engine.inference.size.regression_diameter`: 9 encoder tiles) and, as the
budget path of ``Model.segment(diameter=None)`` first does, on 2 tiles, on

* the model's validation images (the split ``recipes/data.py`` holds out);
* zoomed copies (0.33, 0.5, 0.75, 1.5, 2 and 3x; ``skimage.transform.rescale``, labels
  nearest-neighbour) of a few of them: every 5th validation image of ``nuclei`` (sorted by
  name), all six of ``cyto``,

and compares with the median equivalent-circle diameter of the (zoomed) labels: median
``|log(estimate / labels)|`` and the fraction within 20 % (validation) or 25 % (zoomed
copies: all, and those whose labels measure 8-150 px).  ``--real``: also the reads on the
~1 MP images of ``benchmarks/bench_segment.py --real``; ``--full``: also the refined
estimate (``estimate_diameter``, what ``Model.segment(diameter=None)`` uses) on the
validation images.  Styles are cached under
``/tmp/flowseg_size_cache`` keyed by the network weights, so comparing size models of one
network costs seconds.  ``recipes/refit_size.py`` fits a new size model with these numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "recipes"))

ZOOMS = (0.33, 0.5, 0.75, 1.5, 2.0, 3.0)
#: apparent diameters the size model should read (issue 19): the ``zoom_8_150`` subset
RANGE = (8.0, 150.0)
CACHE = Path("/tmp/flowseg_size_cache")


def weights_key(path: Path) -> str:
    """Hash of a model file's network weights (not its metadata): the style cache's key."""
    import torch

    from flowseg.engine.inference.zoo import weights_fingerprint

    return weights_fingerprint(torch.load(path, map_location="cpu", weights_only=True)
                               ["state_dict"])


def cached(name: str, key: str, make):
    """``make()`` (a dict of arrays) cached as ``CACHE/key/name.npz``."""
    f = CACHE / key / f"{name}.npz"
    if f.exists():
        with np.load(f) as z:
            return {k: z[k] for k in z.files}
    res = make()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp.npz")
    np.savez(tmp, **res)
    tmp.replace(f)
    return res


def zoomed_copy(img: np.ndarray, lab: np.ndarray, zoom: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` (2D or ``(H, W, C)``) and its labels rescaled by ``zoom`` (labels nearest)."""
    from skimage.transform import rescale

    ca = -1 if img.ndim == 3 else None
    z = rescale(img.astype(np.float32), zoom, order=1, preserve_range=True,
                anti_aliasing=zoom < 1, channel_axis=ca).astype(np.float32)
    zl = rescale(lab, zoom, order=0, preserve_range=True, anti_aliasing=False).astype(np.int32)
    return z, zl


def eval_items(model_name: str, data: dict) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """``(set, zoom, image, labels)`` of the evaluation: validation images, zoomed copies."""
    vi, vl, vn = data["val_images"], data["val_labels"], data["val_names"]
    order = np.argsort(vn)
    zoom_set = order[::5] if model_name == "nuclei" else order
    items = [("val", 1.0, vn[i], i) for i in order]
    items += [("zoom", z, vn[i], i) for i in zoom_set for z in ZOOMS]
    return [(s, z, n, vi[i], vl[i]) for s, z, n, i in items]


def eval_styles(model, model_name: str, data: dict, chans, key: str) -> list[dict]:
    """Per evaluation item: set, name, zoom, labels' median, 9- and 2-tile styles (cached)."""
    from flowseg.engine.inference.crops import mask_diameters
    from flowseg.engine.inference.prepare import prepare_input
    from flowseg.engine.inference.size import STYLE_FIRST, STYLE_TILES
    from flowseg.engine.inference.style import tiles_style

    rows = []
    for part, zoom, name, img, lab in eval_items(model_name, data):
        def make(img=img, lab=lab, zoom=zoom):
            if zoom != 1.0:
                img, lab = zoomed_copy(img, lab, zoom)
            x, _ = prepare_input(model, img, channels=chans)
            s9, _ = tiles_style(model.net, x, max_tiles=STYLE_TILES)
            s2, _ = tiles_style(model.net, x, max_tiles=STYLE_FIRST)
            return {"true": np.float64(mask_diameters(lab)[0]), "s9": s9, "s2": s2}
        r = cached(f"eval_{Path(name).stem}_{zoom:g}", key, make)
        rows.append({"set": part, "name": name, "zoom": zoom, "true": float(r["true"]),
                     "s9": r["s9"], "s2": r["s2"]})
    return rows


def score(model, size_model: dict, rows: list[dict]) -> dict:
    """Estimates of ``size_model`` on the evaluation rows and the summary numbers."""
    from flowseg.engine.inference.size import min_estimate, style_diameter

    lo = min_estimate(model)
    out, per = {}, []
    for r in rows:
        if r["true"] <= 0:
            continue
        e9 = max(lo, style_diameter(size_model, r["s9"]))
        e2 = max(lo, style_diameter(size_model, r["s2"]))
        per.append({"set": r["set"], "name": r["name"], "zoom": r["zoom"], "true": r["true"],
                    "est": e9, "est2": e2})
    sets = {"val": [p for p in per if p["set"] == "val"],
            "zoom": [p for p in per if p["set"] == "zoom"],
            "zoom_8_150": [p for p in per if p["set"] == "zoom"
                           and RANGE[0] <= p["true"] <= RANGE[1]]}
    for sname, ps in sets.items():
        if not ps:
            continue
        tol = 0.2 if sname == "val" else 0.25
        err = np.array([abs(np.log(p["est"] / p["true"])) for p in ps])
        err2 = np.array([abs(np.log(p["est2"] / p["true"])) for p in ps])
        rel = np.array([abs(p["est"] / p["true"] - 1) for p in ps])
        rel2 = np.array([abs(p["est2"] / p["true"] - 1) for p in ps])
        out[sname] = {"n": len(ps), "median_abs_log": float(np.median(err)),
                      "within": float((rel <= tol).mean()), "tol": tol,
                      "median_abs_log_2tiles": float(np.median(err2)),
                      "within_2tiles": float((rel2 <= tol).mean())}
    out["rows"] = per
    return out


def table(old: dict, new: dict | None) -> str:
    """Markdown before/after table of the summaries."""
    head = ("| set | n | median abs log, before | after | within tol, before | after |"
            " 2 tiles within, before | after |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for s in ("val", "zoom", "zoom_8_150"):
        o, n = old[s], (new or old)[s]
        a = (lambda v: f"{v:.3f}") if new else (lambda v: "")
        p = (lambda v: f"{100 * v:.0f} %") if new else (lambda v: "")
        lines.append(f"| {s} (within {100 * o['tol']:.0f} %) | {o['n']} | "
                     f"{o['median_abs_log']:.3f} | {a(n['median_abs_log'])} | "
                     f"{100 * o['within']:.0f} % | {p(n['within'])} | "
                     f"{100 * o['within_2tiles']:.0f} % | {p(n['within_2tiles'])} |")
    return "\n".join(lines)


def real_reads(model, name: str, data: Path) -> list[dict]:
    """The size model's 9- and 2-tile reads on ``bench_segment.py --real``'s images."""
    from bench_segment import real_images

    from flowseg.engine.inference.crops import mask_diameters
    from flowseg.engine.inference.prepare import prepare_input
    from flowseg.engine.inference.size import STYLE_FIRST, STYLE_TILES, min_estimate, style_diameter
    from flowseg.engine.inference.style import tiles_style

    rows = []
    for fname, img, lab in real_images(data, name):
        x, _ = prepare_input(model, img)
        r = {"image": fname, "labels": mask_diameters(lab)[0]}
        for k in (STYLE_TILES, STYLE_FIRST):
            s, _ = tiles_style(model.net, x, max_tiles=k)
            r[f"tiles_{k}"] = max(min_estimate(model), style_diameter(model.size_model, s))
        rows.append(r)
        print(" ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in r.items()), flush=True)
    return rows


def full_estimates(model, data: dict, chans) -> dict:
    """``estimate_diameter`` with its refinement (what ``segment(diameter=None)`` uses) on the
    validation images: median ``|log ratio|`` and fraction within 20 % of the labels."""
    from flowseg.engine.inference.crops import mask_diameters

    err = []
    for img, lab in zip(data["val_images"], data["val_labels"]):
        d = mask_diameters(lab)[0]
        if d > 0:
            err.append(abs(np.log(model.estimate_diameter(img, channels=chans) / d)))
    err = np.asarray(err)
    res = {"n": len(err), "median_abs_log": float(np.median(err)),
           "within_20": float((np.expm1(err) <= 0.2).mean())}
    print(f"full estimate on the validation images: {res}", flush=True)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=("nuclei", "cyto"))
    p.add_argument("--model-file", default=None)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--real", action="store_true")
    p.add_argument("--full", action="store_true",
                   help="also the refined estimate (segment(diameter=None)'s) on val images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch
    from data import RECIPES, load_training_set

    import flowseg

    torch.set_num_threads(args.threads)
    path = Path(args.model_file or ROOT / "src" / "flowseg" / "models" / f"{args.model}.pt")
    model = flowseg.Model.load(path)
    data = load_training_set(args.model, Path(args.data))
    rows = eval_styles(model, args.model, data, RECIPES[args.model]["channels"],
                       f"{args.model}_{weights_key(path)}")
    res = score(model, model.size_model, rows)
    print(table(res, None))
    if args.full:
        res["full"] = full_estimates(model, data, RECIPES[args.model]["channels"])
    if args.real:
        res["real"] = real_reads(model, args.model, Path(args.data))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
