"""Held-out-kind ablation of a generalist recipe: train without whole image kinds, score them.

Usage (from the repository root)::

    python recipes/ablation.py cyto_generalist [--hold stained,brightfield,small,phase_dic]
        [--epochs N | --minutes M] [--max-train N] [--synthetic N] [--max-eval N]
        [--crop 224] [--n-per-epoch 1024] [--workers 0] [--json runs/ablation.json]

For each held-out group (:data:`HOLD_GROUPS`: DSB stained tissue and synthetic H&E,
brightfield, the small-object DSB images, synthetic phase-contrast / DIC renderings) a new
network of the recipe's width is trained *from random weights* on the recipe's training set
with every image of that group removed (:func:`split_by_kind`), with the recipe's intensity
augmentation and zoom; the group's images (DSB ones as their plain gray rendering, training
and validation images alike, since none was trained on) are then segmented at their true
diameter by that network and by the bundled ``nuclei`` and ``cyto`` models, and the mean
AP@0.5 per group is printed and written to ``--json``.  The bundled models saw DSB images of
every kind in training, so only the ablation network is scored on kinds it never saw.

``--epochs`` sets the length of each held-out run; ``--minutes`` sets its training time,
turned into epochs by timing the network step on this machine first (reading the data,
the flows and the scoring come on top).  Short CPU runs (``--minutes 1``) only show
that the script works end to end: their numbers are a smoke test, not results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from data import RECIPES, load_source, load_training_set  # noqa: E402

#: held-out groups: name -> the image kinds (data.fine_kind) removed from training together
HOLD_GROUPS: dict[str, tuple[str, ...]] = {
    "stained": ("dsb/stained", "synthetic/stained"),
    "brightfield": ("dsb/brightfield", "synthetic/brightfield"),
    "small": ("dsb/small",),
    "phase_dic": ("synthetic/phase", "synthetic/phase_halo", "synthetic/dic"),
}

_KEYS = ("images", "labels", "names", "kinds")


def split_by_kind(d: dict[str, list], held: tuple[str, ...] | list[str]
                  ) -> tuple[dict[str, list], dict[str, list]]:
    """Split a training set: ``(train, held_out)``.

    ``train`` keeps the training images whose kind is not in ``held``; ``held_out`` has
    every image of a held kind, training and validation alike, each name once (repeats
    and stain renderings of one image count once).  The validation lists of ``train`` are
    the recipe's minus the held kinds.
    """
    held = set(held)
    train: dict[str, list] = {f"{p}_{k}": [] for p in ("train", "val") for k in _KEYS}
    out: dict[str, list] = {k: [] for k in _KEYS}
    seen: set[str] = set()
    for part in ("train", "val"):
        for img, lab, name, kind in zip(*(d[f"{part}_{k}"] for k in _KEYS)):
            if kind in held:
                if name not in seen:
                    seen.add(name)
                    for k, v in zip(_KEYS, (img, lab, name, kind)):
                        out[k].append(v)
            else:
                for k, v in zip(_KEYS, (img, lab, name, kind)):
                    train[f"{part}_{k}"].append(v)
    return train, out


def _subsample(d: dict[str, list], n: int | None, seed: int) -> dict[str, list]:
    if not n or len(d["train_images"]) <= n:
        return d
    keep = sorted(np.random.default_rng(seed).choice(len(d["train_images"]), n, replace=False))
    return {**d, **{f"train_{k}": [d[f"train_{k}"][i] for i in keep] for k in _KEYS}}


@lru_cache(maxsize=1)
def _dsb_plain(data: str) -> dict[str, np.ndarray]:
    plain = load_source("dsb2018", Path(data))
    return dict(zip(plain["train_names"] + plain["val_names"],
                    plain["train_images"] + plain["val_images"]))


def _plain_gray(held: dict[str, list], data: Path, two_channel: bool) -> None:
    """Score DSB images as their plain (equal-weight) gray rendering, as users' RGB is read."""
    if not any(n.startswith("dsb2018/") for n in held["names"]):
        return
    by_name = _dsb_plain(str(data))
    for i, name in enumerate(held["names"]):
        if name in by_name:
            g = by_name[name]
            held["images"][i] = np.stack([g, np.zeros_like(g)], -1) if two_channel else g


