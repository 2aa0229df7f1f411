"""``flowseg segment`` for big inputs: blockwise on dask.distributed, labels to zarr.

:mod:`flowseg._cli_segment` adds these arguments (:func:`add_block_args`) and hands over to
:func:`run_blocks` when :func:`blockwise_jobs` finds work for it: a zarr or OME-Zarr input,
a TIFF over :data:`TIFF_BLOCKWISE_ELEMENTS`, or ``--block-size`` given.  Every input of such
a call is then segmented with :func:`flowseg.segment_blocks`:

* an OME-Zarr image gets a label image ``<image>/labels/<name>`` (``--out NAME``, default
  ``flowseg``; an ``--out`` ending in ``.zarr`` writes a plain array there instead);
* any other input gets ``<name>_masks.zarr`` next to it, in the ``--out`` folder, or at
  ``--out`` itself when that ends in ``.zarr`` (one input only).

Otherwise the call stays in memory; before each image :func:`check_memory` compares its
predicted peak memory (:func:`flowseg.engine.memory.estimate_segment_memory`) with the
memory free now, and an image that does not fit fails (the run goes on with the next one)
with a message proposing ``--block-size`` (``--no-memory-check`` runs anyway).

Every input is a step of a :class:`~flowseg._cli_batch.Batch`: a bad one is reported on
one line and skipped.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._cli_batch import Batch, Input, expand_inputs
from ._cli_common import (
    ProgressBars,
    file_anisotropy,
    load_model,
    mask_params,
    parse_channels,
    read_image,
)

__all__ = ["TIFF_BLOCKWISE_ELEMENTS", "add_block_args", "blockwise_jobs", "check_memory",
           "image_shape", "run_blocks"]

#: TIFF images with more elements than this (64 Mi, e.g. 8192 x 8192) are read blockwise
#: (the engine's ``flowseg.engine.blocks.lazy.BLOCKWISE_ELEMENTS``; not imported here so
#: that ``flowseg --help`` stays fast).
TIFF_BLOCKWISE_ELEMENTS = 1 << 26


def add_block_args(p: argparse.ArgumentParser) -> None:
    """Blockwise options of ``flowseg segment``."""
    g = p.add_argument_group(
        "blockwise (zarr / OME-Zarr inputs, TIFFs over 64 M pixels, or --block-size)",
        "big images are cut into overlapping blocks segmented on dask workers; labels are "
        "written to zarr (see docs/blocks.md)")
    g.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="block edge in pixels (default 1024 in 2D; in 3D up to 256, as "
                        "the memory of one block allows); giving it "
                        "makes any input blockwise")
    g.add_argument("--overlap", type=int, default=None, metavar="N",
                   help="margin around each block (default: 2 diameters, the minimum)")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local dask workers (default: one per core, fewer if memory is short)")
    g.add_argument("--scheduler", default=None, metavar="ADDR",
                   help="use a running dask scheduler, e.g. tcp://host:8786 (workers need "
                        "flowseg and must see the input and output paths)")
    g.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="memory per local worker, e.g. 4GB (default: available / workers)")
    g.add_argument("--skip-below", type=float, default=None, metavar="I",
                   help="skip blocks whose intensity never reaches I (empty background)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing zarr output / label image")
    g.add_argument("--no-memory-check", action="store_true",
                   help="segment in memory even when the predicted peak memory exceeds the "
                        "free memory (by default the call stops and proposes --block-size)")


@dataclass(frozen=True)
class BlockJob:
    """One input of a blockwise call."""

    label: str
    data: Any
    out: Any
    error: str | None = None


def _is_big_tiff(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return math.prod(tif.series[0].shape) > TIFF_BLOCKWISE_ELEMENTS
    except Exception:  # noqa: BLE001 - an unreadable file fails at its turn, not here
        return False


def expand(paths: list[str]) -> list[Input]:
    """The inputs of ``flowseg segment`` (:func:`~flowseg._cli_batch.expand_inputs`; zarr
    folders are inputs themselves)."""
    from .engine.blocks.source import is_zarr_path

    return expand_inputs(paths, keep_dirs=is_zarr_path)


def _is_zarr(inp: Input) -> bool:
    from .engine.blocks.source import is_zarr_path

    return inp.path is not None and is_zarr_path(inp.path)


def _out_for(src: Path, is_zarr: bool, out: str | None, n_inputs: int) -> Any:
    stem = src.name.split(".")[0]
    if out is not None and out.lower().endswith(".zarr"):
        if n_inputs > 1:
            raise ValueError(f"--out {out} names one zarr output but {n_inputs} inputs are "
                             "blockwise: give a folder")
        return out
    if is_zarr:
        from .engine.blocks.ome import read_ome
        from .engine.blocks.source import require_zarr

        node = require_zarr().open(str(src), mode="r")
        if not hasattr(node, "shape") and read_ome(node) is not None:
            if out is not None and ("/" in out or "\\" in out):
                raise ValueError(f"for an OME-Zarr input --out names the label image "
                                 f"(labels/NAME) or a .zarr path, got {out!r}")
            return out  # label name (None: the default name)
    folder = Path(out) if out is not None else src.parent
    return folder / f"{stem}_masks.zarr"


def blockwise_jobs(args: argparse.Namespace, inputs: list[Input] | None = None
                   ) -> list[BlockJob]:
    """The blockwise jobs of a ``flowseg segment`` call ([] when it is not blockwise);
    ``inputs``: the call's :func:`expand`-ed paths (default: expanded here)."""
    forced = getattr(args, "block_size", None) is not None
    if inputs is None:
        inputs = expand(list(args.paths)) if args.paths else []
    big = forced or any(_is_zarr(i) or (i.path is not None and i.path.suffix.lower() in
                                        (".tif", ".tiff") and _is_big_tiff(i.path))
                        for i in inputs)
    if not big:
        return []
    if args.save_flows:
        raise ValueError("--save-flows is not available for blockwise runs (zarr, OME-Zarr, "
                         "big TIFF or --block-size inputs)")
    n = len(inputs) + (1 if args.sample else 0)
    jobs = []
    if args.sample:
        from .engine.data.samples import load_sample

        img, info = load_sample(args.sample)
        folder = Path(args.out) if args.out and not args.out.endswith(".zarr") else Path.cwd()
        out = args.out if args.out and args.out.endswith(".zarr") and n == 1 else \
            folder / f"sample_{args.sample}_masks.zarr"
        jobs.append(BlockJob(f"sample {args.sample!r}", (img, info), out))
    for inp in inputs:
        if inp.error is not None:
            jobs.append(BlockJob(inp.label, None, None, inp.error))
            continue
        try:
            out = _out_for(inp.path, _is_zarr(inp), args.out, n)
        except ValueError as exc:
            raise ValueError(f"{inp.label}: {exc}") from None
        jobs.append(BlockJob(inp.label, inp.path, out))
    return jobs


