"""``flowseg segment``: argument definitions and the work behind them.

:mod:`flowseg.cli` calls :func:`add_segment_args` / :func:`run_segment`.  Images are read
from files, folders and glob patterns (TIFF, PNG/JPEG, ``.npy``), segmented with one model
(or ``--model auto``), and masks are written atomically as ``<name>_masks.tif`` (or ``.png``
/ ``.npy``) next to each image or into ``--out``.  Each image is read and checked at its
turn; one that fails is reported on one line and skipped, and the run ends with a summary
(:mod:`flowseg._cli_batch`).  Progress goes to tqdm through the engine's progress protocol.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_batch import Batch
from ._cli_blocks import (
    add_block_args,
    blockwise_jobs,
    check_memory,
    expand,
    image_shape,
    run_blocks,
)
from ._cli_common import (
    ProgressBars,
    add_mask_args,
    file_anisotropy,
    load_model,
    mask_params,
    parse_channels,
    read_image,
)
from .engine.flows.params import MaskParams


def add_segment_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowseg segment``."""
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, folders or glob patterns ('imgs/*.tif'); a file that "
                        "cannot be segmented is reported and skipped")
    p.add_argument("--sample", nargs="?", const="cells", default=None, metavar="NAME",
                   choices=["cells", "nuclei", "cells3d"],
                   help="segment a bundled sample image (default 'cells'; also 'nuclei', "
                        "'cells3d'); no PATH needed")
    p.add_argument("--model", default=None, metavar="NAME|FILE|auto",
                   help="model name (bundled, or yours from the user model folder: see "
                        "`flowseg models`), a flowseg / Cellpose 1-3 model file, or 'auto': "
                        "per image, the model whose training images' style is nearest "
                        "(default: the bundled 'cyto')")
    p.add_argument("--diameter", type=float, default=None, metavar="D",
                   help="object diameter in pixels (default: estimate with the model's size "
                        "model, or the model's own diameter)")
    p.add_argument("--channels", nargs=2, default=None, metavar=("C", "N"),
                   help="0-based cytoplasm and nucleus channel indices; N may be 'none'")
    p.add_argument("--channel-axis", type=int, default=None, help="axis holding channels")
    p.add_argument("--z-axis", type=int, default=None, help="z axis of 3D images")
    p.add_argument("--3d", dest="do_3d", action="store_true", help="full 3D segmentation")
    p.add_argument("--stitch", type=float, default=MaskParams.stitch_threshold, metavar="IOU",
                   help="for stacks: 2D per slice, stitched across z at this IoU (e.g. 0.5)")
    p.add_argument("--anisotropy", type=float, default=None, metavar="A",
                   help="z step / pixel size for 3D (e.g. 2.0; default: from the file's "
                        "voxel size (ImageJ / OME-TIFF, OME-Zarr), else 1)")
    add_mask_args(p)
    p.add_argument("--augment", action="store_true", help="flip test-time augmentation")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: next to each image)")
    p.add_argument("--format", choices=("tif", "png", "npy"), default="tif",
                   help="mask file format (default tif)")
    p.add_argument("--save-flows", action="store_true",
                   help="also write <name>_flows.tif: flows and cell probability (float32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_block_args(p)  # blockwise options (zarr, OME-Zarr, big TIFF): see _cli_blocks


def write_masks(masks: np.ndarray, path: Path, fmt: str) -> Path:
    """Write int labels (uint16, or uint32 beyond 65535 objects) atomically: a crash or
    Ctrl-C never leaves a half-written mask file (:func:`flowseg.engine.io.images.write_labels`)."""
    from .engine.io.images import write_labels

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_labels(path, masks, fmt)


def _write_flows(seg: Any, path: Path) -> None:
    import tifffile

    from .engine.io.images import atomic_path

    stack = np.concatenate([seg.flows, seg.cellprob[None]], 0).astype(np.float32)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, stack, compression="zlib")


class _ModelChoice:
    """The model for each image: one fixed model, or with ``--model auto`` the model zoo's
    choice per image (:func:`flowseg.engine.inference.zoo.choose_model`), each loaded once."""

    def __init__(self, name: str | None, device: str | None) -> None:
        self.auto = name == "auto"
        self.device = device
        self.loaded: dict[str, Any] = {}
        if not self.auto:
            self.fixed = load_model(name, device)
            print(f"model: {self.fixed}", file=sys.stderr)
        else:
            from .engine.inference.zoo import zoo_centroids

            names = ", ".join(zoo_centroids())  # fails early if no model has a centroid
            print(f"model: auto (choosing per image among {names})", file=sys.stderr)

    def __call__(self, image: np.ndarray, kw: dict) -> tuple[Any, str]:
        """``(model, note)`` for one image; the note says which model auto chose and why."""
        if not self.auto:
            return self.fixed, ""
        from .engine.inference.model import Model
        from .engine.inference.zoo import choose_model

        name, dist = choose_model(image, channels=kw.get("channels"),
                                  channel_axis=kw.get("channel_axis"), z_axis=kw.get("z_axis"),
                                  device=self.device)
        if name not in self.loaded:
            self.loaded[name] = Model.load(name, device=self.device)
        dists = ", ".join(f"{n} {d:.3f}" for n, d in sorted(dist.items(), key=lambda t: t[1]))
        return self.loaded[name], f"model {name!r} (auto; style distance {dists})"


