"""Training sets and recipes of the bundled models (reads ../shared/data; never copies it).

The validation split of each source is fixed: the first time it is drawn (seeded) its names
are written to ``recipes/splits/<source>_val.txt``; later runs read that file, so the split
never changes even if the shared folder grows.  Validation images are never trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flowseg.engine.data.modalities import make_modality_sample
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.io.datasets import load_folder
from flowseg.engine.training.prep import median_diameter
from flowseg.engine.training.stain import stain_gray

SPLITS = Path(__file__).resolve().parent / "splits"

#: Per-model settings.  Narrow networks and small crops keep CPU training inside a session;
#: the model cards say so.
RECIPES: dict[str, dict[str, Any]] = {
    "nuclei": {
        # Session 7, on a lent GPU (one H100): a width-32 network from random weights with the
        # Cellpose crop size (224), 2.9x the crops and 9x the pixels of the session-6 CPU
        # model (280 x 256 crops of 128 px; validation AP@0.5 0.841, docs/training.md).  The crops
        # are made by worker processes with per-batch seeds (any workers >= 1 gives the same
        # crops; ``--workers 1`` reproduces the run on a CPU, slowly).  The number of epochs
        # was set from the throughput measured on the machine so the run fits its lease.
        # The run measured 220 crops/s for the network and 526 crops/s for 12 workers, chose
        # 206 epochs, and took 24 min (156 crops/s with validation).  Stained and brightfield
        # images are drawn 3x as often.  The bundled file stores float16 weights.
        "recipe": "from_scratch", "epochs": 206, "learning_rate": 0.1, "batch_size": 8, "crop": 224,
        "width": 32, "diam_mean": 17.0, "channels": None, "n_per_epoch": 1024, "val_every": None,
        "seed": 70, "checkpoint_every": 2.0, "warmup": 10, "oversample": 3, "half": True,
        "workers": 12,
        # Session 8, on the 2-core CPU: the GPU model fine-tuned (SGD 0.02, 3 warm-up
        # epochs, 100 epochs of 256 crops of 128 px, final decay; 60 min), then averaged
        # with it in weight space (recipes/soup.py; the weight 0.5 was fixed beforehand,
        # not searched).  Validation AP@0.5: GPU model 0.844, fine-tuned 0.850, average
        # 0.853 (docs/training.md).
        "stages": [{"recipe": "finetune", "optimizer": "sgd", "learning_rate": 0.02, "warmup": 3,
                     "epochs": 100, "crop": 128, "n_per_epoch": 256, "val_every": 20, "seed": 71,
                     "workers": 0, "average": 0.5}],
    },
    "cyto": {
        "recipe": "from_scratch", "epochs": 28, "learning_rate": 0.1, "batch_size": 8, "crop": 160,
        "width": 16, "diam_mean": 30.0, "channels": (0, 1), "n_per_epoch": 256, "val_every": 10,
        "seed": 30, "checkpoint_every": 3.0,
    },
    # Generalists (issue 19): everything we may use, intensity augmentation
    # (flowseg.engine.training.intensity, default settings), zoom 0.5-2x, stain-colour jitter
    # of the RGB images at loading, varied synthetic looks (engine/data/modalities.py).
    # Sized for ~8 min of training each, both at once on one H100/H200 (gpu_generalist.py
    # measures the rate first and passes --epochs); written to runs/, never over the
    # bundled files unless --out says so.
    "nuclei_generalist": {
        # the bundled nuclei model trained on (SGD, as its stage 2) with the new augmentation
        "recipe": "finetune", "start": "nuclei", "optimizer": "sgd", "learning_rate": 0.02,
        "warmup": 3, "epochs": 60, "batch_size": 8, "crop": 224, "width": 32,
        "diam_mean": 17.0, "channels": None, "n_per_epoch": 1024, "val_every": 10,
        "seed": 90, "checkpoint_every": 1.0, "oversample": 3, "half": True, "workers": 7,
        "intensity": "default", "scale_range": (0.67, 1.5), "stain_jitter": 0.3,
        "synthetic": 64,
    },
    "cyto_generalist": {
        # width 32 from random weights: Usiigaci whole cells, all DSB nuclei kinds (as
        # Cellpose's cyto set holds nuclei), synthetic cells of six looks
        "recipe": "from_scratch", "epochs": 60, "learning_rate": 0.1, "warmup": 5,
        "batch_size": 8, "crop": 224, "width": 32, "diam_mean": 30.0, "channels": (0, 1),
        "n_per_epoch": 1024, "val_every": 10, "seed": 91, "checkpoint_every": 1.0,
        "oversample": 3, "half": True, "workers": 7, "intensity": "default",
        "scale_range": (0.5, 2.0), "stain_jitter": 0.3, "synthetic": 160,
    },
    "cyto_cpu_generalist": {
        # what the 2-core CPU can train in one session (~2 h): the bundled nuclei network
        # (width 32) as the start, its object size rebased to 30 px, on Usiigaci whole cells
        # (8x), every DSB image once and synthetic cells of six looks, at 160-px crops
        "recipe": "from_scratch", "start": "nuclei", "start_diam_mean": 30.0, "epochs": 56,
        "learning_rate": 0.05, "warmup": 3, "batch_size": 8, "crop": 160, "width": 32,
        "diam_mean": 30.0, "channels": (0, 1), "n_per_epoch": 512, "val_every": 8,
        "seed": 92, "checkpoint_every": 2.0, "oversample": 1, "cells_repeat": 8,
        "half": True, "workers": 0, "intensity": "default", "scale_range": (0.5, 2.0),
        "stain_jitter": 0.3, "synthetic": 240,
        # Session 16, stage 2 (~50 min on the CPU): the stage-1 model trained on at a lower
        # rate with Usiigaci drawn more often (12x) and new synthetic cells whose sizes reach
        # 150 px at render time (stage 1's reached 70 px: its DIC cells rendered at 100-130
        # px merged at their true diameter and split only when shown 0.6x as large)
        "stages": [{"recipe": "from_scratch", "learning_rate": 0.02, "warmup": 2,
                    "epochs": 40, "n_per_epoch": 256, "val_every": 8, "seed": 93,
                    "cells_repeat": 12, "syn_cell_diameter": (12.0, 150.0)}],
    },
    "nuclei_cpu_generalist": {
        # the 2-core CPU's version of nuclei_generalist (~70 min): the bundled nuclei
        # network trained on at SGD 0.02 with the intensity augmentation, zoom 0.5-2x, stain
        # jitter and synthetic nuclear looks, at 128-px crops (7 crops/s); validated on DSB
        "recipe": "from_scratch", "start": "nuclei", "epochs": 48, "learning_rate": 0.02,
        "warmup": 2, "batch_size": 8, "crop": 128, "width": 32, "diam_mean": 17.0,
        "channels": None, "n_per_epoch": 512, "val_every": 8, "seed": 94,
        "checkpoint_every": 2.0, "oversample": 2, "half": True, "workers": 0,
        "intensity": "default", "scale_range": (0.5, 2.0), "stain_jitter": 0.3,
        "synthetic": 160,
    },
}

#: objects of a "small" DSB image (the ablation's small-object kind): median diameter below
SMALL_DIAMETER = 12.0


def stage_configs(model: str) -> list[dict[str, Any]]:
    """The settings of each training stage of a bundled model: the recipe's base settings
    updated with the stage's own (stage 1 is the base)."""
    base = {k: v for k, v in RECIPES[model].items() if k != "stages"}
    return [base] + [{**base, **st} for st in RECIPES[model].get("stages", [])]