def image_shape(path: Path) -> tuple[int, ...] | None:
    """The shape of an image file, read from its header (None when it cannot be told)."""
    suf = path.suffix.lower()
    try:
        if suf in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tuple(int(n) for n in tif.series[0].shape)
        if suf == ".npy":
            import numpy as np

            return tuple(np.load(path, mmap_mode="r", allow_pickle=False).shape)
        from PIL import Image

        with Image.open(path) as im:
            bands = len(im.getbands())
            return (im.height, im.width) + ((bands,) if bands > 1 else ())
    except (OSError, ValueError, ImportError):  # unreadable: the run says why
        return None


def check_memory(args: argparse.Namespace, path: Path, shape: tuple[int, ...] | None,
                 model: Any = None, anisotropy: float | None = None) -> None:
    """Refuse (InputError) an in-memory run of the image at ``path`` (of ``shape``) whose
    predicted peak memory exceeds the memory free now, proposing the blockwise path.

    ``model``: the model that will run (None: a Cellpose-style width-32 network at its
    own diameter, e.g. before ``--model auto`` has chosen); ``anisotropy``: the one the
    run uses (default ``--anisotropy``).
    """
    from .engine.errors import InputError
    from .engine.memory import estimate_segment_memory

    if shape is None:
        return
    try:
        est = estimate_segment_memory(
            model, shape, channel_axis=args.channel_axis, z_axis=args.z_axis,
            do_3d=args.do_3d, stitch_threshold=args.stitch, diameter=args.diameter,
            anisotropy=args.anisotropy if anisotropy is None else anisotropy,
            batch_size=args.batch_size, augment=args.augment)
    except ValueError:  # axes the run refuses: it says why
        return
    if not est.fits:
        edge = 128 if est.spatial_ndim == 3 and args.do_3d else 1024
        raise InputError(
            f"{est.message()}. Segment it block by block instead: add --block-size {edge} "
            f"(labels go to {path.name.split('.')[0]}_masks.zarr; see docs/scale.md), free "
            "some memory, or add --no-memory-check to try anyway")


