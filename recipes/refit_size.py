"""Evaluate and refit a bundled model's size model over a wide range of zooms (issues 19, 24).

Usage (from the repository root)::

    python recipes/refit_size.py nuclei --eval-only   # the bundled size model: val + zooms
    python recipes/refit_size.py nuclei               # refit on the training split, compare
    python recipes/refit_size.py nuclei --write       # ... and store it if better on both

The *evaluation* (deterministic) reads the size model as ``estimate_diameter(refine=False)``
does (:func:`~flowseg.engine.inference.size.regression_diameter`, 9 encoder tiles) on

* the model's validation images (the split ``recipes/data.py`` holds out, never fitted on);
* zoomed copies (0.33, 0.5, 0.75, 1.5, 2 and 3x; ``skimage.transform.rescale``, labels
  nearest-neighbour) of a few of them: every 5th validation image of ``nuclei``, all six of
  ``cyto``,

against the median equivalent-circle diameter of the (zoomed) labels, and reports the median
``|log(estimate / labels)|`` and the fraction within 20 % (validation) and 25 % (zooms), for
all zoomed copies and for those whose labels measure 8-150 px.  It also reports the budget
path's first read (2 tiles, where the crops of ``Model.segment(diameter=None)`` start).

The *refit* (:func:`flowseg.engine.inference.size_fit.fit_size_model`'s steps) uses the
training split only: views of every training image zoomed so its objects measure 8-150 px
(log-uniform, stratified), at most ``--crop`` pixels a side, styles read as inference reads
them (9 tiles), and the ridge penalty chosen on a held-out quarter of the training images.
Styles are cached under ``/tmp/flowseg_size_cache`` (keyed by the network weights), so a
rerun costs seconds.  ``--write`` replaces only ``meta["size_model"]`` of the model file (the
weights are written back as they were read) and only when the new size model is better on
the validation images and on the zoomed copies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

ZOOMS = (0.33, 0.5, 0.75, 1.5, 2.0, 3.0)
RANGE = (8.0, 150.0)
RIDGES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
CACHE = Path("/tmp/flowseg_size_cache")


def weights_key(path: Path) -> str:
    """Hash of a model file's network weights (not its metadata): the style cache's key."""
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def replace_size_model(path: Path, size_model: dict, out: Path | None = None) -> Path:
    """Write ``path``'s model file (to ``out``, default in place) with only
    ``meta["size_model"]`` replaced: the stored weights (and their dtype) are written back
    as read, with the project's atomic model-file writer."""
    import torch

    from flowseg.engine.io.modelfile import load_model_file, save_model_file

    load_model_file(path)  # a readable flowseg model file, or a clear error
    obj = torch.load(path, map_location="cpu", weights_only=True)
    meta = dict(obj["meta"])
    meta["size_model"] = size_model
    return save_model_file(out or path, obj["state_dict"], meta, overwrite=True)


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


def fit_views(model, data: dict, chans, key: str, *, views: int, crop: int, seed: int):
    """Styles, log targets and image groups of the training views (cached per image)."""
    from flowseg.engine.inference.prepare import prepare_input
    from flowseg.engine.inference.size import STYLE_TILES
    from flowseg.engine.inference.size_fit import image_views

    tag = f"fit_v{views}_c{crop}_s{seed}_{RANGE[0]:g}-{RANGE[1]:g}"
    S, T, G = [], [], []
    names = data["train_names"]
    group = {n: i for i, n in enumerate(dict.fromkeys(names))}
    t0 = time.time()
    for k, (img, lab, name) in enumerate(zip(data["train_images"], data["train_labels"], names)):
        def make(img=img, lab=lab, k=k):
            x, _ = prepare_input(model, img, channels=chans)
            s, t = image_views(model, x, lab, np.random.default_rng([seed, k]), n=views,
                               crop=crop, diameters=RANGE, tiles=STYLE_TILES)
            return {"s": np.asarray(s, np.float32).reshape(len(s), -1),
                    "t": np.asarray(t, np.float64)}
        r = cached(f"{k:04d}", f"{key}/{tag}", make)
        S += list(r["s"])
        T += list(r["t"])
        G += [group[name]] * len(r["t"])
        if (k + 1) % 50 == 0:
            print(f"  {k + 1}/{len(names)} training images, {time.time() - t0:.0f} s", flush=True)
    return np.asarray(S), np.asarray(T), np.asarray(G)


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


def better(old: dict, new: dict) -> bool:
    """New is better: lower median error and no smaller fraction within, on val and zooms."""
    return all(new[s]["median_abs_log"] < old[s]["median_abs_log"]
               and new[s]["within"] >= old[s]["within"] for s in ("val", "zoom"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=("nuclei", "cyto"))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model-file", default=None)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--views", type=int, default=None,
                   help="zoomed views per training image (default: nuclei 2, cyto 3)")
    p.add_argument("--crop", type=int, default=1024, help="view side at the zoomed scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true",
                   help="store the new size model in the model file if it is better")
    args = p.parse_args(argv)

    import torch
    from data import RECIPES, load_training_set

    import flowseg
    from flowseg.engine.inference.size_fit import fit_ridge

    torch.set_num_threads(args.threads)
    path = Path(args.model_file or ROOT / "src" / "flowseg" / "models" / f"{args.model}.pt")
    model = flowseg.Model.load(path)
    chans = RECIPES[args.model]["channels"]
    key = f"{args.model}_{weights_key(path)}"
    data = load_training_set(args.model, Path(args.data))
    t0 = time.time()
    rows = eval_styles(model, args.model, data, chans, key)
    old_sm = model.meta["size_model"]
    # the cached styles give exactly what estimate_diameter(refine=False) returns
    chk = next(r for r in rows if r["set"] == "val")
    d_chk = model.estimate_diameter(
        data["val_images"][data["val_names"].index(chk["name"])], channels=chans, refine=False)
    assert abs(d_chk - score(model, old_sm, [chk])["rows"][0]["est"]) < 1e-3 * d_chk
    old = score(model, old_sm, rows)
    print(f"evaluation styles: {time.time() - t0:.0f} s")
    report = {"model": args.model, "before": old}
    if not args.eval_only:
        views = args.views or (2 if args.model == "nuclei" else 3)
        t1 = time.time()
        S, T, G = fit_views(model, data, chans, key, views=views, crop=args.crop,
                            seed=args.seed)
        new_sm = fit_ridge(S, T, ridge=RIDGES, groups=G, holdout=0.25, seed=args.seed)
        new_sm["fit"] = {"diameters": list(RANGE), "views_per_image": views, "crop": args.crop,
                         "tiles": 9, "seed": args.seed, "n_images": int(len(np.unique(G))),
                         "data": "training split (recipes/splits held out)",
                         "recipe": "recipes/refit_size.py"}
        print(f"refit: {len(T)} views of {len(np.unique(G))} images, ridge {new_sm['ridge']}, "
              f"train r {new_sm['train_r']:.3f}, {time.time() - t1:.0f} s")
        new = score(model, new_sm, rows)
        report.update(after=new, size_model=new_sm, better=better(old, new))
        print(table(old, new))
        if args.write and report["better"]:
            new_sm["eval"] = {s: {k: round(v, 4) for k, v in new[s].items()}
                              for s in ("val", "zoom", "zoom_8_150")}
            replace_size_model(path, new_sm)
            print(f"wrote the new size model into {path.relative_to(ROOT)}")
        elif args.write:
            print("not written: the new size model is not better on both sets")
    else:
        print(table(old, None))
    out = ROOT / "runs" / f"size_{args.model}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
