"""Reading Cellpose-style training folders: ``NAME.ext`` + ``NAME_masks.ext`` or ``NAME_seg.npy``.

A folder holds images and, for each, its instance labels either in an image file named
``NAME<mask_filter>.<ext>`` (default ``_masks``; 16-bit PNG or TIFF, 0 = background) or in
a Cellpose ``NAME_seg.npy`` file.  ``_seg.npy`` files are pickled dicts; they are read with
:func:`flowseg.engine.io.segfile.read_seg`, which refuses anything but numpy arrays and
builtin containers, so a malicious file cannot run code.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import InputError
from ..progress import check_cancel, report
from .images import read_image as _read_image
from .segfile import read_seg

__all__ = ["IMAGE_EXTENSIONS", "TrainingFolder", "find_pairs", "read_image", "read_labels",
           "load_folder", "split_validation"]

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
_DERIVED = ("_seg", "_flows", "_cp_masks", "_cp_outlines", "_outlines")


@dataclass
class TrainingFolder:
    """Images and labels read from a folder.

    Attributes
    ----------
    images : list of np.ndarray
        As stored (2D, 2D + channels, or 3D).
    labels : list of np.ndarray
        Integer instance labels, same spatial shape as the image.
    names : list of str
        Image file names (without folder).
    skipped : list of str
        Images left out, with the reason.
    """

    images: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    names: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (TIFF through tifffile, other formats through imageio); a file
    that cannot be read raises one :class:`~flowseg.engine.errors.FileReadError` naming it
    (:func:`flowseg.engine.io.images.read_image`)."""
    return _read_image(path)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read instance labels from a mask image or a Cellpose ``_seg.npy`` file (safely)."""
    path = Path(path)
    if path.name.endswith("_seg.npy"):
        return np.asarray(read_seg(path)["masks"])
    lab = read_image(path)
    if lab.ndim == 3 and lab.shape[-1] in (3, 4) and lab.dtype == np.uint8:
        # an RGB(A) export of a label image: only usable if all colour channels agree
        same = np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2])
        if not same:
            raise ValueError(f"{path}: the mask file is a colour image, not a label image "
                             "(expected one integer channel, 0 = background)")
        lab = lab[..., 0]
    return lab


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS


def find_pairs(folder: str | os.PathLike, mask_filter: str = "_masks",
               img_filter: str = "") -> list[tuple[Path, Path]]:
    """Pair each image in ``folder`` with its labels.

    Parameters
    ----------
    folder : path-like
        The folder (not searched recursively).
    mask_filter : str
        Suffix of the label files' stem (``NAME_masks.png``).
    img_filter : str
        Only images whose stem ends with this (Cellpose's ``--img_filter``).

    Returns
    -------
    list of (image path, label path)
        Sorted by image name; labels from ``NAME<mask_filter>.*`` if present, else
        ``NAME_seg.npy``.  Images without labels are not listed.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        If ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"training folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    files = sorted(folder.iterdir())
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        if _is_image(p):
            by_stem.setdefault(p.stem, []).append(p)
    pairs = []
    for p in files:
        if not _is_image(p):
            continue
        stem = p.stem
        if mask_filter and stem.endswith(mask_filter):
            continue
        if any(stem.endswith(d) for d in _DERIVED):
            continue
        if img_filter and not stem.endswith(img_filter):
            continue
        base = stem[: len(stem) - len(img_filter)] if img_filter else stem
        masks = by_stem.get(base + mask_filter, [])
        if masks:
            pairs.append((p, masks[0]))
            continue
        seg = folder / f"{stem}_seg.npy"
        if seg.is_file():
            pairs.append((p, seg))
    return pairs


def load_folder(folder: str | os.PathLike, mask_filter: str = "_masks", img_filter: str = "",
                max_images: Optional[int] = None, progress=None, cancel=None) -> TrainingFolder:
    """Read all image / label pairs of a Cellpose-style folder.

    Parameters
    ----------
    folder : path-like
        The folder.
    mask_filter, img_filter : str
        See :func:`find_pairs`.
    max_images : int, optional
        Read at most this many pairs (the first in name order).
    progress, cancel
        The engine's progress / cancel protocol (stage ``"read"``).

    Returns
    -------
    TrainingFolder

    Raises
    ------
    ValueError
        If the folder holds no image with labels, or an image and its labels differ in shape.
    """
    pairs = find_pairs(folder, mask_filter, img_filter)
    if not pairs:
        raise ValueError(f"no training pairs in {folder}: expected images with label files "
                         f"NAME{mask_filter}.<ext> or NAME_seg.npy next to them")
    if max_images is not None:
        if int(max_images) < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        pairs = pairs[: int(max_images)]
    out = TrainingFolder()
    for k, (ip, lp) in enumerate(pairs):
        check_cancel(cancel)
        try:  # a bad file is skipped (and listed), not the end of the whole folder
            img = read_image(ip)
            lab = read_labels(lp)
        except ValueError as exc:
            warnings.warn(f"skipping {ip.name}: {exc}", stacklevel=2)
            out.skipped.append(f"{ip.name}: {exc}")
            continue
        sp = lab.shape
        if img.shape[: len(sp)] != sp and img.shape[-len(sp):] != sp:
            raise ValueError(f"{ip.name}: image shape {img.shape} does not match its labels "
                             f"{lp.name} of shape {sp}")
        out.images.append(img)
        out.labels.append(lab)
        out.names.append(ip.name)
        report(progress, "read", k + 1, len(pairs), ip.name)
    if not out.images:
        raise InputError(f"no readable training pair in {folder}: "
                         + "; ".join(out.skipped[:3]) + (" ..." if len(out.skipped) > 3 else ""))
    return out


def split_validation(n: int, fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split ``range(n)`` into (train, validation) index lists, ``fraction`` held out.

    At least one image stays in training; with ``fraction > 0`` and ``n >= 2`` at least one
    is held out.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    nval = int(round(n * float(fraction)))
    if fraction > 0 and n >= 2:
        nval = max(nval, 1)
    nval = min(nval, n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in perm[:nval])
    tr = sorted(int(i) for i in perm[nval:])
    return tr, val