def stored_as_half(path: Path) -> bool:
    """Whether the model file at ``path`` stores its weights as float16."""
    import torch

    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return any(v.dtype == torch.float16 for v in sd.values())


#: validation images per source
N_VAL = {"dsb2018": 60, "usiigaci": 6}


def to_gray(img: np.ndarray) -> np.ndarray:
    """RGB(A) / gray image -> 2D float32 gray (alpha dropped; equal RGB planes -> one plane)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        rgb = img[..., :3].astype(np.float32)
        return rgb[..., 0] if np.array_equal(rgb[..., 0], rgb[..., 1]) else rgb.mean(-1)
    if img.ndim != 2:
        raise ValueError(f"expected a 2D or RGB(A) image, got shape {img.shape}")
    return img.astype(np.float32)


def image_kind(img: np.ndarray) -> str:
    """``"stained"`` (colour planes differ, e.g. H&E tissue), ``"brightfield"`` (gray with a
    bright background) or ``"fluorescence"`` (gray with a dark background)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        rgb = img[..., :3].astype(np.float32)
        span = float(rgb.max() - rgb.min()) or 1.0
        if np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 0.02 * span:
            return "stained"
        img = rgb.mean(-1)
    g = img.astype(np.float32)
    lo, hi = float(g.min()), float(g.max())
    return "brightfield" if hi > lo and np.median(g) > lo + 0.5 * (hi - lo) else "fluorescence"


