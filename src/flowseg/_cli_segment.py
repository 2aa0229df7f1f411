"""``flowseg segment``: argument definitions and the work behind them.

:mod:`flowseg.cli` calls :func:`add_segment_args` / :func:`run_segment`.  Images are read
from files and folders (TIFF, PNG/JPEG, ``.npy``), segmented with one model, and masks are
written as ``<name>_masks.tif`` (or ``.png`` / ``.npy``) next to each image or into ``--out``.
Progress goes to tqdm through the engine's progress protocol.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_blocks import add_block_args, blockwise_jobs, run_blocks
from ._cli_common import (
    ProgressBars,
    add_mask_args,
    collect_images,
    load_model,
    mask_params,
    parse_channels,
    read_image,
)
from .engine.flows.params import MaskParams


def add_segment_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowseg segment``."""
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files or folders")
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
                   help="z step / pixel size for 3D (e.g. 2.0)")
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
    """Write int labels as uint16 (or uint32 beyond 65535 objects)."""
    m = masks.astype(np.uint16 if masks.max(initial=0) < 65536 else np.uint32)
    out = path.with_suffix(f".{fmt}")
    if fmt == "tif":
        import tifffile

        tifffile.imwrite(out, m, compression="zlib")
    elif fmt == "npy":
        np.save(out, masks.astype(np.int32))
    else:
        if m.ndim != 2 or m.dtype != np.uint16:
            raise ValueError(f"PNG masks must be 2D with < 65536 objects (got shape {m.shape}, "
                             f"{int(masks.max())} objects): use --format tif")
        import skimage.io

        skimage.io.imsave(out, m, check_contrast=False)
    return out


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


def run_segment(args: argparse.Namespace) -> int:
    """Segment every image and write the masks; returns the exit code."""
    from tqdm import tqdm

    if args.diameter is not None and args.diameter <= 0:
        args.diameter = None  # 0 = estimate, as in Cellpose
    if not args.paths and not args.sample:
        raise ValueError("give image files/folders, or --sample to try the bundled sample")

    mask = mask_params(args)  # a bad threshold stops here, before any image is read
    if block_jobs := blockwise_jobs(args):
        return run_blocks(args, block_jobs)
    kw = {"channels": parse_channels(args.channels), "channel_axis": args.channel_axis,
          "z_axis": args.z_axis, "diameter": args.diameter, "do_3d": args.do_3d,
          "anisotropy": args.anisotropy, "augment": args.augment,
          "batch_size": args.batch_size, **mask.as_dict()}
    jobs: list[tuple[str, Any, Path, dict]] = []
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
    files = collect_images(args.paths) if args.paths else []
    for f in files:
        out_dir = Path(args.out) if args.out else f.parent
        jobs.append((str(f), f, out_dir / f"{f.name.split('.')[0]}_masks", kw))
    models = _ModelChoice(args.model, args.device)
    bars = ProgressBars(not args.no_progress)
    outer = tqdm(jobs, desc="images", disable=args.no_progress or len(jobs) < 2, file=sys.stderr)
    for label, src, dst, jkw in outer:
        jkw = dict(jkw)
        info = jkw.pop("_info", None)
        image = read_image(src) if isinstance(src, Path) else src
        try:
            model, note = models(image, jkw)
            seg = model.segment(image, progress=bars, **jkw)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
        finally:
            bars.close()
        dst.parent.mkdir(parents=True, exist_ok=True)
        out = write_masks(seg.masks, dst, args.format)
        msg = (f"{label}: {seg.n_objects} objects (diameter {seg.diameter:.1f} px, "
               f"{seg.params.get('diameter_source')}) -> {out}")
        if note:
            msg += f"  [{note}]"
        if info is not None and info.get("labels") is not None:
            from .engine.flows.metrics import average_precision

            ap = average_precision(info["labels"], seg.masks, thresholds=(0.5, 0.75, 0.9))
            msg += f"  [AP@0.5/0.75/0.9 vs ground truth: {ap[0]:.3f}/{ap[1]:.3f}/{ap[2]:.3f}]"
        tqdm.write(msg, file=sys.stdout)
        if args.save_flows:
            import tifffile

            fpath = dst.parent / (dst.name[: -len("_masks")] + "_flows.tif")
            stack = np.concatenate([seg.flows, seg.cellprob[None]], 0).astype(np.float32)
            tifffile.imwrite(fpath, stack, compression="zlib")
    return 0
