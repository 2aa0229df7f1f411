"""Write a bundled model's card from its training record and its evaluation.

Usage (from the repository root, after ``build_model.py`` and ``evaluate_model.py``)::

    python recipes/write_card.py nuclei      # -> src/flowseg/models/nuclei.md

Every number in the card comes from the model file's training record (``meta["training"]``)
and ``runs/<model>_eval.json``; nothing is typed by hand.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import flowseg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from data import N_VAL, RECIPES, stage_configs, stored_as_half  # noqa: E402

DATA = {
    "nuclei": (
        ("Nuclei from the 2018 Data Science Bowl (BBBC038v1, stage 1 train, community-corrected "
         "masks): fluorescence, brightfield and stained tissue, used as one gray channel. "
         "Licence CC0 1.0. Cite: Caicedo et al., Nature Methods 16, 1247-1253 (2019)."),
        ["dsb2018"],
    ),
    "cyto": (
        ("Whole cells in phase-contrast microscopy (Usiigaci: NIH/3T3 and T98G, 10x, "
         "hand-annotated; MIT licence, (c) 2018 Okinawa Institute of Science and Technology; "
         "cite Tsai et al., SoftwareX 9, 230-237 (2019)), repeated 4x per epoch; one in four of "
         "the Data Science Bowl nuclei images (CC0 1.0; Caicedo et al., Nature Methods 16, "
         "1247-1253 (2019)); 40 images rendered by `flowseg.engine.data.synthetic` (fluorescent "
         "and phase-contrast-like cytoplasm with a nuclear channel). Input: cytoplasm + "
         "optional nuclear channel (zeros if absent)."),
        ["usiigaci"],
    ),
}

USE = {
    "nuclei": "Nuclear stains (DAPI/Hoechst-like fluorescence), brightfield or H&E nuclei; "
              "gray input; objects ~17 px across after resizing (the size model estimates it).",
    "cyto": "Whole cells (cytoplasm) in phase contrast or fluorescence, optionally with a "
            "nuclear channel; objects ~30 px across after resizing.",
}


def _stage_record(name: str, k: int, n: int, last: dict) -> dict:
    """The training record of stage ``k`` (1-based) of ``n``: the bundled file's for the last."""
    if k == n:
        return last
    f = ROOT / "runs" / f"{name}_stage{k}.pt"
    if not f.exists():
        return {}
    import flowseg

    return flowseg.Model.load(f).meta.get("training", {})


def _stages_text(name: str, recs: list[dict]) -> str:
    """One paragraph per training stage, numbers from the stages' training records."""
    out = []
    total = 0.0
    for k, (st, rec) in enumerate(zip(stage_configs(name), recs), 1):
        total += rec.get("seconds", 0.0)
        c = rec.get("config", {})
        hist = ", ".join(f"{e}: {a}"
                         for e, a in zip(rec.get("val_epoch", []), rec.get("val_ap", [])))
        start = "from random weights" if k == 1 else f"from the stage-{k - 1} model"
        if st.get("widen"):
            start += (f" grown to base width {st['width']}, each channel copied "
                      "(`recipes/widen.py`)")
        where = _device_text(rec)
        out.append(
            f"- Stage {k} ({start}, on {where}): `{st['recipe']}` recipe, "
            f"{st['crop']}x{st['crop']} crops, {st['n_per_epoch']} crops per epoch, "
            f"{c.get('optimizer', st.get('optimizer', 'sgd')).upper()} "
            f"momentum {c.get('momentum', 0.9)}, learning rate {st['learning_rate']} "
            f"({c.get('warmup', '?')} warm-up epochs, final decay), weight decay "
            f"{c.get('weight_decay', '?')}, {st['epochs']} epochs "
            f"(done: {rec.get('epochs_done', '?')}), "
            f"{rec.get('seconds', 0) / 60:.0f} min"
            + (f", stained and brightfield images drawn {st['oversample']}x as often"
               if st.get("oversample", 1) > 1 else "")
            + f"; validation AP@0.5 by epoch: {hist or 'n/a'}; "
            f"kept epoch {rec.get('best_epoch', '?')}"
            + (f"; then averaged in weight space with the stage-{k - 1} model (weight "
               f"{st['average']} on this stage's, `recipes/soup.py`) and the size model "
               "fitted anew" if st.get("average") else "") + ".")
    out.append(f"- Total training time {total / 60:.0f} min.")
    return "\n".join(out)


