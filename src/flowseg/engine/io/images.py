"""Image and label files: read with one clear error per bad file, written atomically.

:func:`read_image` reads TIFF (tifffile), ``.npy`` (never pickles) and PNG / JPEG / BMP /
GIF (imageio).  Whatever goes wrong inside a reader -- a text file named ``.png``, a
truncated TIFF, an empty file, a pickle in a ``.npy`` -- becomes one
:class:`~flowseg.engine.errors.FileReadError` naming the file and saying what it looks like
instead, never a reader's traceback.

:func:`write_labels` writes instance labels (``.tif`` uint16/uint32 zlib, 16-bit ``.png``,
``.npy`` int32) through :func:`atomic_path`: into a temporary file in the destination's
folder, then ``os.replace``, so an interrupted run (Ctrl-C, crash, full disk) never leaves a
half-written mask file under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import FileReadError, InputError, short_reason
from .atomic import atomic_path

__all__ = ["IMAGE_SUFFIXES", "LABEL_FORMATS", "atomic_path", "read_image", "sniff_format",
           "write_labels"]

#: Suffixes :func:`read_image` reads.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".npy")
#: Formats :func:`write_labels` writes.
LABEL_FORMATS = ("tif", "png", "npy")

_MAGIC = (  # (leading bytes, format name)
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"\x93NUMPY", "NPY"),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x1f\x8b", "GZIP"),
    (b"%PDF", "PDF"),
)
_EXPECTED = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG",
             ".bmp": "BMP", ".gif": "GIF", ".npy": "NPY"}


def sniff_format(head: bytes) -> str:
    """What the first bytes of a file look like: ``"PNG"``, ``"TIFF"``, ..., ``"text"``,
    ``"empty"`` or ``"unknown"``."""
    if not head:
        return "empty"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return "text" if printable >= 0.95 * len(text) else "unknown"


def _why(path: Path, exc: BaseException) -> str:
    """Why ``path`` could not be read, in words: what it looks like, else the reader's
    first line."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
        size = path.stat().st_size
    except OSError as err:
        return short_reason(err)
    found, expected = sniff_format(head), _EXPECTED.get(path.suffix.lower())
    if found == "empty":
        return "the file is empty (0 bytes)"
    if expected and found not in (expected, "unknown"):
        kind = "a text file" if found == "text" else f"a {found} file"
        return f"it is not a {expected} file, it looks like {kind} ({size} bytes)"
    if isinstance(exc, MemoryError):
        return f"not enough memory to read it ({size} bytes on disk)"
    if expected and found == "unknown":
        return f"it is not a valid {expected} file ({short_reason(exc)})"
    return f"corrupt or truncated {expected or 'image'} file ({short_reason(exc)})"


def _read(path: Path) -> np.ndarray:
    suf = path.suffix.lower()
    if suf in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    if suf == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise InputError("it holds Python objects (a pickle), which are never loaded "
                                 "from image files") from None
            raise
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (TIFF, ``.npy``, PNG / JPEG / BMP / GIF).

    Parameters
    ----------
    path : path-like
        The file.

    Returns
    -------
    np.ndarray
        The pixels as stored (no checks of content: see
        :func:`flowseg.engine.inference.checks.check_image`).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    FileReadError
        If it cannot be read (any reader error: corrupt, truncated, empty, wrong format,
        not an array); the message names the file and says why.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file: {p}")
    if p.is_dir():
        raise FileReadError(p, "it is a folder, not an image file")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise FileReadError(p, f"unsupported image type {p.suffix!r} (use "
                               f"{', '.join(IMAGE_SUFFIXES)})")
    try:
        arr = _read(p)
    except InputError as exc:
        raise FileReadError(p, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any reader failure (MemoryError too) is a bad file
        raise FileReadError(p, _why(p, exc)) from None
    if not isinstance(arr, np.ndarray) or arr.dtype == object:
        raise FileReadError(p, "it does not hold a numeric image")
    if arr.size == 0:
        raise FileReadError(p, f"it holds no pixels (shape {arr.shape})")
    return arr


def write_labels(path: str | os.PathLike, masks: np.ndarray, fmt: str | None = None) -> Path:
    """Write instance labels atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : path-like
        Destination; a suffix other than ``fmt``'s (``.tif`` / ``.tiff``, ``.png``,
        ``.npy``) is replaced (or added).
    masks : np.ndarray
        2D or 3D non-negative integer labels.
    fmt : {"tif", "png", "npy"}, optional
        ``tif``: uint16 (uint32 beyond 65535 objects), zlib; ``png``: 16-bit, 2D only;
        ``npy``: int32.  Default: from the suffix of ``path``.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    InputError
        Labels that do not fit the format (3D or > 65535 objects as PNG, negative ids,
        not integers), or an unknown format.
    """
    path = Path(path)
    if fmt is None:
        fmt = path.suffix.lower().lstrip(".").replace("tiff", "tif")
    if fmt not in LABEL_FORMATS:
        raise InputError(f"label files are written as {', '.join(LABEL_FORMATS)}, not "
                         f"{fmt!r}")
    same = path.suffix.lower().lstrip(".").replace("tiff", "tif") == fmt
    out = path if same else path.with_suffix(f".{fmt}")
    m = np.asarray(masks)
    if m.dtype.kind not in "iub" or m.ndim not in (2, 3):
        raise InputError(f"labels must be a 2D or 3D integer array, got {m.dtype} with shape "
                         f"{m.shape}")
    if m.size == 0:
        raise InputError(f"labels are empty (shape {m.shape}): nothing to write")
    nmax = int(m.max())
    if int(m.min()) < 0:
        raise InputError("labels hold negative values; they cannot be written as a label "
                         "image")
    if fmt == "png" and (m.ndim != 2 or nmax > 65535):
        raise InputError(f"PNG holds 2D label images with at most 65535 objects; these labels "
                         f"are {m.ndim}D with {nmax} objects: save as .tif")
    with atomic_path(out) as tmp:
        if fmt == "tif":
            import tifffile

            tifffile.imwrite(tmp, m.astype(np.uint16 if nmax <= 65535 else np.uint32),
                             compression="zlib")
        elif fmt == "npy":
            np.save(tmp, m.astype(np.int32))
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, m.astype(np.uint16), extension=".png")
    return out
