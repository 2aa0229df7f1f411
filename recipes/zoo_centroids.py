"""Style centroids of the bundled models for the model zoo (``flowseg segment --model auto``).

Default: compute each bundled model's ``meta["style"]`` from the images it trained on
(``recipes/data.py``: the same lists, repeats included, read from ``../shared/data``) with
:func:`flowseg.engine.inference.zoo.training_style`, and store it in
``src/flowseg/models/<name>.pt`` without changing the weights (checked: every tensor bitwise
equal before and after)::

    python recipes/zoo_centroids.py                 # both bundled models
    python recipes/zoo_centroids.py --dry-run       # compute and print, write nothing

``--compare``: measure which style space separates the models best.  For each reference
(``nuclei``, ``cyto``, both concatenated) and style size, centroids are formed from the
training images and every held-out image is assigned to the nearest one; printed are the
rates at which DSB fluorescence (and all DSB) validation images pick ``nuclei`` and the
Usiigaci validation images and time-lapse frames pick ``cyto``, plus what synthetic
whole-cell images (fluorescence and phase contrast, with a nuclear channel) pick::

    python recipes/zoo_centroids.py --compare --sizes 128 256

``--check``: the pick rates of :func:`flowseg.engine.inference.zoo.choose_model` with the stored
centroids, on the held-out images read from their files::

    python recipes/zoo_centroids.py --check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from data import RECIPES, SPLITS, image_kind, load_training_set

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference import zoo

MODELS = ("nuclei", "cyto")


def training_lists(data: Path) -> dict[str, dict]:
    """The training and validation lists of each bundled model (as it trained)."""
    out = {}
    for name in MODELS:
        over = RECIPES[name].get("oversample", 1) if name == "nuclei" else 1
        out[name] = load_training_set(name, data, oversample=over)
    return out


def _held_out(data: Path, sets: dict[str, dict]) -> dict[str, list]:
    """Held-out images by group: (name, image) pairs."""
    dsb = sets["nuclei"]
    groups: dict[str, list] = {"dsb_fluorescence": [], "dsb_other": [], "usiigaci_val": [],
                               "timelapse": [], "synthetic_cells": [], "synthetic_phase": []}
    for img, n, kind in zip(dsb["val_images"], dsb["val_names"], dsb["val_kinds"]):
        groups["dsb_fluorescence" if kind == "fluorescence" else "dsb_other"].append((n, img))
    cyto = sets["cyto"]
    for img, n in zip(cyto["val_images"], cyto["val_names"]):
        groups["usiigaci_val"].append((n, img[..., 0]))
    tl = data / "timelapse" / "usiigaci_t98g_phase.tif"
    if tl.is_file():
        import tifffile

        frames = tifffile.imread(tl)
        for t in range(0, frames.shape[0], 4):
            groups["timelapse"].append((f"frame{t}", frames[t]))
    for k in range(6):
        for kind in ("cells", "phase"):
            s = make_sample(kind, (384, 384), diameter=25 + 5 * k, with_nuclei=True,
                            seed=9000 + k)
            groups[f"synthetic_{kind}"].append((f"{kind}{k}", s.image))
    return groups


def _style_table(items: list, reference: tuple[str, ...], size: int,
                 cache: Path | None = None) -> dict[str, np.ndarray]:
    """Style of each named image (read from / written to ``cache/<ref>_<size>.npz``)."""
    f = cache / f"{'+'.join(reference)}_{size}.npz" if cache is not None else None
    out = dict(np.load(f)) if f is not None and f.is_file() else {}
    for name, img in items:
        if name not in out:
            out[name] = zoo.image_style(img, size=size, reference=reference)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, **out)
    return out


def compare(data: Path, sizes: list[int], cache: Path | None = None) -> None:
    """Print the nearest-centroid pick rates of each reference and size."""
    sets = training_lists(data)
    groups = _held_out(data, sets)
    want = {"dsb_fluorescence": "nuclei", "dsb_other": "nuclei", "usiigaci_val": "cyto",
            "timelapse": "cyto", "synthetic_cells": "cyto", "synthetic_phase": "cyto"}
    train_items = {m: list(zip(sets[m]["train_names"], sets[m]["train_images"])) for m in MODELS}
    print("groups: " + ", ".join(f"{g} {len(v)}" for g, v in groups.items()), flush=True)
    for size in sizes:
        per_ref: dict[str, dict[str, np.ndarray]] = {}
        for ref in MODELS:
            t0 = time.perf_counter()
            uniq = {}
            for m in MODELS:
                uniq.update(dict(train_items[m]))
            for g in groups.values():
                uniq.update({f"held/{n}": im for n, im in g})
            per_ref[ref] = _style_table(list(uniq.items()), (ref,), size, cache)
            print(f"size {size}, reference {ref}: {len(uniq)} styles in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        for space in ("nuclei", "cyto", "nuclei+cyto"):
            table = {n: np.concatenate([per_ref[r][n] for r in space.split("+")])
                     / np.sqrt(len(space.split("+"))) for n in per_ref["nuclei"]}
            style = table.__getitem__
            cents = {m: np.mean([style(n) for n, _ in train_items[m]], 0) for m in MODELS}
            row = []
            for g, items in groups.items():
                if not items:
                    continue
                picks = [min(MODELS, key=lambda m: np.linalg.norm(style(f"held/{n}") - cents[m]))
                         for n, _ in items]
                margins = [np.linalg.norm(style(f"held/{n}") - cents["cyto"])
                           - np.linalg.norm(style(f"held/{n}") - cents["nuclei"])
                           for n, _ in items]
                rate = np.mean([p == want[g] for p in picks])
                row.append(f"{g} {rate:.2f} (margin {np.median(margins):+.3f})")
            print(f"  size {size:4d} {space:12s}: " + "; ".join(row), flush=True)


def check(data: Path) -> None:
    """Pick rates of ``choose_model`` with the stored centroids on held-out images, read
    from their files as a user would."""
    import tifffile

    from flowseg.engine.data.samples import load_sample
    from flowseg.engine.io.datasets import read_image

    groups: dict[str, list] = {}
    for source in ("dsb2018", "usiigaci"):
        for n in (SPLITS / f"{source}_val.txt").read_text().split():
            img = np.asarray(read_image(data / source / "train" / n))
            g = "usiigaci_val -> cyto" if source == "usiigaci" else (
                f"dsb_{image_kind(img)} -> nuclei")
            groups.setdefault(g, []).append((n, img, {}))
    tl = data / "timelapse" / "usiigaci_t98g_phase.tif"
    if tl.is_file():
        groups["timelapse -> cyto"] = [(f"frame{t}", f, {}) for t, f in
                                       enumerate(tifffile.imread(tl))]
    for kind in ("cells", "phase"):
        groups[f"synthetic_{kind} (2 channels) -> cyto"] = [
            (f"{kind}{k}", make_sample(kind, (384, 384), diameter=25 + 5 * k, with_nuclei=True,
                                       seed=9000 + k).image, {"channels": (0, 1)})
            for k in range(6)]
    for name in ("nuclei", "cells"):
        img, info = load_sample(name)
        groups[f"sample {name!r} -> {'nuclei' if name == 'nuclei' else 'cyto'}"] = [
            (name, img, {"channels": info["channels"], "channel_axis": -1})]
    for g, items in groups.items():
        want = g.rsplit("-> ", 1)[1]
        t0 = time.perf_counter()
        picks = [zoo.choose_model(img, candidates=list(MODELS), **kw)[0] for _, img, kw in items]
        sec = (time.perf_counter() - t0) / len(items)
        right = sum(p == want for p in picks)
        wrong = [n for (n, _, _), p in zip(items, picks) if p != want]
        print(f"{g}: {right}/{len(items)} ({right / len(items):.0%}), {sec:.2f} s per image"
              + (f"; other picks: {wrong}" if wrong else ""), flush=True)


def write(data: Path, dry_run: bool) -> None:
    """Compute the bundled models' centroids and store them (weights unchanged)."""
    sets = training_lists(data)
    for name in MODELS:
        t0 = time.perf_counter()
        images = sets[name]["train_images"]
        style = zoo.training_style(images, channels=RECIPES[name]["channels"])
        print(f"{name}: centroid of {style['n']} training images, spread "
              f"{style['spread']:.3f}, reference {style['reference']} "
              f"{style['fingerprint']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if dry_run:
            continue
        path = ROOT / "src" / "flowseg" / "models" / f"{name}.pt"
        before = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        zoo.write_style(path, style)
        after = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        same = before.keys() == after.keys() and all(
            before[k].dtype == after[k].dtype and torch.equal(before[k], after[k])
            for k in before)
        if not same:
            raise RuntimeError(f"{path}: weights changed while storing the style")
        print(f"  stored in {path} (weights bitwise unchanged)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--compare", action="store_true", help="measure references and sizes")
    p.add_argument("--check", action="store_true",
                   help="pick rates of the stored centroids on held-out images")
    p.add_argument("--sizes", type=int, nargs="+", default=[zoo.DEFAULT_SIZE])
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--cache", type=Path, default=None,
                   help="--compare: keep the computed styles in this folder (reruns are fast)")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.check:
        check(Path(a.data))
    elif a.compare:
        compare(Path(a.data), a.sizes, a.cache)
    else:
        write(Path(a.data), a.dry_run)


if __name__ == "__main__":
    main()