def _width_text(name: str, model: flowseg.Model) -> str:
    """Why the network has its width."""
    width = int(model.meta["nbase"][1])
    stages = stage_configs(name)
    if width < 32:
        return (f"base width {width}: half the standard 32, chosen so the model trains on a "
                "2-core CPU inside one session and runs ~4x faster on laptops")
    grown = [k for k, st in enumerate(stages, 1) if st.get("widen")]
    if grown:
        from widen import copy_similarity

        sim = copy_similarity(model, factor=width // int(stages[0]["width"]))
        return (f"base width {width}, the standard; stages 1-{grown[0] - 1} trained a width-"
                f"{stages[0]['width']} network on the CPU, which stage {grown[0]} grew to "
                f"width {width} without changing its outputs (Net2Net) and trained on.  The "
                f"copied channels stayed nearly copies (mean cosine similarity of their "
                f"weights {sim:.3f}), so the network has about the capacity of width "
                f"{stages[0]['width']}; see docs/training.md")
    return f"base width {width}, the standard"


def _on_gpu(rec: dict) -> bool:
    return str(rec.get("device", "cpu")).startswith("cuda")


def _device_text(rec: dict) -> str:
    """Where one stage trained, from its training record (``device``, written by
    :func:`flowseg.train`; records without it are from the 2-core CPU)."""
    if _on_gpu(rec):
        return f"one {str(rec['device']).split(':', 1)[1].strip()} GPU"
    return "the 2-core CPU"


def _hardware_text(recs: list[dict], cfg: dict) -> str:
    """Where the model's stages trained (``recs``: their training records)."""
    parts = []
    gpu = next((r for r in recs if _on_gpu(r)), None)
    if gpu is not None:
        parts.append(f"{_device_text(gpu)}, lent to the project for one session (16 CPU "
                     f"cores; {cfg.get('workers', 0)} worker processes made the crops)")
    if any(not _on_gpu(r) for r in recs):
        parts.append(f"the 2-core {platform.machine()} CPU (1 or 2 training threads, no GPU; "
                     "other jobs shared the cores at times)")
    return "Hardware: " + "; ".join(parts) + "."


def _size_model_text(name: str, meta: dict) -> str:
    """The card section of a size model refitted by ``recipes/refit_size.py`` (from its
    ``fit`` / ``eval`` records in ``meta["size_model"]``); empty for a training-time fit."""
    sm = meta.get("size_model") or {}
    fit, ev = sm.get("fit"), sm.get("eval")
    if not fit or not ev:
        return ""
    rows = [("validation", "val", "20 %"), ("zoomed copies 0.33-3x", "zoom", "25 %"),
            ("zoomed copies, labels 8-150 px", "zoom_8_150", "25 %")]
    table = "\n".join(
        f"| {label} | {ev[k]['n']} | {ev[k]['median_abs_log']:.3f} | {tol}: "
        f"**{100 * ev[k]['within']:.0f} %** | {100 * ev[k]['within_2tiles']:.0f} % |"
        for label, k, tol in rows if k in ev)
    lo, hi = fit["diameters"]
    return f"""
## Size model (refitted over a wide range of zooms)
`meta["size_model"]` (the style -> diameter regression; network weights unchanged) was refitted
by `python recipes/refit_size.py {name} --write` on the {fit.get('data', 'training split')}:
{fit.get('views_per_image')} views of each of {fit.get('n_images')} images zoomed so their
objects measure {lo:g}-{hi:g} px (at most {fit.get('max_zoom')}x enlarged)
{'plus each image at its own scale, ' if fit.get('native_view') else ''}styles read from
{fit.get('tiles')} encoder tiles, ridge penalty {sm.get('ridge')}. Scored by `python
benchmarks/bench_size_model.py {name}` (the size model alone, against the labels' median
diameter):

| images | n | median abs log ratio | within | 2-tile read within |
|---|---|---|---|---|
{table}
"""


def main(name: str) -> Path:
    import flowseg

    model = flowseg.Model.load(name)
    meta = model.meta
    tr = meta.get("training", {})
    n_stages = len(stage_configs(name))
    recs = [_stage_record(name, k, n_stages, tr) for k in range(1, n_stages + 1)]
    ev = json.loads((ROOT / "runs" / f"{name}_eval.json").read_text())
    cfg = RECIPES[name]
    desc, sources = DATA[name]
    splits = "\n".join(
        f"- `{s}`: {N_VAL[s]} images, listed in `recipes/splits/{s}_val.txt`" for s in sources)
    ap = ev["ap_true_diameter"]
    ape = ev.get("ap_estimated_diameter")
    size_line = (f"- Size model: estimated diameter within 20 % of the true median diameter on "
                 f"**{100 * ev['size_within_20pct']:.0f} %** of validation images (median "
                 f"relative error {100 * ev['size_median_rel_error']:.1f} %); AP with the "
                 f"estimated diameter: {ape['0.5']:.3f} / {ape['0.75']:.3f} / {ape['0.9']:.3f}."
                 if ape else "- Size model: not fitted.")
    stages_text = _stages_text(name, recs)
    kinds = ev.get("ap_by_kind")
    kind_line = ("" if not kinds else
                 "- By image kind, AP@0.5 at the true diameter: " + ", ".join(
                     f"{k} {v['ap'][0]:.3f} ({v['n']} images)" for k, v in kinds.items())
                 + "\n")
    apa = ev.get("ap_true_diameter_augment")
    aug_line = ("" if not apa else
                f"- With flip test-time augmentation (`augment=True`): {apa['0.5']:.3f} / "
                f"{apa['0.75']:.3f} / {apa['0.9']:.3f}\n")
    nparams = sum(p.numel() for p in model.net.parameters())
    mfile = ROOT / "src" / "flowseg" / "models" / f"{name}.pt"
    size_mb = mfile.stat().st_size / 1e6
    half_text = (" (weights stored as float16 and computed in float32; the validation AP of "
                 "the float32 weights is the same)" if stored_as_half(mfile) else "")
    text = f"""# Model card: `{name}`

Bundled with napari-flowseg; load with `flowseg.Model.load("{name}")`. Trained by the
napari-flowseg developers with `flowseg.train`; rebuild it with
`python recipes/build_model.py {name}` (fixed seed {cfg['seed']}; data read from
`../shared/data`, never shipped).

## Intended use
{USE[name]}

## Architecture
Cellpose-style residual U-Net (`FlowNet`), channels {meta.get('nbase')} ({_width_text(name, model)}), {nparams / 1e6:.2f} M parameters, {size_mb:.1f} MB file{half_text}.
Mean diameter `diam_mean` = {meta.get('diam_mean')} px. Percentile normalisation
{meta.get('normalize', [1, 99])}.

## Training data
{desc}

Validation split held out from the shared folder (never trained on):
{splits}

## Recipe
{stages_text}

Every stage: batch {cfg['batch_size']}; random rotation (flow vectors rotated), flips, scale 0.75-1.25 around the
common diameter. Loss: MSE on 5x flows / 2 + BCE on cell probability. The kept model of a
stage is its epoch with the best validation AP@0.5 (so the validation split chose it).
{_hardware_text(recs, cfg)} Logs: `recipes/logs/{name}.log`.

## Validation results ({ev['n_images']} held-out images, mean over images)
- AP@0.5 / 0.75 / 0.9 at the true median diameter: **{ap['0.5']:.3f}** / {ap['0.75']:.3f} /
  {ap['0.9']:.3f}
{aug_line}{kind_line}{size_line}
{_size_model_text(name, meta)}
Produced by `python recipes/evaluate_model.py {name}{' --augment' if apa else ''}` (see `runs/{name}_eval.json` when
rebuilt); AP = TP / (TP + FP + FN) with IoU matching. The kept epoch was chosen by AP@0.5 on this
same split, so these numbers are slightly optimistic; the project is also judged on
images of these sources that we do not have.

## Limitations
Trained on a small {'GPU' if any(_on_gpu(r) for r in recs) else 'CPU'} budget{' with a narrow network' if int(meta['nbase'][1]) < 32 else ''}; expect lower accuracy than the
standard Cellpose models on unusual modalities. Fine-tune on a few corrected images
(`flowseg train --model {name} --recipe finetune ...` or the napari Train panel).
"""
    out = ROOT / "src" / "flowseg" / "models" / f"{name}.md"
    out.write_text(text)
    print(out)
    return out


if __name__ == "__main__":
    for n in sys.argv[1:] or ["nuclei", "cyto"]:
        main(n)