def val_names(source: str, names: list[str]) -> list[str]:
    """The fixed validation names of ``source`` (drawn once with seed 2026, then read)."""
    f = SPLITS / f"{source}_val.txt"
    if f.exists():
        return [n for n in f.read_text().split() if n]
    rng = np.random.default_rng(2026)
    chosen = sorted(rng.choice(sorted(names), size=N_VAL[source], replace=False).tolist())
    SPLITS.mkdir(exist_ok=True)
    f.write_text("\n".join(chosen) + "\n")
    return chosen


def load_source(source: str, data: Path, stain_jitter: float = 0.0, copies: int = 1,
                seed: int = 0) -> dict[str, list]:
    """Read a shared folder and split it into train / val by the fixed split.

    With ``stain_jitter`` > 0 each *stained* training image is rendered to gray ``copies``
    times with random RGB weights (:func:`flowseg.engine.training.intensity.stain_gray`)
    instead of once with equal weights; validation images are always the plain mean.
    """
    folder = load_folder(data / source / "train")
    val = set(val_names(source, folder.names))
    out: dict[str, list] = {k: [] for k in ("train_images", "train_labels", "train_names",
                                            "train_kinds", "val_images", "val_labels",
                                            "val_names", "val_kinds")}
    rng = np.random.default_rng(seed)
    for img, lab, name in zip(folder.images, folder.labels, folder.names):
        part = "val" if name in val else "train"
        kind = image_kind(img)
        grays = [to_gray(img)]
        if part == "train" and kind == "stained" and stain_jitter > 0:
            grays = [stain_gray(img, rng, stain_jitter) for _ in range(max(1, copies))]
        for g in grays:
            out[f"{part}_kinds"].append(kind)
            out[f"{part}_images"].append(g)
            out[f"{part}_labels"].append(lab)
            out[f"{part}_names"].append(f"{source}/{name}")
    return out


def _two_channel(gray: np.ndarray) -> np.ndarray:
    return np.stack([gray, np.zeros_like(gray)], -1)


def synthetic_cyto(n: int, seed: int) -> tuple[list, list, list]:
    """Rendered cytoplasm + nuclear-channel images (fluorescence and phase), varied sizes."""
    rng = np.random.default_rng(seed)
    imgs, labs, names = [], [], []
    for k in range(n):
        kind = "cells" if k % 2 == 0 else "phase"
        d = float(rng.uniform(20, 45))
        s = make_sample(kind, (320, 320), diameter=d, with_nuclei=True,
                        elongation=float(rng.choice([1.0, 1.0, 1.6, 2.5])), seed=seed + k,
                        noise=float(rng.uniform(0.5, 2.0)), blur=float(rng.uniform(0.6, 1.6)))
        imgs.append(s.image)
        labs.append(s.labels)
        names.append(f"synthetic/{kind}_{seed + k}")
    return imgs, labs, names


def oversample_rare(d: dict[str, list], times: int) -> dict[str, list]:
    """Repeat the stained and brightfield training images ``times`` times in all (they are
    ~20 % of the DSB images but the hardest); validation lists are untouched."""
    if times <= 1:
        return d
    out = dict(d)
    for k in ("train_images", "train_labels", "train_names"):
        out[k] = list(d[k])
    for i, kind in enumerate(d["train_kinds"]):
        if kind != "fluorescence":
            for k in ("train_images", "train_labels", "train_names"):
                out[k] += [d[k][i]] * (times - 1)
    return out


