"""Writing tracks: Cell Tracking Challenge (CTC) result / ground-truth folders and CSV.

CTC result layout (what ``flowseg track --ctc-out DIR`` writes, scored by the CTC tools and
py-ctcmetrics)::

    DIR/mask000.tif ... maskTTT.tif   16-bit labels, one file per frame
    DIR/res_track.txt                 one "L B E P" line per track

``L`` is the label, ``B``/``E`` the first/last frame, ``P`` the parent label (0: none).
Frame numbers have 3 digits (4 from 1000 frames on).  Tracks with gaps are split first
(:meth:`~flowseg.engine.tracking.result.TrackResult.to_ctc`).

The tracks CSV has one row per cell and frame: ``id, t, [z,] y, x, parent``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .result import TrackResult

__all__ = ["frame_digits", "write_ctc", "write_ctc_dataset", "write_tracks_csv"]


def frame_digits(n_frames: int) -> int:
    """Digits of CTC frame numbers: 3, or more for 1000 frames and longer."""
    return max(3, len(str(max(int(n_frames) - 1, 0))))


def _label_dtype(labels: np.ndarray) -> type:
    return np.uint16 if int(labels.max(initial=0)) < 65536 else np.uint32


def _write_masks(labels: np.ndarray, folder: Path, prefix: str) -> None:
    import tifffile

    dtype = _label_dtype(labels)
    nd = frame_digits(labels.shape[0])
    for t, frame in enumerate(labels):
        tifffile.imwrite(folder / f"{prefix}{t:0{nd}d}.tif", frame.astype(dtype),
                         compression="zlib")


def _write_table(table: np.ndarray, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(" ".join(str(int(v)) for v in row) + "\n"
                      for row in np.asarray(table, np.int64))


def _prepare_dir(path: str | os.PathLike, overwrite: bool, pattern: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob(pattern))
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds {old[0].name} and {len(old) - 1} other "
                              "file(s); choose an empty folder or allow overwriting")
    for p in old:  # a shorter new result must not leave frames of an old one
        p.unlink()
    return out


def write_ctc(result: TrackResult, folder: str | os.PathLike, *, overwrite: bool = False
              ) -> Path:
    """Write ``result`` as a CTC result folder (``maskTTT.tif`` + ``res_track.txt``).

    Returns the folder.  Existing CTC masks there are refused unless ``overwrite``.
    """
    ctc = result.to_ctc()
    out = _prepare_dir(folder, overwrite, "mask*.tif")
    _write_masks(ctc.labels, out, "mask")
    _write_table(ctc.table(), out / "res_track.txt")
    return out


def write_ctc_dataset(root: str | os.PathLike, images: np.ndarray, truth: TrackResult, *,
                      sequence: str = "01", seg_frames: Sequence[int] | None = None,
                      overwrite: bool = False) -> Path:
    """Write a sequence with its ground truth in the CTC layout.

    ``root/01/tTTT.tif`` (images), ``root/01_GT/TRA/man_trackTTT.tif`` + ``man_track.txt``
    (tracking truth: full masks here) and ``root/01_GT/SEG/man_segTTT.tif`` for
    ``seg_frames`` (default: every frame).  Returns ``root``.
    """
    import tifffile

    root = Path(root)
    images = np.asarray(images)
    if images.shape[0] != truth.n_frames:
        raise ValueError(f"{images.shape[0]} images but {truth.n_frames} truth frames")
    img_dir = _prepare_dir(root / sequence, overwrite, "t*.tif")
    nd = frame_digits(images.shape[0])
    for t, img in enumerate(images):
        tifffile.imwrite(img_dir / f"t{t:0{nd}d}.tif", img)
    ctc = truth.to_ctc()
    tra = _prepare_dir(root / f"{sequence}_GT" / "TRA", overwrite, "man_track*.tif")
    _write_masks(ctc.labels, tra, "man_track")
    _write_table(ctc.table(), tra / "man_track.txt")
    seg = _prepare_dir(root / f"{sequence}_GT" / "SEG", overwrite, "man_seg*.tif")
    frames = range(truth.n_frames) if seg_frames is None else [int(t) for t in seg_frames]
    dtype = _label_dtype(ctc.labels)
    for t in frames:
        tifffile.imwrite(seg / f"man_seg{t:0{nd}d}.tif", ctc.labels[t].astype(dtype),
                         compression="zlib")
    return root


def write_tracks_csv(result: TrackResult, path: str | os.PathLike,
                     spacing: tuple | None = None) -> Path:
    """One row per cell and frame: ``id, t, [z,] y, x, parent`` (parent 0: none).

    Centroids are in pixels (times ``spacing`` when given).
    """
    nodes = result.nodes(spacing)
    ndim = result.labels.ndim - 1
    axes = ["z", "y", "x"][-ndim:]
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "t", *axes, "parent"])
        for row in nodes:
            tid = int(row[0])
            w.writerow([tid, int(row[1]), *(f"{v:.2f}" for v in row[2:]),
                        result.parents.get(tid, 0)])
    return path