def _check_options(args: argparse.Namespace) -> None:
    """Options that make no sense for any image stop the call before any work."""
    from .engine.inference.checks import check_diameter

    if args.diameter is not None:
        if args.diameter == 0:
            args.diameter = None  # 0 = estimate, as in Cellpose
        else:
            check_diameter(args.diameter)
    if args.anisotropy is not None and not (math.isfinite(args.anisotropy)
                                            and args.anisotropy > 0):
        raise ValueError(f"--anisotropy must be a finite number > 0, got {args.anisotropy}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def _jobs(args: argparse.Namespace, kw: dict) -> list[tuple[str, Any, Path | None, dict]]:
    """``(label, image or path or error, output stem, keyword arguments)`` per input."""
    jobs: list[tuple[str, Any, Path | None, dict]] = []
    if args.sample:
        from .engine.data.samples import load_sample

        name = args.sample
        img, info = load_sample(name)
        out_dir = Path(args.out) if args.out else Path.cwd()
        skw = dict(kw)
        if skw["channels"] is None:
            skw["channels"] = info["channels"]
        skw["channel_axis"] = info["channel_axis"]
        if info["ndim"] == 3 and skw.get("z_axis") is None:
            skw["z_axis"] = 0
        jobs.append((f"sample {name!r}", img, out_dir / f"sample_{name}_masks",
                     {**skw, "_info": info}))
    for inp in args.inputs:
        if inp.error is not None:
            jobs.append((inp.label, inp.error, None, kw))
            continue
        f = inp.path
        out_dir = Path(args.out) if args.out else f.parent
        jobs.append((inp.label, f, out_dir / f"{f.name.split('.')[0]}_masks", kw))
    return jobs


def run_segment(args: argparse.Namespace) -> int:
    """Segment every image and write the masks; returns the exit code.

    Each input is read and checked at its turn; one that fails is reported on one line and
    skipped (:class:`~flowseg._cli_batch.Batch`): exit code 0 when all were segmented, 1
    when some failed, 2 when none was segmented or an option is wrong.
    """
    from tqdm import tqdm

    if not args.paths and not args.sample:
        raise ValueError("give image files/folders, or --sample to try the bundled sample")
    _check_options(args)
    mask = mask_params(args)  # a bad threshold stops here, before any image is read
    args.inputs = expand(list(args.paths)) if args.paths else []
    if block_jobs := blockwise_jobs(args, args.inputs):
        return run_blocks(args, block_jobs)
    kw = {"channels": parse_channels(args.channels), "channel_axis": args.channel_axis,
          "z_axis": args.z_axis, "diameter": args.diameter, "do_3d": args.do_3d,
          "anisotropy": args.anisotropy, "augment": args.augment,
          "batch_size": args.batch_size, **mask.as_dict()}
    jobs = _jobs(args, kw)
    models = _ModelChoice(args.model, args.device)
    bars = ProgressBars(not args.no_progress)
    batch = Batch("segmented")
    outer = tqdm(jobs, desc="images", disable=args.no_progress or len(jobs) < 2, file=sys.stderr)
    for label, src, dst, jkw in outer:
        if dst is None:
            batch.fail(label, src)
            continue
        batch.step(label, lambda src=src, dst=dst, jkw=jkw, label=label:
                   _segment_one(args, label, src, dst, jkw, models, bars))
    return batch.finish()


def _segment_one(args: argparse.Namespace, label: str, src: Any, dst: Path, jkw: dict,
                 models: _ModelChoice, bars: ProgressBars) -> None:
    """Read (a path), check, segment and write one image; print what came out."""
    from tqdm import tqdm

    jkw = dict(jkw)
    info = jkw.pop("_info", None)
    memory = not args.no_memory_check
    if isinstance(src, Path):
        shape = image_shape(src)  # from the file's header, before reading it
        jkw["anisotropy"] = file_anisotropy(args, src, label, shape)
        if memory and not models.auto:
            check_memory(args, src, shape, models.fixed, anisotropy=jkw["anisotropy"])
        image = read_image(src)
    else:
        image = src
    try:
        model, note = models(image, jkw)
        if memory and (models.auto or not isinstance(src, Path)):
            check_memory(args, Path(label), tuple(np.shape(image)), model,
                         anisotropy=jkw.get("anisotropy"))
        seg = model.segment(image, progress=bars, check_memory=False, **jkw)
    finally:
        bars.close()
    out = write_masks(seg.masks, dst, args.format)
    aniso = seg.params.get("anisotropy") if seg.params.get("do_3d") else None
    msg = (f"{label}: {seg.n_objects} objects (diameter {seg.diameter:.1f} px, "
           f"{seg.params.get('diameter_source')}"
           + ("" if aniso is None else f", anisotropy {aniso:.3g}") + f") -> {out}")
    if note:
        msg += f"  [{note}]"
    if info is not None and info.get("labels") is not None:
        from .engine.flows.metrics import average_precision

        ap = average_precision(info["labels"], seg.masks, thresholds=(0.5, 0.75, 0.9))
        msg += f"  [AP@0.5/0.75/0.9 vs ground truth: {ap[0]:.3f}/{ap[1]:.3f}/{ap[2]:.3f}]"
    if args.save_flows:
        _write_flows(seg, dst.parent / (dst.name[: -len("_masks")] + "_flows.tif"))
    tqdm.write(msg, file=sys.stdout)
