"""Score a bundled model on its fixed validation split; numbers for the model card.

Usage (from the repository root)::

    python recipes/evaluate_model.py nuclei [--model-file FILE] [--refit-size] [--augment]

Prints and writes ``runs/<model>_eval.json``: mean AP@0.5/0.75/0.9 over the validation
images segmented at their true median diameter, the same with the diameter estimated by the
model's size model, and the fraction of images whose estimated diameter is within 20 % of
the true median diameter; with ``--augment`` also the AP with flip test-time augmentation.
``--refit-size`` (re)fits the size model on the training images first and saves it into the
model file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from data import RECIPES, load_training_set, stored_as_half  # noqa: E402


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (so records do not name a machine)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(RECIPES))
    p.add_argument("--model-file", default=None)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--refit-size", action="store_true")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--augment", action="store_true",
                   help="also score with flip test-time augmentation (augment=True)")
    args = p.parse_args(argv)

    import torch

    import flowseg
    from flowseg.engine.inference.size import fit_size_model
    from flowseg.engine.training.prep import median_diameter

    torch.set_num_threads(2)
    path = Path(args.model_file or ROOT / "src" / "flowseg" / "models" / f"{args.model}.pt")
    model = flowseg.Model.load(path)
    data = load_training_set(args.model, Path(args.data))
    chans = RECIPES[args.model]["channels"]
    if args.refit_size:
        t = time.time()
        sm = fit_size_model(model, data["train_images"], data["train_labels"], channels=chans)
        model.meta["size_model"] = sm
        model.save(path, overwrite=True, half=stored_as_half(path))  # keep its precision
        print(f"size model refitted in {time.time() - t:.0f} s")

    vi, vl, vn = data["val_images"], data["val_labels"], data["val_names"]
    vk = data.get("val_kinds") or [None] * len(vi)
    if args.max_images:
        vi, vl, vn = vi[: args.max_images], vl[: args.max_images], vn[: args.max_images]
    rows = []
    t0 = time.time()
    for img, lab, name, kind in zip(vi, vl, vn, vk):
        d_true = median_diameter(lab)
        seg = model.segment(img, channels=chans, diameter=d_true)
        ap = np.asarray(flowseg.average_precision(lab, seg.masks)).ravel()
        row = {"name": name, "true_diameter": d_true, "n_true": int(lab.max()),
               "n_pred": int(seg.masks.max()), "ap": ap.tolist()}
        if kind is not None:
            row["kind"] = kind
        if args.augment:
            sa = model.segment(img, channels=chans, diameter=d_true, augment=True)
            row["ap_augment"] = np.asarray(
                flowseg.average_precision(lab, sa.masks)).ravel().tolist()
        if model.size_model is not None:
            d_est = float(model.estimate_diameter(img, channels=chans))
            seg2 = model.segment(img, channels=chans, diameter=d_est)
            row["est_diameter"] = d_est
            row["ap_est"] = np.asarray(flowseg.average_precision(lab, seg2.masks)).ravel().tolist()
        rows.append(row)
        print(name, row["n_true"], row["n_pred"], np.round(ap, 3), flush=True)
    ap = np.array([r["ap"] for r in rows])
    out = {
        "model": args.model, "file": _shown(path), "n_images": len(rows),
        "seconds": time.time() - t0,
        "ap_true_diameter": dict(zip(["0.5", "0.75", "0.9"], ap.mean(0).round(4).tolist())),
        "images": rows,
    }
    kinds = sorted({r["kind"] for r in rows if "kind" in r})
    if kinds:  # image kinds of the source (nuclei: fluorescence, brightfield, stained)
        out["ap_by_kind"] = {
            k: {"n": sum(r.get("kind") == k for r in rows),
                "ap": np.mean([r["ap"] for r in rows if r.get("kind") == k], 0).round(4).tolist()}
            for k in kinds}
    if rows and "ap_augment" in rows[0]:
        apa = np.array([r["ap_augment"] for r in rows])
        out["ap_true_diameter_augment"] = dict(zip(["0.5", "0.75", "0.9"],
                                                   apa.mean(0).round(4).tolist()))
    if rows and "est_diameter" in rows[0]:
        ape = np.array([r["ap_est"] for r in rows])
        rel = np.array([abs(r["est_diameter"] / r["true_diameter"] - 1) for r in rows])
        out["ap_estimated_diameter"] = dict(zip(["0.5", "0.75", "0.9"],
                                                ape.mean(0).round(4).tolist()))
        out["size_within_20pct"] = float((rel <= 0.2).mean())
        out["size_median_rel_error"] = float(np.median(rel))
    summary = {k: v for k, v in out.items() if k != "images"}
    print(json.dumps(summary, indent=1))
    runs = ROOT / "runs"
    runs.mkdir(exist_ok=True)
    (runs / f"{args.model}_eval.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
