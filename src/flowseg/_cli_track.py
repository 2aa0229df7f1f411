"""``flowseg track``: segment every frame of a time-lapse, link cells over time, export.

:mod:`flowseg.cli` calls :func:`add_track_args` / :func:`run_track`.  The input is one
image file holding the time-lapse (``--t-axis`` names its time axis) or a folder of frames
(a CTC sequence folder ``01/`` with ``t000.tif`` ...: T is then the first axis).  Outputs:

* ``--ctc-out DIR``: ``DIR/maskTTT.tif`` + ``DIR/res_track.txt`` (Cell Tracking Challenge
  result layout) and ``DIR/tracks.csv`` with the same labels;
* ``--out FILE``: the tracked labels as one ``(T, ...)`` TIFF, a cell keeping its id over
  closed gaps, and ``--csv FILE`` for them;
* ``--gt DIR``: score the CTC result against a ground-truth folder (``NN_GT``) with
  py-ctcmetrics and print TRA / DET / SEG.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ._cli_common import (
    ProgressBars,
    add_mask_args,
    collect_images,
    file_anisotropy,
    load_model,
    mask_params,
    parse_channels,
    read_image,
)
from .engine.flows.params import MaskParams

__all__ = ["add_track_args", "read_timelapse", "run_track"]


def add_track_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowseg track``."""
    p.add_argument("path", metavar="IN", help="time-lapse image file, or a folder of frames "
                                              "(e.g. a CTC sequence folder 01/)")
    p.add_argument("--t-axis", type=int, default=0, help="time axis of the image (default 0)")
    p.add_argument("--model", default=None, metavar="NAME|FILE",
                   help="bundled model name or model file (default: the bundled 'cyto')")
    p.add_argument("--diameter", type=float, default=None, metavar="D",
                   help="cell diameter in pixels, the same for every frame (default: estimated "
                        "once, median over the first, middle and last frames)")
    p.add_argument("--channels", nargs=2, default=None, metavar=("C", "N"),
                   help="0-based cytoplasm and nucleus channel indices; N may be 'none'")
    p.add_argument("--channel-axis", type=int, default=None,
                   help="axis holding channels (counted with the T axis)")
    p.add_argument("--z-axis", type=int, default=None,
                   help="z axis of 3D frames (counted with the T axis)")
    p.add_argument("--3d", dest="do_3d", action="store_true", help="full 3D segmentation per frame")
    p.add_argument("--stitch", type=float, default=MaskParams.stitch_threshold, metavar="IOU",
                   help="3D frames: 2D per slice, stitched across z at this IoU")
    p.add_argument("--anisotropy", type=float, default=None, metavar="A",
                   help="z step / pixel size for 3D frames (default: from the file's voxel "
                        "size (ImageJ / OME-TIFF), else 1)")
    add_mask_args(p)
    p.add_argument("--max-gap", type=int, default=2,
                   help="frames a cell may be missed and keep its track (default 2; 0: none)")
    p.add_argument("--max-distance", type=float, default=None, metavar="PX",
                   help="largest move between frames in pixels (default: one cell diameter)")
    p.add_argument("--no-divisions", action="store_true", help="do not detect divisions")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--ctc-out", default=None, metavar="DIR",
                   help="write the CTC result folder: maskTTT.tif, res_track.txt, tracks.csv")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the tracked labels as one (T, ...) TIFF")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="tracks table of --out's labels (id, t, y, x, parent)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace CTC masks already in --ctc-out")
    p.add_argument("--gt", default=None, metavar="DIR",
                   help="CTC ground-truth folder (NN_GT) to score the result (needs "
                        "py-ctcmetrics)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def read_timelapse(path: Path) -> tuple[np.ndarray, bool]:
    """The time-lapse in a file, or the frames of a folder stacked on a new first axis.

    Returns the array and whether it came from a folder (then T is axis 0).
    """
    if path.is_dir():
        from .engine.tracking.ctc import open_sequence

        try:
            seq = open_sequence(path)
        except FileNotFoundError:
            files = collect_images([str(path)])
            return np.stack([read_image(f) for f in files]), True
        return seq.stack(), True
    if not path.is_file():
        raise FileNotFoundError(f"no such file or folder: {path}")
    return read_image(path), False


def _voxel_file(path: Path) -> Path | None:
    """The file whose voxel size the frames have: the time-lapse file, or a folder's first
    frame."""
    if not path.is_dir():
        return path
    try:
        return collect_images([str(path)])[0]
    except (OSError, ValueError, IndexError):
        return None


def _frame_shape(shape: tuple[int, ...], t_axis: int) -> tuple[int, ...] | None:
    """The shape of one frame (None: ``t_axis`` out of range; the run says why)."""
    if not -len(shape) <= t_axis < len(shape):
        return None
    t = t_axis % len(shape)
    return tuple(s for k, s in enumerate(shape) if k != t)


def _write_labels(labels: np.ndarray, path: Path) -> Path:
    import tifffile

    dtype = np.uint16 if int(labels.max(initial=0)) < 65536 else np.uint32
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, labels.astype(dtype), compression="zlib")
    return path


