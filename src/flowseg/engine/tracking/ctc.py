"""Reading Cell Tracking Challenge (CTC) sequences, for training and evaluation.

A CTC dataset folder holds, per sequence ``NN`` (``01``, ``02``, ...)::

    NN/t000.tif ...                   the raw frames (2D or 3D)
    NN_GT/TRA/man_track000.tif ...    tracking markers (one label per cell, every frame)
    NN_GT/TRA/man_track.txt           "L B E P" lines (label, first, last frame, parent)
    NN_GT/SEG/man_seg000.tif ...      full segmentations of some frames (3D data may
                                      annotate single planes: man_seg_TTT_ZZZ.tif)

:class:`CTCSequence` finds these files and reads them frame by frame;
:meth:`CTCSequence.training_pairs` gives ``(image, labels)`` for every frame with a full 2D
or 3D SEG annotation, ready for :func:`flowseg.train` or a Cellpose-style training folder
(:meth:`CTCSequence.write_training_folder`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .result import TrackResult

__all__ = ["CTCSequence", "open_sequence", "read_track_table"]

_FRAME_RE = re.compile(r"^(?:t|mask|man_track|man_seg)(\d+)\.tiff?$")


def read_track_table(path: str | os.PathLike) -> np.ndarray:
    """Read a CTC ``L B E P`` file (``man_track.txt`` / ``res_track.txt``) as ``(N, 4)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CTC track file {path}")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                vals = [int(v) for v in parts]
            except ValueError:
                raise ValueError(f"{path}:{n}: expected 4 integers 'L B E P', got "
                                 f"{line.strip()!r}") from None
            if len(vals) != 4:
                raise ValueError(f"{path}:{n}: expected 4 integers 'L B E P', got {len(vals)}")
            rows.append(vals)
    return np.asarray(rows, np.int64).reshape(-1, 4)


def _frames(folder: Path) -> dict[int, Path]:
    """Frame number -> file for the CTC frame files of a folder."""
    out = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _FRAME_RE.match(p.name)
            if m:
                out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def _imread(path: Path) -> np.ndarray:
    import tifffile

    return np.asarray(tifffile.imread(path))


@dataclass
class CTCSequence:
    """Files of one CTC sequence; images and annotations are read on demand.

    Attributes
    ----------
    name : str
        The sequence number, e.g. ``"01"``.
    images : dict of int to Path
        Frame -> raw image file.
    tra : dict of int to Path
        Frame -> tracking-marker file (empty without ``NN_GT/TRA``).
    seg : dict of int to Path
        Frame -> full segmentation file (empty without ``NN_GT/SEG``).
    track_table : np.ndarray or None
        ``man_track.txt`` as ``(N, 4)``.
    """

    name: str
    images: dict = field(default_factory=dict)
    tra: dict = field(default_factory=dict)
    seg: dict = field(default_factory=dict)
    track_table: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        """Number of raw frames."""
        return len(self.images)

    def image(self, t: int) -> np.ndarray:
        """Raw frame ``t``."""
        return _imread(self.images[int(t)])

    def stack(self) -> np.ndarray:
        """All raw frames as one ``(T, ...)`` array."""
        return np.stack([self.image(t) for t in self.images])

    def truth(self) -> TrackResult:
        """The tracking ground truth (markers + lineage) as a :class:`TrackResult`."""
        if not self.tra or self.track_table is None:
            raise FileNotFoundError(f"sequence {self.name} has no TRA ground truth")
        labels = np.stack([_imread(self.tra[t]) for t in self.tra]).astype(np.int32)
        return TrackResult.from_ctc(labels, self.track_table, {"source": "CTC TRA"})

    def training_pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        """``(image, labels, name)`` for each frame with a full SEG annotation."""
        for t, path in self.seg.items():
            if t not in self.images:
                continue
            img, lab = self.image(t), _imread(path)
            if lab.shape != img.shape[:lab.ndim]:
                continue  # a single annotated plane of a 3D frame
            yield img, lab.astype(np.int32), f"{self.name}_t{t:03d}"

    def write_training_folder(self, folder: str | os.PathLike) -> list[Path]:
        """Write ``NAME.tif`` + ``NAME_masks.tif`` pairs (the layout ``flowseg train``
        reads) for the annotated frames; returns the image files written."""
        import tifffile

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for img, lab, name in self.training_pairs():
            tifffile.imwrite(out / f"{name}.tif", img)
            tifffile.imwrite(out / f"{name}_masks.tif", lab.astype(np.uint16 if lab.max() < 65536
                                                                    else np.uint32))
            written.append(out / f"{name}.tif")
        if not written:
            raise ValueError(f"sequence {self.name} has no full SEG annotation to train on")
        return written


def open_sequence(root: str | os.PathLike, sequence: str = "01") -> CTCSequence:
    """Find the files of CTC sequence ``sequence`` under a dataset folder ``root``.

    ``root`` may also be the sequence folder itself (``.../01``); the ground truth is then
    looked for next to it (``.../01_GT``).
    """
    root = Path(root)
    if (root / sequence).is_dir():
        img_dir = root / sequence
    elif _frames(root):
        img_dir, sequence = root, root.name
    else:
        raise FileNotFoundError(f"no CTC sequence {sequence!r} in {root} (expected "
                                f"{root / sequence}/t000.tif ...)")
    images = _frames(img_dir)
    if not images:
        raise FileNotFoundError(f"no frames tTTT.tif in {img_dir}")
    gt = img_dir.parent / f"{sequence}_GT"
    table = None
    if (gt / "TRA" / "man_track.txt").is_file():
        table = read_track_table(gt / "TRA" / "man_track.txt")
    return CTCSequence(name=sequence, images=images, tra=_frames(gt / "TRA"),
                       seg=_frames(gt / "SEG"), track_table=table)
