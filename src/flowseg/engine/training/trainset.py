"""A training set on disk for the correct-and-retrain loop, in Cellpose's folder layout.

A training set is a folder of pairs, each written as::

    NAME.tif          the image: (Y, X) for one channel, (Y, X, 2) for cytoplasm + nucleus
    NAME_masks.tif    its instance labels (uint16, uint32 when needed; 0 = background)
    NAME_seg.npy      the same labels as a Cellpose ``_seg.npy`` (the Cellpose GUI opens it)

so the folder trains as it is (``flowseg train --dir``, Cellpose's ``--mask_filter _masks``;
read by :func:`flowseg.engine.io.datasets.find_pairs`).  A manifest (``flowseg_trainset.json``)
keeps the order of the pairs, a fingerprint of each image and where it came from; a
Cellpose folder without one opens too (pairs in name order) and gets one at its first add.

Every file is written to a scratch folder inside the set and moved into place with
:func:`os.replace`, image first and labels last, so a pair is never listed half-written, and
an interruption never damages the pairs already there.  Adding the same image again (same
pixels) replaces its labels -- the newest correction wins; a different image under a taken
name gets a new name, so nothing is overwritten by accident.

The held-out image -- the one on which a new model is compared with the model it started
from -- is the first pair of the set once it holds two or more; it stays the same as the set
grows, so the numbers of successive rounds compare.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import segfile
from ..io.datasets import _DERIVED, IMAGE_EXTENSIONS, find_pairs, read_image, read_labels
from ..progress import check_cancel, report
from .prep import median_diameter

__all__ = ["MANIFEST", "SetPair", "TrainingSet", "image_files", "safe_name"]

MANIFEST = "flowseg_trainset.json"
_FORMAT = "flowseg-trainset"
_VERSION = 1
_SCRATCH = ".flowseg-incoming"
_MASKS = "_masks"
_BAD_ENDINGS = (_MASKS,) + _DERIVED


@dataclass(frozen=True)
class SetPair:
    """One image / labels pair of a :class:`TrainingSet`.

    Attributes
    ----------
    name : str
        The image's file stem (``NAME`` of ``NAME.tif``).
    image_path, labels_path : Path
        The image file and the labels file training reads (``NAME_masks.tif``, or
        ``NAME_seg.npy`` in a folder made by Cellpose).
    info : dict
        The manifest entry (``source``, ``diameter``, ``added``, ``sha1``, ...); empty for a
        pair the plugin did not write.
    """

    name: str
    image_path: Path
    labels_path: Path
    info: dict = field(default_factory=dict)


def safe_name(name: str) -> str:
    """A file stem made from ``name`` that a set can store and read back as an image.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``; a name that
    would read as a label or Cellpose output file (``..._masks``, ``..._seg``) gets
    ``_image`` appended.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:80] or "image"
    if stem.lower().endswith(tuple(IMAGE_EXTENSIONS)):
        stem = os.path.splitext(stem)[0] or "image"
    if any(stem.endswith(e) for e in _BAD_ENDINGS):
        stem += "_image"
    return stem


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` in name order, leaving out label and Cellpose output files.

    Raises
    ------
    FileNotFoundError, NotADirectoryError
        If ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder")
    return [p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            and not p.name.startswith(".")
            and not any(p.stem.endswith(e) for e in _BAD_ENDINGS)]


def _check_pair(image: np.ndarray, labels: np.ndarray, name: str) -> None:
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 2):
        raise ValueError(f"a training image must be (Y, X) or (Y, X, 2) (cytoplasm, nucleus), "
                         f"got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise ValueError(f"image dtype {image.dtype} is not numeric")
    if labels.ndim != 2 or labels.dtype.kind not in "iub":
        raise ValueError(f"labels must be a 2D integer array, got {labels.dtype} with shape "
                         f"{labels.shape}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels of shape {labels.shape} do not match the image "
                         f"{image.shape[:2]}")
    if labels.min(initial=0) < 0:
        raise ValueError("labels must not contain negative values")
    if int(labels.max(initial=0)) == 0:
        raise ValueError(f"the labels of {name!r} hold no objects; paint or keep at least one "
                         "cell before adding the image to the training set")


def _fingerprint(image: np.ndarray) -> str:
    h = hashlib.sha1(f"{image.dtype.str}{image.shape}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


class TrainingSet:
    """A training-set folder; opening one that does not exist creates it.

    Parameters
    ----------
    folder : path-like
        The set's folder.  A new folder is made (with its parents); an existing folder is
        opened as it is -- one written by the plugin, a Cellpose training folder, or an
        empty one.

    Raises
    ------
    NotADirectoryError
        If ``folder`` is a file.
    ValueError
        If the folder's manifest is unreadable or not a flowseg training-set manifest.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser().resolve()
        if self.folder.exists() and not self.folder.is_dir():
            raise NotADirectoryError(f"training set {self.folder} is a file, not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._manifest = self._read_manifest()

    # ------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> Path:
        """The manifest file (present once a pair was added by :meth:`add`)."""
        return self.folder / MANIFEST

    def _read_manifest(self) -> dict:
        path = self.manifest_path
        if not path.is_file():
            return {"format": _FORMAT, "version": _VERSION, "nchan": None, "pairs": []}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the training-set manifest {path} cannot be read ({exc}); "
                             f"move it away to open the folder as a plain Cellpose folder"
                             ) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT \
                or not isinstance(data.get("pairs"), list):
            raise ValueError(f"{path} is not a flowseg training-set manifest")
        if int(data.get("version", 0)) > _VERSION:
            raise ValueError(f"{path} was written by a newer napari-flowseg (format version "
                             f"{data['version']}); update the plugin to open this set")
        return data

    def _write_manifest(self, scratch: Path) -> None:
        tmp = scratch / MANIFEST
        tmp.write_text(json.dumps(self._manifest, indent=1), encoding="utf-8")
        os.replace(tmp, self.manifest_path)

    # ------------------------------------------------------------------ listing
    @property
    def nchan(self) -> int | None:
        """Image channels of the set (1: cytoplasm only, 2: + nucleus); None when unknown."""
        n = self._manifest.get("nchan")
        return None if n is None else int(n)

    @property
    def channels(self) -> tuple[int, int | None]:
        """``channels=`` for training and segmenting the stored images (0-based)."""
        return (0, 1) if self.nchan == 2 else (0, None)

    def pairs(self) -> list[SetPair]:
        """The pairs in the folder: in the order they were added, then others by name."""
        entries = {e["name"]: e for e in self._manifest["pairs"]}
        found = {ip.stem: (ip, lp) for ip, lp in find_pairs(self.folder, _MASKS)}
        order = [n for n in entries if n in found] + sorted(n for n in found if n not in entries)
        return [SetPair(n, found[n][0], found[n][1], dict(entries.get(n, {}))) for n in order]

    def names(self) -> list[str]:
        """Names of the pairs, in :meth:`pairs` order."""
        return [p.name for p in self.pairs()]

    def __len__(self) -> int:
        return len(self.pairs())

    def held_out(self) -> str | None:
        """The pair new models are compared on: the first one, once there are two or more."""
        names = self.names()
        return names[0] if len(names) >= 2 else None

    def training_names(self) -> list[str]:
        """The pairs to train on: all but the held-out one."""
        held = self.held_out()
        return [n for n in self.names() if n != held]

    def sources(self) -> set[str]:
        """Where the stored images came from (the ``source`` given to :meth:`add`)."""
        return {str(e["source"]) for e in self._manifest["pairs"] if e.get("source")}

    def find_image(self, image: np.ndarray) -> str | None:
        """Name of the pair whose image has exactly these pixels (None when there is none)."""
        fp = _fingerprint(np.asarray(image))
        listed = set(self.names())
        return next((e["name"] for e in self._manifest["pairs"]
                     if e.get("sha1") == fp and e["name"] in listed), None)

    # ------------------------------------------------------------------ reading
    def load(self, names: Sequence[str] | None = None, progress: Any = None,
             cancel: Any = None) -> tuple[list, list, list]:
        """Read pairs (default: all) as ``(images, labels, names)`` lists.

        Raises
        ------
        KeyError
            If a name is not a pair of the set.
        """
        by_name = {p.name: p for p in self.pairs()}
        names = list(by_name) if names is None else list(names)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"not in the training set {self.folder}: {', '.join(missing)}")
        images, labels = [], []
        for k, n in enumerate(names):
            check_cancel(cancel)
            images.append(read_image(by_name[n].image_path))
            labels.append(read_labels(by_name[n].labels_path))
            report(progress, "read", k + 1, len(names), n)
        return images, labels, names

    # ------------------------------------------------------------------ adding
    def _taken(self, stem: str) -> bool:
        if stem in {e["name"] for e in self._manifest["pairs"]}:
            return True
        return any((self.folder / f"{stem}{suffix}").exists()
                   for suffix in (*IMAGE_EXTENSIONS, f"{_MASKS}.tif", f"{_MASKS}.png", "_seg.npy"))

    def _free_name(self, name: str) -> str:
        stem = safe_name(name)
        if not self._taken(stem):
            return stem
        k = 2
        while self._taken(f"{stem}-{k}"):
            k += 1
        return f"{stem}-{k}"

    def add(self, image: np.ndarray, labels: np.ndarray, name: str, *, source: str = "",
            diameter: float | None = None) -> tuple[SetPair, bool]:
        """Store an image and its corrected labels as a pair.

        Parameters
        ----------
        image : np.ndarray
            ``(Y, X)`` or ``(Y, X, C)`` with ``C`` = 1 (cytoplasm) or 2 (cytoplasm,
            nucleus): the channels the model sees, channel last.
        labels : np.ndarray
            ``(Y, X)`` integer instance labels with at least one object.
        name : str
            Wanted name (made file-safe; ``-2``, ``-3``, ... is appended when the name is
            taken by another image).
        source : str
            Where the image came from (a file path or a layer name), kept in the manifest.
        diameter : float, optional
            The object diameter the labels were segmented with, kept in the manifest and
            the ``_seg.npy`` (default: the labels' median diameter).

        Returns
        -------
        (SetPair, bool)
            The stored pair, and whether it replaced the labels of the same image already
            in the set.

        Raises
        ------
        ValueError
            Bad shapes or labels, no object, or channels that differ from the set's.
        """
        image = np.asarray(image)
        labels = np.asarray(labels)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        _check_pair(image, labels, name)
        nchan = 2 if image.ndim == 3 else 1
        if self.nchan is not None and nchan != self.nchan:
            have = "cytoplasm + nucleus" if self.nchan == 2 else "one channel"
            raise ValueError(f"the training set {self.folder.name!r} holds {have} images; this "
                             f"image has {'cytoplasm + nucleus' if nchan == 2 else 'one channel'}"
                             "; use another set for it")
        fp = _fingerprint(image)
        old = self.find_image(image)
        stem = old or self._free_name(name)
        diam = float(diameter) if diameter else median_diameter(labels)
        dtype = np.uint16 if int(labels.max()) < 2 ** 16 - 1 else np.uint32
        scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=self.folder))
        new_image = None
        try:
            import tifffile

            if old is None:  # the same pixels are there already when updating
                tifffile.imwrite(scratch / f"{stem}.tif", image, photometric="minisblack",
                                 compression="zlib")
                new_image = self.folder / f"{stem}.tif"
                os.replace(scratch / f"{stem}.tif", new_image)
            segfile.write_seg(scratch / f"{stem}_seg.npy", labels.astype(dtype), diameter=diam,
                      channels=(1, 2) if nchan == 2 else (0, 0), filename=f"{stem}.tif")
            tifffile.imwrite(scratch / f"{stem}{_MASKS}.tif", labels.astype(dtype),
                             compression="zlib")
            os.replace(scratch / f"{stem}_seg.npy", self.folder / f"{stem}_seg.npy")
            os.replace(scratch / f"{stem}{_MASKS}.tif", self.folder / f"{stem}{_MASKS}.tif")
            # the manifest lists every pair in the current order (pairs Cellpose or the
            # user put in the folder included), so adding never reorders the set
            known = {e["name"]: e for e in self._manifest["pairs"]}
            listed = [known.get(p.name, {"name": p.name}) for p in self.pairs()]
            entries = [e for e in listed if e["name"] != stem]
            prev = known.get(stem, {})
            entry = {**prev, "name": stem, "image": f"{stem}.tif",
                     "labels": f"{stem}{_MASKS}.tif", "seg": f"{stem}_seg.npy", "sha1": fp,
                     "shape": list(image.shape), "objects": int(len(np.unique(labels)) - 1),
                     "diameter": round(diam, 3), "source": str(source or prev.get("source", ""))}
            entry.setdefault("added", _now())
            if old is not None:
                entry["updated"] = _now()
            # an update keeps the pair's place (and so the held-out image)
            at = next((k for k, e in enumerate(listed) if e["name"] == stem), len(entries))
            entries.insert(at, entry)
            self._manifest = {**self._manifest, "nchan": nchan, "pairs": entries}
            self._write_manifest(scratch)
        except BaseException:
            if new_image is not None and not (self.folder / f"{stem}{_MASKS}.tif").exists():
                new_image.unlink(missing_ok=True)  # no labels made it: drop the lone image
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        pair = next(p for p in self.pairs() if p.name == stem)
        return pair, old is not None