def epochs_for(minutes: float, width: int, crop: int, batch: int, n_per_epoch: int,
               threads: int | None = None, seconds: float = 5.0) -> int:
    """Epochs of ``n_per_epoch`` crops that fill ``minutes`` of training on this machine:
    the network step (forward, loss, backward, SGD) timed for ``seconds`` on random crops,
    plus 20 % for making the crops."""
    import torch

    from flowseg.engine.inference.model import Model
    from flowseg.engine.training.schedule import flow_loss

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        m = Model.new(width=width, diam_mean=17.0, seed=0)
        net = m.net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch, 2, crop, crop, device=m.device)
        y = torch.rand(batch, 3, crop, crop, device=m.device)
        t, n = time.time(), 0
        while n < 2 or time.time() - t < seconds:
            loss = flow_loss(net(x)[0], y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += 1
        rate = n * batch / (time.time() - t) / 1.2
    finally:
        torch.set_num_threads(old)
    return max(1, int(rate * 60 * minutes / n_per_epoch))


def _ap(model, img: np.ndarray, lab: np.ndarray) -> float:
    import flowseg
    from flowseg.engine.training.prep import median_diameter

    chans = (0, 1) if img.ndim == 3 and np.any(img[..., 1]) else (0, None)
    seg = model.segment(img, channels=chans, diameter=median_diameter(lab))
    return float(np.asarray(flowseg.average_precision(lab, seg.masks)).ravel()[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(m for m in RECIPES if m.endswith("_generalist")))
    p.add_argument("--hold", default=",".join(HOLD_GROUPS),
                   help=f"groups to hold out, one run each (of {', '.join(HOLD_GROUPS)})")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--minutes", type=float, default=None,
                   help="training time of each run (turned into epochs by timing the network "
                        "step here first)")
    p.add_argument("--max-train", type=int, default=None, help="random subset of training images")
    p.add_argument("--synthetic", type=int, default=None, help="synthetic images (recipe's)")
    p.add_argument("--max-eval", type=int, default=None, help="held-out images scored per group")
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--n-per-epoch", type=int, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-val", action="store_true", help="no validation during training")
    p.add_argument("--json", default=str(ROOT / "runs" / "ablation.json"))
    a = p.parse_args(argv)
    groups = [h for h in a.hold.split(",") if h]
    bad = [h for h in groups if h not in HOLD_GROUPS]
    if bad:
        p.error(f"unknown group(s) {bad}; use {', '.join(HOLD_GROUPS)}")
    if a.epochs is None and a.minutes is None:
        p.error("give --epochs N or --minutes M (length of each held-out run)")

    import flowseg

    cfg = RECIPES[a.model]
    t0 = time.time()
    if a.synthetic is not None:
        from data import load_generalist

        d = load_generalist(a.model, Path(a.data), synthetic=a.synthetic)
    else:
        d = load_training_set(a.model, Path(a.data))
    print(f"{a.model}: {len(d['train_images'])} training images ({time.time() - t0:.0f} s)",
          flush=True)
    bundled = {m: flowseg.Model.load(m) for m in ("nuclei", "cyto")}
    crop, nper = a.crop or cfg["crop"], a.n_per_epoch or cfg.get("n_per_epoch")
    epochs = a.epochs or epochs_for(a.minutes, cfg["width"], crop, cfg["batch_size"], nper,
                                    threads=a.threads)
    print(f"{epochs} epochs of {nper} crops of {crop} px per held-out run", flush=True)
    two = a.model.startswith("cyto")
    rows = []
    for gname in groups:
        train, held = split_by_kind(d, HOLD_GROUPS[gname])
        if not held["images"]:
            print(f"{gname}: no images of {HOLD_GROUPS[gname]} in {a.model}'s set, skipped")
            continue
        train = _subsample(train, a.max_train, cfg["seed"])
        _plain_gray(held, Path(a.data), two)
        if a.max_eval and len(held["images"]) > a.max_eval:
            pick = np.random.default_rng(0).choice(len(held["images"]), a.max_eval, replace=False)
            held = {k: [held[k][i] for i in sorted(pick)] for k in _KEYS}
        t = time.time()
        use_val = not a.no_val and train["val_images"]
        res = flowseg.train(
            None, train["train_images"], train["train_labels"], names=train["train_names"],
            val_images=train["val_images"] if use_val else None,
            val_labels=train["val_labels"] if use_val else None,
            recipe="from_scratch", epochs=epochs, warmup=max(1, min(10, epochs // 5)),
            learning_rate=cfg.get("learning_rate") if cfg["recipe"] == "from_scratch" else 0.1,
            batch_size=cfg["batch_size"], crop=crop, width=cfg["width"],
            diam_mean=cfg["diam_mean"], channels=cfg["channels"], n_per_epoch=nper,
            seed=cfg["seed"],
            workers=a.workers, threads=a.threads, intensity=cfg.get("intensity"),
            scale_range=cfg.get("scale_range"), checkpoint_every=1e9)
        secs = time.time() - t
        scores = {"ablation": [], "nuclei": [], "cyto": []}
        for img, lab in zip(held["images"], held["labels"]):
            scores["ablation"].append(_ap(res.model, img, lab))
            for m, model in bundled.items():
                scores[m].append(_ap(model, img, lab))
        row = {"group": gname, "kinds": list(HOLD_GROUPS[gname]),
               "n_train": len(train["train_images"]), "n_eval": len(held["images"]),
               "train_seconds": round(secs, 1), "epochs": len(res.history["loss"]),
               **{f"ap50_{m}": round(float(np.mean(v)), 4) for m, v in scores.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| held out | images | trained without it | bundled nuclei | bundled cyto |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']} | {r['n_eval']} | {r['ap50_ablation']:.3f} | "
              f"{r['ap50_nuclei']:.3f} | {r['ap50_cyto']:.3f} |")
    out = Path(a.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": a.model, "args": vars(a), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