def load_training_set(model: str, data: Path, oversample: int = 1,
                      cfg: dict[str, Any] | None = None) -> dict[str, list]:
    """Training and validation lists for a bundled model.

    ``nuclei``: DSB 2018 nuclei (gray); ``oversample`` > 1 repeats the stained and
    brightfield images that many times in all (nuclei only).  ``cyto``: Usiigaci
    phase-contrast cells (repeated 4x so that they make up about half of the draws), a
    quarter of the DSB nuclei images and 40 synthetic cytoplasm + nucleus images, all as
    2-channel (cytoplasm, nucleus or zeros); validated on the held-out Usiigaci images.
    Generalists read their data settings from ``cfg`` (a stage's settings, default the
    recipe's own).
    """
    if model.endswith("_generalist"):
        return load_generalist(model, data, cfg=cfg)
    if model == "nuclei":
        return oversample_rare(load_source("dsb2018", data), oversample)
    if model != "cyto":
        raise ValueError(f"unknown bundled model {model!r}")
    if oversample > 1:
        raise ValueError("oversample applies to the nuclei training set only")
    cells = load_source("usiigaci", data)
    nuc = load_source("dsb2018", data)
    simg, slab, sname = synthetic_cyto(40, seed=3000)
    tr_i, tr_l, tr_n = [], [], []
    for _ in range(4):
        tr_i += [_two_channel(x) for x in cells["train_images"]]
        tr_l += cells["train_labels"]
        tr_n += cells["train_names"]
    keep = slice(0, None, 4)
    tr_i += [_two_channel(x) for x in nuc["train_images"][keep]]
    tr_l += nuc["train_labels"][keep]
    tr_n += nuc["train_names"][keep]
    tr_i += simg
    tr_l += slab
    tr_n += sname
    return {
        "train_images": tr_i, "train_labels": tr_l, "train_names": tr_n,
        "val_images": [_two_channel(x) for x in cells["val_images"]],
        "val_labels": cells["val_labels"], "val_names": cells["val_names"],
    }


#: synthetic looks of the generalist recipes (make_sample kinds and modalities.MODALITIES)
SYNTHETIC_LOOKS = {
    "cyto_generalist": ("cells", "phase", "phase_halo", "dic", "brightfield", "stained"),
    "nuclei_generalist": ("nuclei", "stained", "brightfield"),
}


def synthetic_looks(model: str) -> tuple[str, ...]:
    """The synthetic looks of a generalist recipe: whole-cell looks for ``cyto*`` recipes,
    nuclear ones otherwise."""
    return SYNTHETIC_LOOKS["cyto_generalist" if model.startswith("cyto") else "nuclei_generalist"]


#: default diameter range (px, drawn log-uniformly) of the synthetic whole cells
CELL_DIAMETER = (12.0, 70.0)


def _synthetic_one(args: tuple) -> tuple[np.ndarray, np.ndarray, str]:
    look, seed, two_channel, stain_jitter, *size = args  # size: the cells' diameter range
    c_lo, c_hi = size[0] if size else CELL_DIAMETER
    rng = np.random.default_rng(seed)
    nuclear = look in ("nuclei", "stained")
    d = float(np.exp(rng.uniform(np.log(8.0 if nuclear else c_lo),
                                 np.log(30.0 if nuclear else c_hi))))
    # images hold ~9 objects across; cells larger than 70 px (rendered at the pixel size a
    # user's camera gives them: noise, blur and the rendering's edges are in pixels, so a
    # large cell shrunk to the model's size looks unlike a small one) get up to 1152 px
    side = int(np.clip(9 * d, 192, 448)) if d <= 70 else int(min(8 * d, 1152))
    elong = float(rng.choice([1.0, 1.0, 1.5, 2.5, 3.5])) if not nuclear else 1.0
    noise, blur = float(rng.uniform(0.3, 2.0)), float(rng.uniform(0.5, 1.8))
    if look in ("cells", "phase", "nuclei"):
        s = make_sample(look, (side, side), diameter=d, with_nuclei=two_channel,
                        elongation=elong, seed=seed, noise=noise, blur=blur)
    else:
        s = make_modality_sample(look, (side, side), diameter=d, elongation=elong, seed=seed,
                                 noise=noise, blur=blur)
    img = s.image
    if img.shape[-1] == 3:  # RGB stained tissue: gray with jittered stain weights
        img = stain_gray(img, rng, stain_jitter)[..., None]
    if not two_channel:
        img = img[..., 0]
    elif img.shape[-1] != 2:
        img = _two_channel(img[..., 0])
    return img.astype(np.float32), s.labels, look


def synthetic_generalist(model: str, n: int, seed: int, stain_jitter: float = 0.3,
                         cell_diameter: tuple[float, float] = CELL_DIAMETER
                         ) -> tuple[list, list, list]:
    """``n`` synthetic images of the model's looks (in turn), varied diameters (8-30 px
    nuclei, ``cell_diameter`` px cells), elongation and noise; made in parallel processes.

    Returns images (2-channel for ``cyto_generalist``, gray for ``nuclei_generalist``),
    labels and looks.
    """
    from concurrent.futures import ProcessPoolExecutor

    looks = synthetic_looks(model)
    cd = (float(cell_diameter[0]), float(cell_diameter[1]))
    jobs = [(looks[k % len(looks)], seed + k, model.startswith("cyto"), stain_jitter, cd)
            for k in range(n)]
    if n >= 8:
        with ProcessPoolExecutor() as ex:
            res = list(ex.map(_synthetic_one, jobs, chunksize=4))
    else:
        res = [_synthetic_one(j) for j in jobs]
    return [r[0] for r in res], [r[1] for r in res], [r[2] for r in res]