def run_track(args: argparse.Namespace) -> int:
    """Segment, link and write; returns the exit code."""
    from .engine.tracking.driver import track
    from .engine.tracking.export import write_ctc, write_tracks_csv
    from .engine.tracking.link import LinkParams

    if not (args.ctc_out or args.out):
        raise ValueError("say where to write the result: --ctc-out DIR and/or --out FILE")
    if args.csv and not args.out:
        raise ValueError("--csv describes --out's labels: give --out FILE too (the CTC "
                         "folder gets its own tracks.csv)")
    if args.gt and not args.ctc_out:
        raise ValueError("--gt scores the CTC result: give --ctc-out DIR too")
    if args.diameter is not None and args.diameter <= 0:
        args.diameter = None
    link = LinkParams(max_distance=args.max_distance, max_gap=args.max_gap,
                      divisions=not args.no_divisions).checked()
    image, from_folder = read_timelapse(Path(args.path).expanduser())
    t_axis = 0 if from_folder else args.t_axis
    if image.ndim < 3:
        raise ValueError(f"{args.path}: image of shape {image.shape} has no time axis")
    voxel_file = _voxel_file(Path(args.path).expanduser()) if args.do_3d else None
    anisotropy = file_anisotropy(args, voxel_file, str(args.path),
                                 _frame_shape(image.shape, t_axis))
    model = load_model(args.model, args.device)
    n = image.shape[t_axis % image.ndim]
    print(f"model: {model}; {n} frames of shape {image.shape}, T axis {t_axis}",
          file=sys.stderr)
    bars = ProgressBars(not args.no_progress)
    kw = {"channels": parse_channels(args.channels), "channel_axis": args.channel_axis,
          "z_axis": args.z_axis, "do_3d": args.do_3d, "anisotropy": anisotropy,
          **mask_params(args).as_dict()}
    t0 = time.perf_counter()
    try:
        result = track(model, image, t_axis=t_axis, diameter=args.diameter, link=link,
                       progress=bars, **kw)
    finally:
        bars.close()
    info = result.info
    print(f"{result.n_tracks} tracks, {result.n_divisions} divisions in {n} frames "
          f"(diameter {info['segment_diameter']:.1f} px, {info['diameter_source']}); "
          f"segmenting {info['segment_seconds']:.1f} s, linking {info['link_seconds']:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s")
    if args.out:
        out = _write_labels(result.labels, Path(args.out))
        print(f"tracked labels -> {out}")
        if args.csv:
            print(f"tracks table -> {write_tracks_csv(result, Path(args.csv))}")
    if args.ctc_out:
        folder = write_ctc(result, args.ctc_out, overwrite=args.overwrite)
        write_tracks_csv(result.to_ctc(), folder / "tracks.csv")
        print(f"CTC result -> {folder} (maskTTT.tif, res_track.txt, tracks.csv)")
        if args.gt:
            from .engine.tracking.evaluate import ctc_scores

            try:
                sc = ctc_scores(folder, args.gt)
            except ImportError as exc:  # an optional dependency: say how to get it
                raise ValueError(str(exc)) from None
            if not sc.get("Valid"):
                raise ValueError(f"py-ctcmetrics found the result in {folder} invalid")
            print("scores: " + ", ".join(f"{k} {sc[k]:.4f}" for k in ("TRA", "DET", "SEG")
                                         if sc.get(k) is not None))
    return 0
