"""Run the README's main job (`flowseg segment --sample`) and draw its masks over the image.

Usage (from the repository root)::

    python docs/make_sample_overlay.py            # -> docs/images/sample_<name>_overlay.png

For each bundled sample it calls the real command line in a subprocess (exactly what a user
runs), reads the written ``*_masks.tif``, and saves a side-by-side PNG: the image with mask
outlines in colour, and the ground truth outlines, with the AP@0.5 in the file's metadata and
printed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, PngImagePlugin
from skimage.segmentation import find_boundaries

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "images"
MODEL_FOR = {"nuclei": "nuclei", "cells": "cyto"}


def _gray(img: np.ndarray) -> np.ndarray:
    x = img[..., 0].astype(np.float32)
    lo, hi = np.percentile(x, [1, 99.5])
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1)


def _overlay(gray: np.ndarray, labels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    rgb = np.repeat((gray * 255).astype(np.uint8)[..., None], 3, -1)
    b = find_boundaries(labels, mode="inner")
    rgb[b] = colour
    return rgb


def make(name: str) -> Path:
    from flowseg import average_precision  # noqa: F401  (used below)
    from flowseg.engine.data.samples import load_sample

    img, info = load_sample(name)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "flowseg.cli", "segment", "--sample", name, "--out", tmp,
               "--model", MODEL_FOR.get(name, "cyto"), "--no-progress"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
        masks = tifffile.imread(next(Path(tmp).glob("*_masks.tif")))
    ap = np.asarray(average_precision(info["labels"], masks)).ravel()
    gray = _gray(img)
    left = _overlay(gray, masks, (255, 210, 0))
    right = _overlay(gray, info["labels"], (0, 200, 255))
    pad = np.full((gray.shape[0], 8, 3), 255, np.uint8)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"sample_{name}_overlay.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Description", f"flowseg segment --sample {name}: {int(masks.max())} masks, "
                                 f"{int(info['labels'].max())} true; AP@0.5/0.75/0.9 = "
                                 f"{np.round(ap, 3).tolist()}")
    Image.fromarray(np.concatenate([left, pad, right], 1)).save(path, pnginfo=meta)
    print(f"{path.relative_to(ROOT)}: {int(masks.max())} masks ({int(info['labels'].max())} true),"
          f" AP@0.5/0.75/0.9 = {np.round(ap, 3).tolist()}")
    return path


if __name__ == "__main__":
    for n in sys.argv[1:] or ["cells", "nuclei"]:
        make(n)
