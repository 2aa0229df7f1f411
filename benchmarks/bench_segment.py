"""Benchmark ``Model.segment`` against Cellpose 3.1 ``CellposeModel.eval`` with the same weights.

Cases (as in the project's reference timings): a 512x512 2-channel image at diameter 30 and a
32x128x128 2-channel volume with full 3D, at diameter 30.  Both engines get the same weights
(exported to a Cellpose-format state dict for the reference), the same image, a warm-up run,
then ``--runs`` timed runs; the best time of each is compared.  The masks are compared with
average precision (reference masks as ground truth), the network outputs by their largest
difference (2D: our unit flows x 5 vs Cellpose ``dP``; 3D: Cellpose sums the slice passes,
we average them, so ours are scaled by 2 (flows) and 3 (logit) first).

3D masks are compared on ``--volumes`` volumes (seeds 0, 1, ...; the first is the timed one)
because one 32x128x128 volume holds only ~38 objects: a single object on a knife edge (a
fragment of a few voxels near the seed threshold, or one split/merge decision) moves its AP
by 0.026.  Each volume's AP and the pooled AP (TP / (TP + FP + FN) summed over volumes) are
printed, for our default 3D dynamics (``sampling="exact"``) and for the opt-in
``sampling="cellpose3"``, which samples the flows the way Cellpose 3.1 does.

Weights (``--weights``): ``auto`` uses the bundled ``cyto`` model when it exists, else seeded
random standard-width (32) weights (masks from random weights are meaningless, so only the
outputs and timings mean something then); or a path to a flowseg / Cellpose model file or a
flowseg training checkpoint; or ``random``.

Usage::

    python benchmarks/bench_segment.py --peer "$(bash /work/shared/tools/peer_env.sh)"

``--real``: the default path on real ~1 MP images instead (see :func:`real_images`): for each
bundled model and image, ``Model.segment(image)`` (diameter estimated) next to
``Model.segment(image, diameter=<that estimate>)``, interleaved, best of ``--runs``; the
estimate, the crops' median, whether the estimate's own pass was kept, the estimate as made
before crops (:func:`whole_refinement`, untimed) and the labels' median diameter, AP@0.5 of
both against the image's labels; with ``--peer`` also Cellpose 3.1's
``models.Cellpose.eval(diameter=None)`` path (``SizeModel.eval`` then ``eval``) with the
same weights and our size model::

    python benchmarks/bench_segment.py --real --runs 2 [--peer PEER_PYTHON] [--json out.json]

``--device cuda`` (or ``cuda:N``, ``mps``): GPU mode, both cases and ``--real``; our engine
runs on that device (timings end when the masks are back in host memory) and with CUDA the
reference runs with ``gpu=True``.  Not yet measured here: no GPU has been lent to this
project's sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import flowseg.engine  # noqa: F401  (sets the OpenMP wait policy before torch loads)
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.flows.metrics import average_precision, match_stats
from flowseg.engine.inference.base import available_models
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.size import mask_diameters

HERE = Path(__file__).resolve().parent


def load_weights(spec: str, device: str = "cpu") -> tuple[Model, str]:
    if spec == "auto":
        spec = "cyto" if "cyto" in available_models() else "random"
    if spec == "random":
        return (Model.new(width=32, seed=0, device=device),
                "seeded random standard-width (32) weights")
    p = Path(spec)
    if p.is_file():
        obj = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and obj.get("format") == "flowseg-train-checkpoint":
            return (Model.from_state_dict(obj["net"], obj.get("meta"), device=device),
                    f"training checkpoint {p} (epoch {obj.get('epoch')})")
    m = Model.load(spec, device=device)
    return m, f"model {spec}"


def embed_width(model: Model, width: int = 32) -> Model:
    """The same function as ``model`` computed by a wider (e.g. standard, 32) network.

    Cellpose 3 only runs networks of width 32 (its tiling code assumes 256 style features),
    so a narrower trained model is embedded: its weights fill the first channels of every
    layer and all extra channels are exactly zero (zero weights and biases, BatchNorm with
    zero scale), so outputs and style (padded with zeros) are unchanged while the compute is
    that of the standard network.
    """
    if model.net.nbase[1] == width:
        return model
    big = Model.new(width=width, nchan=model.nchan, diam_mean=model.diam_mean,
                    device=model.device)
    src = model.net.state_dict()
    out = {}
    for k, ref in big.net.state_dict().items():
        v = src[k]
        t = torch.ones_like(ref) if k.endswith("running_var") else torch.zeros_like(ref)
        t[tuple(slice(0, n) for n in v.shape)] = v
        out[k] = t
    big.net.load_state_dict(out)
    big.meta.update({k: model.meta[k] for k in ("diam_mean", "normalize") if k in model.meta})
    return big


def run_ours(model: Model, img: np.ndarray, do_3d: bool, runs: int, diameter: float,
             warmup: bool = True, sampling: str = "exact"):
    kw = {"channels": (0, 1), "channel_axis": -1, "diameter": diameter}
    if do_3d:
        kw.update(do_3d=True, z_axis=0, sampling=sampling)
    if warmup:
        model.segment(img, **kw)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        seg = model.segment(img, **kw)
        times.append(time.perf_counter() - t0)
    return seg, times


def run_peer(py: str, weights: Path, img_path: Path, do_3d: bool, runs: int, diameter: float,
             warmup: bool = True, gpu: bool = False):
    out = img_path.with_suffix(".peer.npz")
    cmd = [py, str(HERE / "peer_segment.py"), str(weights), str(img_path), str(out),
           "--runs", str(runs), "--diameter", str(diameter)] + (["--3d"] if do_3d else [])
    cmd += [] if warmup else ["--no-warmup"]
    cmd += ["--gpu"] if gpu else []
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"reference run failed:\n{r.stderr[-3000:]}")
    info = json.loads(r.stdout.strip().splitlines()[-1])
    return dict(np.load(out)), info


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", default=os.environ.get("FLOWSEG_PEER_PYTHON"),
                    help="reference python (default: $FLOWSEG_PEER_PYTHON); without it only "
                         "our timings are printed")
    ap.add_argument("--weights", default="auto")
    ap.add_argument("--case", choices=("2d", "3d", "both"), default="both")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--diameter", type=float, default=30.0)
    ap.add_argument("--sampling", choices=("exact", "cellpose3"), default="exact",
                    help="3D dynamics of our timed runs (Model.segment(sampling=...))")
    ap.add_argument("--volumes", type=int, default=6,
                    help="3D volumes whose masks are compared (the first is timed)")
    ap.add_argument("--real", action="store_true",
                    help="default (estimated diameter) vs given diameter on real images")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "FLOWSEG_DATA", HERE.parents[1] / "shared" / "data")), help="shared data folder")
    ap.add_argument("--models", nargs="+", default=["nuclei", "cyto"])
    ap.add_argument("--json", type=Path, help="--real: also write the rows here")
    ap.add_argument("--device", default="cpu",
                    help="our engine's device: cpu (default), cuda, cuda:N or mps; with "
                         "cuda the reference also runs on the GPU (Cellpose gpu=True)")
    a = ap.parse_args()
    if a.real:
        return run_real(a)
    model, desc = load_weights(a.weights, a.device)
    if a.peer and model.net.nbase[1] != 32:
        small = model
        model = embed_width(model, 32)
        x = torch.randn(2, model.nchan, 64, 64, device=model.device)
        with torch.inference_mode():
            y0, s0 = small.net.eval()(x)
            y1, s1 = model.net.eval()(x)
        desc += (f", width {small.net.nbase[1]} embedded exactly in a width-32 network "
                 f"(max output difference {float((y0 - y1).abs().max()):.1e})")
    print(f"weights: {desc}; nbase {model.net.nbase}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    cases = []
    if a.case in ("2d", "both"):
        cases.append(("2D 512x512", make_sample("cells", (512, 512), diameter=30,
                                                with_nuclei=True, seed=0).image, False))
    if a.case in ("3d", "both"):
        cases.append(("3D 32x128x128", make_sample("cells", (32, 128, 128), diameter=30,
                                                   with_nuclei=True, seed=0).image, True))
    with tempfile.TemporaryDirectory() as td:
        wpath = model.export_cellpose(Path(td) / "weights_cp")
        for name, img, do_3d in cases:
            seg, t_ours = run_ours(model, img, do_3d, a.runs, a.diameter, sampling=a.sampling)
            label = f"{name} (sampling={a.sampling})" if do_3d else name
            runs = ", ".join(f"{t:.2f}" for t in t_ours)
            line = f"{label}: ours {min(t_ours):.2f} s (runs {runs})"
            line += f", {seg.n_objects} objects"
            if a.peer:
                ipath = Path(td) / f"img_{int(do_3d)}.npy"
                np.save(ipath, img)
                ref, info = run_peer(a.peer, wpath, ipath, do_3d, a.runs, a.diameter,
                                     gpu=model.device.type == "cuda")
                t_ref = info["times"]
                ap = average_precision(ref["masks"].astype(np.int32), seg.masks,
                                       thresholds=(0.5, 0.9))
                k_f, k_p = (2.0, 3.0) if do_3d else (1.0, 1.0)
                dflow = float(np.abs(seg.flows * 5.0 * k_f - ref["dP"]).max())
                dprob = float(np.abs(seg.cellprob * k_p - ref["cellprob"]).max())
                line += (f" | Cellpose 3.1 {min(t_ref):.2f} s (runs "
                         f"{', '.join(f'{t:.2f}' for t in t_ref)}, mkldnn={info['mkldnn']}),"
                         f" {len(np.unique(ref['masks'])) - 1} objects"
                         f" | speed-up x{min(t_ref) / min(t_ours):.2f}"
                         f" | AP@0.5 {ap[0]:.3f} AP@0.9 {ap[1]:.3f}"
                         f" | max |d flow| {dflow:.2e}, max |d logit| {dprob:.2e}")
            print(line, flush=True)
            if do_3d and a.peer and a.volumes > 1:
                agreement_3d(model, wpath, Path(td), a, seg, ref["masks"])
    return 0


def agreement_3d(model: Model, wpath: Path, td: Path, a, seg0, ref0) -> None:
    """Masks of both engines on volumes with seeds 0..volumes-1: AP@0.5/0.9 each and pooled,
    for our default 3D dynamics and for ``sampling="cellpose3"``."""
    segs, refs = [seg0], [ref0.astype(np.int32)]
    for seed in range(1, a.volumes):
        img = make_sample("cells", (32, 128, 128), diameter=30, with_nuclei=True, seed=seed).image
        seg, _ = run_ours(model, img, True, 1, a.diameter, warmup=False, sampling=a.sampling)
        ipath = td / f"vol_{seed}.npy"
        np.save(ipath, img)
        ref, _ = run_peer(a.peer, wpath, ipath, True, 1, a.diameter, warmup=False)
        segs.append(seg)
        refs.append(ref["masks"].astype(np.int32))
    for sampling in ("exact", "cellpose3"):
        ours = [s.masks if s.params.get("sampling", "exact") == sampling
                else s.recompute(sampling=sampling).masks for s in segs]
        st = match_stats(refs, ours, thresholds=(0.5, 0.9))
        tp, fp, fn = st.tp.sum(0), st.fp.sum(0), st.fn.sum(0)
        pooled = tp / np.maximum(tp + fp + fn, 1)
        per = ", ".join(f"{x[0]:.3f}/{x[1]:.3f}" for x in np.asarray(st.ap))
        print(f"3D masks (sampling={sampling!r}), ours vs Cellpose 3.1 on {a.volumes} volumes "
              f"32x128x128 (seeds 0-{a.volumes - 1}, {int(st.n_true.sum())} reference "
              f"objects): AP@0.5/0.9 per volume {per}; pooled AP@0.5 {pooled[0]:.3f} "
              f"AP@0.9 {pooled[1]:.3f}", flush=True)


#: real ~1 MP images per bundled model (names in ``--data``): the Data Science Bowl images of
#: about 1 MP (brightfield 1024 x 1024, one fluorescence 1040 x 1388) for ``nuclei``, the six
#: held-out Usiigaci phase-contrast images (1022 x 1024) for ``cyto``
REAL = {
    "nuclei": [f"dsb2018/train/{n}.png" for n in (
        "08275a5b1c2dfcd7", "1a11552569160f0b", "4217e25defac94ff", "8d05fb18ee0cda10",
        "c901794d1a421d52")],
    "cyto": [f"usiigaci/train/set{k:02d}.tif" for k in (1, 8, 16, 21, 28, 34)],
}


def load_labelled(data: Path, rel: str) -> tuple[np.ndarray, np.ndarray]:
    """2D gray float32 image (RGB(A): the mean of R, G, B, what ``channels=None`` uses) and
    int32 labels (``<stem>_masks.png``) of ``data / rel``."""
    import imageio.v3 as iio
    import tifffile

    path = data / rel
    img = tifffile.imread(path) if path.suffix == ".tif" else iio.imread(path)
    img = np.asarray(img, np.float32)
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    lab = iio.imread(path.with_name(path.stem + "_masks.png")).astype(np.int32)
    return img, lab


def real_images(data: Path, name: str):
    """``(file name, 2D gray float32 image, int32 labels)`` of :data:`REAL` ``[name]``."""
    for rel in REAL[name]:
        yield (Path(rel).name, *load_labelled(data, rel))


def size_model_for_cellpose(model: Model, path: Path, width: int = 32) -> Path:
    """Our size model as a Cellpose ``SizeModel`` file (style padded with zeros to ``8 * width``,
    ``exp(A . (s - smean) + log(diam_mean) + ymean)`` = ``exp(A . s + b)``)."""
    sm = model.size_model
    A = np.zeros(8 * width, np.float64)
    A[:len(sm["A"])] = sm["A"]
    params = {"A": A, "smean": np.zeros_like(A), "diam_mean": model.diam_mean,
              "ymean": float(sm["b"]) - float(np.log(model.diam_mean))}
    np.save(path, params, allow_pickle=True)
    return path


def whole_refinement(model: Model, img: np.ndarray) -> float:
    """The estimate as made before crops (untimed, for comparison): the size model on
    ``STYLE_TILES`` tiles, then the median mask diameter of one whole-image pass there."""
    from flowseg.engine.inference.prepare import prepare_input
    from flowseg.engine.inference.size import min_estimate, refine_at, regression_diameter

    x, _ = prepare_input(model, img)
    d = refine_at(model, x, regression_diameter(model, x, budget=False)).diameter
    return max(min_estimate(model), d)


def run_real(a) -> int:
    """``--real``: default path vs given diameter (and Cellpose 3.1's size path) per image."""
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    with tempfile.TemporaryDirectory() as td:
        for name in a.models:
            model = Model.load(name, device=a.device)
            warm = np.random.default_rng(0).random((256, 256)).astype(np.float32)
            model.segment(warm, diameter=model.diam_mean)  # numba compilation, net copy
            peer = None
            if a.peer:
                big = embed_width(model, 32)
                peer = (big.export_cellpose(Path(td) / f"{name}_cp"),
                        size_model_for_cellpose(model, Path(td) / f"{name}_size.npy"))
            for fname, img, lab in real_images(a.data, name):
                t_def, t_giv = [], []
                for _ in range(a.runs):  # interleaved: both see the same machine load
                    t0 = time.perf_counter()
                    seg = model.segment(img)
                    t_def.append(time.perf_counter() - t0)
                    est = float(seg.params.get("diameter_estimate", seg.diameter))
                    t0 = time.perf_counter()
                    giv = model.segment(img, diameter=est)
                    t_giv.append(time.perf_counter() - t0)
                ap_def, ap_giv = (float(average_precision(lab, s.masks, thresholds=(0.5,))[0])
                                  for s in (seg, giv))
                old = whole_refinement(model, img)
                row = {"model": name, "image": fname, "shape": list(img.shape),
                       "estimate": est, "segmented_at": float(seg.diameter),
                       "size_model": seg.params.get("diameter_size_model"),
                       "kept": seg.params.get("estimate_pass_kept"),
                       "crops": seg.params.get("diameter_crops"), "whole_refinement": old,
                       "labels": float(mask_diameters(lab)[0]),
                       "t_default": min(t_def), "t_given": min(t_giv),
                       "ap_default": ap_def, "ap_given": ap_giv}
                line = (f"{name} {fname} {img.shape[0]}x{img.shape[1]}: estimate "
                        f"{est:.1f} px (size model {row['size_model'] or float('nan'):.1f}, "
                        f"crops {row['crops'] or float('nan'):.1f}, pass kept: {row['kept']}; "
                        f"whole-image refinement {old:.1f} ({100 * (est / old - 1):+.1f} %), "
                        f"labels {row['labels']:.1f}) | default {row['t_default']:.2f} s, given "
                        f"{row['t_given']:.2f} s, x{row['t_default'] / row['t_given']:.2f} | "
                        f"AP@0.5 {ap_def:.3f} / {ap_giv:.3f}")
                if peer is not None:
                    ipath = Path(td) / "real.npy"
                    np.save(ipath, img)
                    r = subprocess.run(
                        [a.peer, str(HERE / "peer_segment.py"), str(peer[0]), str(ipath),
                         str(ipath.with_suffix(".peer.npz")), "--runs", str(a.runs),
                         "--size", str(peer[1]), "--channels", "0", "0"]
                        + (["--gpu"] if model.device.type == "cuda" else []),
                        capture_output=True, text=True)
                    if r.returncode != 0:
                        raise RuntimeError(f"reference run failed:\n{r.stderr[-3000:]}")
                    info = json.loads(r.stdout.strip().splitlines()[-1])
                    ref = np.load(ipath.with_suffix(".peer.npz"))["masks"].astype(np.int32)
                    row.update(t_cellpose=min(info["times"]), d_cellpose=info["diameter"],
                               ap_cellpose=float(average_precision(lab, ref,
                                                                   thresholds=(0.5,))[0]))
                    line += (f" | Cellpose 3.1 diameter=None {row['t_cellpose']:.2f} s "
                             f"(estimate {row['d_cellpose']:.1f} px, AP@0.5 "
                             f"{row['ap_cellpose']:.3f}), speed-up "
                             f"x{row['t_cellpose'] / row['t_default']:.2f}")
                print(line, flush=True)
                rows.append(row)
    for name in a.models:
        r = [x for x in rows if x["model"] == name]
        tot_d, tot_g = sum(x["t_default"] for x in r), sum(x["t_given"] for x in r)
        dev = [abs(x["estimate"] / x["whole_refinement"] - 1) for x in r]
        lab = [abs(x["estimate"] / x["labels"] - 1) for x in r]
        old = [abs(x["whole_refinement"] / x["labels"] - 1) for x in r]
        print(f"{name}: {len(r)} images, default {tot_d:.1f} s / given {tot_g:.1f} s = "
              f"x{tot_d / tot_g:.2f}; mean AP@0.5 {np.mean([x['ap_default'] for x in r]):.3f}"
              f" / {np.mean([x['ap_given'] for x in r]):.3f}; estimate within 5 % of the "
              f"whole-image refinement on {sum(d <= 0.05 for d in dev)}/{len(r)}; median "
              f"error vs the labels' median diameter {100 * np.median(lab):.1f} % (whole-image "
              f"refinement {100 * np.median(old):.1f} %)", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