def run_blocks(args: argparse.Namespace, jobs: list[BlockJob] | None = None) -> int:
    """Segment every input blockwise (a failing input is reported and skipped); returns
    the exit code (see :meth:`~flowseg._cli_batch.Batch.finish`)."""
    from .engine.blocks import ClusterOptions

    jobs = blockwise_jobs(args) if jobs is None else jobs
    if args.scheduler and (args.workers or args.memory_limit):
        raise ValueError("--workers and --memory-limit set up a local cluster; with "
                         "--scheduler the running cluster decides")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.block_size is not None and args.block_size < 1:
        raise ValueError(f"--block-size must be >= 1, got {args.block_size}")
    cluster = ClusterOptions(address=args.scheduler, workers=args.workers,
                             memory_limit=args.memory_limit)
    if args.model == "auto":
        raise ValueError("--model auto chooses per whole image; for blockwise inputs name "
                         "the model (e.g. --model nuclei)")
    model = load_model(args.model, args.device)
    print(f"model: {model}", file=sys.stderr)
    if args.format != "tif":
        print("note: blockwise outputs are zarr arrays; --format is ignored", file=sys.stderr)
    bars = ProgressBars(not args.no_progress)
    batch = Batch("segmented")
    for job in jobs:
        if job.error is not None:
            batch.fail(job.label, job.error)
            continue
        batch.step(job.label, lambda job=job: _run_block_job(args, job, model, cluster, bars))
    return batch.finish()


def _run_block_job(args: argparse.Namespace, job: BlockJob, model: Any, cluster: Any,
                   bars: ProgressBars) -> None:
    """One blockwise input: segment it into its zarr output and say what came out."""
    from tqdm import tqdm

    from .engine.blocks import segment_blocks

    data, info = job.data, None
    kw: dict[str, Any] = {"channels": parse_channels(args.channels),
                          "channel_axis": args.channel_axis, "z_axis": args.z_axis}
    if isinstance(data, tuple):  # a bundled sample
        data, info = data
        kw["channels"] = kw["channels"] or info["channels"]
        kw["channel_axis"] = info["channel_axis"]
        if info["ndim"] == 3 and kw["z_axis"] is None:
            kw["z_axis"] = 0
    anisotropy = args.anisotropy
    if isinstance(data, Path):
        shape = image_shape(data) if data.suffix.lower() in (".tif", ".tiff") else None
        anisotropy = file_anisotropy(args, data, job.label, shape)
        if data.suffix.lower() not in (".tif", ".tiff") and not data.is_dir():
            data = read_image(data)
    diameter = args.diameter if args.diameter and args.diameter > 0 else None
    import tifffile

    try:
        res = segment_blocks(
            data, model, block_size=args.block_size, overlap=args.overlap, diameter=diameter,
            do_3d=args.do_3d, anisotropy=anisotropy, out=job.out,
            overwrite=args.overwrite, cluster=cluster, skip_below=args.skip_below,
            progress=bars, augment=args.augment, batch_size=args.batch_size,
            **mask_params(args).as_dict(), **kw)
    except tifffile.TiffFileError as exc:  # a corrupt TIFF found while reading its blocks
        from .engine.errors import FileReadError, short_reason

        raise FileReadError(job.label, f"corrupt TIFF file ({short_reason(exc)})") from None
    finally:
        bars.close()
    where = res.path if res.label_name is None else \
        f"{res.path} (label image {res.label_name!r})"
    tqdm.write(f"{job.label}: {res.n_objects} objects in {res.plan.n_blocks} blocks of "
               f"{'x'.join(map(str, res.plan.block_size))} ({res.n_skipped} skipped, "
               f"{res.n_merged} pieces joined across faces; diameter {res.diameter:.1f} px, "
               f"{res.diameter_source}; {res.seconds['total']:.1f} s, peak "
               f"{res.peak_rss_mb:.0f} MiB per worker) -> {where}", file=sys.stdout)