def fine_kind(source: str, kind: str, labels: np.ndarray) -> str:
    """The generalists' image kind: ``dsb/small`` (median object diameter below
    :data:`SMALL_DIAMETER`), ``dsb/<fluorescence|brightfield|stained>``, ``usiigaci/phase``
    or ``synthetic/<look>``."""
    if source == "dsb2018":
        return "dsb/small" if median_diameter(labels) < SMALL_DIAMETER else f"dsb/{kind}"
    if source == "usiigaci":
        return "usiigaci/phase"
    return f"{source}/{kind}"


def load_generalist(model: str, data: Path, synthetic: int | None = None,
                    cfg: dict[str, Any] | None = None) -> dict[str, list]:
    """Training and validation lists of a generalist recipe (``*_generalist``).

    ``nuclei_generalist``: all DSB training images (brightfield, stained and small-object
    images drawn ``oversample`` times; stained ones as that many stain-jittered renderings)
    + synthetic nuclei looks; validated on the DSB split.  ``cyto_generalist``: the same DSB
    images and Usiigaci cells (4x), 2-channel (gray, zeros), + synthetic cells of six looks;
    validated on the Usiigaci split.  Every list has ``*_kinds`` (:func:`fine_kind`).
    ``cfg`` (default the recipe's settings) may be a later stage's: its ``oversample``,
    ``cells_repeat``, ``synthetic``, ``syn_cell_diameter`` and ``stain_jitter`` apply.
    """
    cfg = RECIPES[model] if cfg is None else cfg
    times = int(cfg.get("oversample", 1))
    jitter = float(cfg.get("stain_jitter", 0.0))
    nuc = load_source("dsb2018", data, stain_jitter=jitter, copies=times, seed=cfg["seed"])
    cyto = model.startswith("cyto")
    conv = _two_channel if cyto else (lambda g: g)
    out: dict[str, list] = {k: [] for k in ("train_images", "train_labels", "train_names",
                                            "train_kinds", "val_images", "val_labels",
                                            "val_names", "val_kinds")}

    def add(part: str, img, lab, name: str, kind: str, repeat: int = 1) -> None:
        for _ in range(repeat):
            out[f"{part}_images"].append(img)
            out[f"{part}_labels"].append(lab)
            out[f"{part}_names"].append(name)
            out[f"{part}_kinds"].append(kind)

    for img, lab, name, kind in zip(nuc["train_images"], nuc["train_labels"],
                                    nuc["train_names"], nuc["train_kinds"]):
        fk = fine_kind("dsb2018", kind, lab)
        # stained images already come as `times` jittered renderings
        rep = times if fk != "dsb/fluorescence" and kind != "stained" else 1
        add("train", conv(img), lab, name, fk, rep)
    if cyto:
        cells = load_source("usiigaci", data)
        for img, lab, name in zip(cells["train_images"], cells["train_labels"],
                                  cells["train_names"]):
            add("train", _two_channel(img), lab, name, "usiigaci/phase",
                int(cfg.get("cells_repeat", 4)))
        for img, lab, name in zip(cells["val_images"], cells["val_labels"], cells["val_names"]):
            add("val", _two_channel(img), lab, name, "usiigaci/phase")
    else:
        for img, lab, name, kind in zip(nuc["val_images"], nuc["val_labels"],
                                        nuc["val_names"], nuc["val_kinds"]):
            add("val", img, lab, name, fine_kind("dsb2018", kind, lab))
    n_syn = int(cfg.get("synthetic", 0) if synthetic is None else synthetic)
    if n_syn:
        simg, slab, slook = synthetic_generalist(
            model, n_syn, seed=1000 * cfg["seed"], stain_jitter=jitter,
            cell_diameter=tuple(cfg.get("syn_cell_diameter", CELL_DIAMETER)))
        for k, (img, lab, look) in enumerate(zip(simg, slab, slook)):
            add("train", img, lab, f"synthetic/{look}_{k}", f"synthetic/{look}")
    return out
