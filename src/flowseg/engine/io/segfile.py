"""Cellpose ``_seg.npy`` files and ImageJ ROI sets, read and written safely.

A Cellpose ``_seg.npy`` file is a Python dict saved with ``np.save(..., allow_pickle=True)``.
Loading it with ``np.load(allow_pickle=True)`` would run any code hidden in the pickle, so
:func:`read_seg` parses the ``.npy`` header itself and unpickles the payload with a
restricted unpickler that only rebuilds plain containers and numpy arrays; anything else
(``os.system``, ``builtins.eval``, ...) is refused with :class:`UnsafeFileError`.

The layout written by :func:`write_seg` follows Cellpose 3 (``io.masks_flows_to_seg``)::

    masks, outlines      uint16 (uint32 when needed) label images
    chan_choose          [cytoplasm, nucleus] channel numbers (0 = grey, 1 = R, ...)
    ismanual             bool per mask
    filename             image file name
    diameter             diameter in pixels
    flows                [flow colour (…,3) uint8 with a leading 1 in 2D,
                          cell probability uint8, dz uint8 (3D) or zeros (2D),
                          styles or [], dP and cellprob stacked (ndim+1, …) float32]

ImageJ ROI export lives in :mod:`flowseg.engine.io.roi` and is re-exported here.
This module is engine-side: numpy, scipy and scikit-image only.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from ..errors import FileReadError, InputError
from .roi import masks_to_rois, write_imagej_rois

__all__ = [
    "UnsafeFileError",
    "read_seg",
    "write_seg",
    "seg_flows",
    "masks_to_outlines",
    "flow_to_rgb",
    "masks_to_rois",
    "write_imagej_rois",
]

PathLike = Union[str, os.PathLike]

#: The only globals a ``_seg.npy`` pickle may reference: numpy array / dtype / scalar
#: reconstruction and a few harmless builtin containers.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
}


class UnsafeFileError(InputError):
    """A file holds pickled objects that could run code; it was not loaded."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside :data:`_ALLOWED_GLOBALS`."""

    def __init__(self, fh: Any, path: str) -> None:
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        # numpy scalar / dtype classes (numpy.float32, numpy.dtypes.Float32DType, ...)
        if module in ("numpy", "numpy.dtypes"):
            obj = getattr(np, name, None) if module == "numpy" else getattr(np.dtypes, name, None)
            if isinstance(obj, type) and (issubclass(obj, np.generic) or issubclass(obj, np.dtype)):
                return obj
        raise UnsafeFileError(
            f"refusing to load {self._path!r}: it contains a pickled reference to "
            f"'{module}.{name}', which could execute code. Only numpy arrays, numbers, "
            "strings, lists and dicts are accepted in a _seg.npy file.")

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102
        raise UnsafeFileError(f"refusing to load {self._path!r}: unsupported persistent id")


def _read_npy_safely(path: str) -> Any:
    """Read a ``.npy`` file; object arrays go through the restricted unpickler."""
    fmt = np.lib.format
    with open(path, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
        except ValueError as exc:
            raise FileReadError(path, f"it is not a .npy file ({exc})") from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            else:
                shape, fortran, dtype = fmt._read_array_header(fh, version)  # (3, 0)
            if not dtype.hasobject:
                fh.seek(0)
                return np.load(fh, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - bad header, truncated data: one message
            raise FileReadError(path, f"corrupt or truncated .npy file ({exc})") from None
        try:
            arr = _RestrictedUnpickler(fh, path).load()
        except UnsafeFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - any corrupt pickle stream: one message
            raise FileReadError(path, f"cannot read its pickled content ({exc})") from None
    return arr


def read_seg(path: PathLike) -> dict:
    """Read a Cellpose ``_seg.npy`` file without executing pickled code.

    Parameters
    ----------
    path : str or PathLike
        The ``*_seg.npy`` file (written by Cellpose 1-4 or by :func:`write_seg`).

    Returns
    -------
    dict
        The stored dict; ``"masks"`` is always present as an integer array, ``"outlines"``
        is filled in from the masks when missing.

    Raises
    ------
    UnsafeFileError
        If the pickle references anything but numpy arrays and builtin containers.
    ValueError
        If the file is not a ``.npy`` file holding a dict with ``"masks"``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such _seg.npy file: {path!r}")
    arr = _read_npy_safely(path)
    scalar = isinstance(arr, np.ndarray) and arr.dtype == object and arr.ndim == 0
    dat = arr.item() if scalar else arr
    if not isinstance(dat, dict):
        raise InputError(f"{path!r} is not a Cellpose _seg.npy file: it holds "
                         f"{type(dat).__name__}, expected a dict with 'masks'")
    if "masks" not in dat:
        raise InputError(f"{path!r} is not a Cellpose _seg.npy file: no 'masks' entry "
                         f"(keys: {sorted(map(str, dat))})")
    masks = np.asarray(dat["masks"])
    if masks.dtype.kind not in "iub" or masks.ndim not in (2, 3):
        raise InputError(f"{path!r}: 'masks' must be a 2D or 3D integer array, got "
                         f"{masks.dtype} with shape {masks.shape}")
    dat["masks"] = masks
    if dat.get("outlines") is None or np.shape(dat.get("outlines")) != masks.shape:
        dat["outlines"] = masks_to_outlines(masks)
    return dat


def seg_flows(dat: dict) -> tuple[Optional[np.ndarray], Optional[np.ndarray], Optional[np.ndarray]]:
    """The flows stored in a ``_seg.npy`` dict.

    Returns
    -------
    dP : ndarray or None
        ``(ndim, *masks.shape)`` float32 flow field (network units), if stored.
    cellprob : ndarray or None
        Cell-probability logits ``masks.shape``, if stored.
    rgb : ndarray or None
        Flow colour image ``(*masks.shape, 3)`` uint8, if stored.
    """
    masks = np.asarray(dat["masks"])
    flows = dat.get("flows")
    dP = cellprob = rgb = None
    if not isinstance(flows, (list, tuple)):
        return dP, cellprob, rgb
    if len(flows) > 0 and isinstance(flows[0], np.ndarray) and flows[0].shape[-1:] == (3,):
        c = flows[0]
        if c.ndim == masks.ndim + 2 and c.shape[0] == 1:
            c = c[0]
        if c.shape[:-1] == masks.shape:
            rgb = c.astype(np.uint8, copy=False)
    if len(flows) > 4 and isinstance(flows[4], np.ndarray):
        f = flows[4]
        if f.ndim == masks.ndim + 1 and f.shape[1:] == masks.shape and f.shape[0] == masks.ndim + 1:
            dP = f[:-1].astype(np.float32)
            cellprob = f[-1].astype(np.float32)
    return dP, cellprob, rgb


def masks_to_outlines(masks: np.ndarray) -> np.ndarray:
    """Label image of the one-pixel inner outline of each mask (per plane in 3D)."""
    from skimage.segmentation import find_boundaries

    masks = np.asarray(masks)
    if masks.ndim == 3:
        return np.stack([masks_to_outlines(m) for m in masks])
    return np.where(find_boundaries(masks, mode="inner"), masks, 0).astype(masks.dtype)


def flow_to_rgb(dP: np.ndarray) -> np.ndarray:
    """HSV colouring of a flow field: hue = direction (in the last two axes), value = speed.

    Parameters
    ----------
    dP : ndarray
        ``(ndim, *shape)`` flow field; in 3D the last two components set the hue.

    Returns
    -------
    ndarray
        ``(*shape, 3)`` uint8 RGB image.
    """
    from skimage.color import hsv2rgb

    dP = np.asarray(dP, dtype=np.float32)
    if dP.ndim < 3 or dP.shape[0] not in (2, dP.ndim - 1):
        raise ValueError(f"flow field must have shape (ndim, *shape), got {dP.shape}")
    dy, dx = dP[-2], dP[-1]
    mag = np.sqrt((dP ** 2).sum(0))
    hi = np.percentile(mag, 99) if mag.size else 0.0
    val = np.clip(mag / hi, 0, 1) if hi > 0 else np.zeros_like(mag)
    hue = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi)
    hsv = np.stack([hue, np.ones_like(hue), val], -1)
    return (hsv2rgb(hsv) * 255).round().astype(np.uint8)


def _cellprob_uint8(cellprob: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(cellprob, [1, 99])
    scaled = (cellprob - lo) / (hi - lo) if hi > lo else np.zeros_like(cellprob)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def write_seg(
    path: PathLike,
    masks: np.ndarray,
    *,
    flows: Optional[np.ndarray] = None,
    cellprob: Optional[np.ndarray] = None,
    diameter: float = 30.0,
    channels: Sequence[int] = (0, 0),
    filename: str = "",
    ismanual: Optional[np.ndarray] = None,
    image: Optional[np.ndarray] = None,
) -> str:
    """Write masks (and optionally flows) as a Cellpose-compatible ``_seg.npy`` file.

    Parameters
    ----------
    path : str or PathLike
        Output path; ``_seg.npy`` is appended when the name does not end with it.
    masks : ndarray
        2D or 3D integer label image.
    flows : ndarray, optional
        ``(ndim, *masks.shape)`` flow field in network units.
    cellprob : ndarray, optional
        Cell-probability logits, ``masks.shape``.
    diameter : float
        Cell diameter used, in pixels.
    channels : sequence of int
        Cellpose ``[cytoplasm, nucleus]`` channel numbers.
    filename : str
        Name of the image file the masks belong to.
    ismanual : ndarray, optional
        Bool per mask telling which masks were drawn by hand.
    image : ndarray, optional
        The image itself, stored as ``"img"`` (the Cellpose GUI uses it when ``filename``
        cannot be found).

    Returns
    -------
    str
        The path written.
    """
    masks = np.asarray(masks)
    if masks.ndim not in (2, 3) or masks.dtype.kind not in "iub":
        raise ValueError(f"masks must be a 2D or 3D integer array, got {masks.dtype} "
                         f"with shape {masks.shape}")
    if masks.min(initial=0) < 0:
        raise ValueError("masks must not contain negative labels")
    path = os.fspath(path)
    if not path.endswith("_seg.npy"):
        stem = os.path.splitext(path)[0] if path.endswith(".npy") else path
        path = stem + "_seg.npy"
    nmax = int(masks.max(initial=0))
    dtype = np.uint16 if nmax < 2 ** 16 - 1 else np.uint32
    outlines = masks_to_outlines(masks)
    if flows is not None:
        flows = np.asarray(flows, np.float32)
        if masks.ndim == 3 and flows.shape == (2, *masks.shape):  # slice-by-slice flows
            flows = np.concatenate([np.zeros((1, *masks.shape), np.float32), flows], 0)
        if flows.shape != (masks.ndim, *masks.shape):
            raise ValueError(f"flows must have shape {(masks.ndim, *masks.shape)}, "
                             f"got {flows.shape}")
    if cellprob is not None:
        cellprob = np.asarray(cellprob, np.float32)
        if cellprob.shape != masks.shape:
            raise ValueError(f"cellprob must have shape {masks.shape}, got {cellprob.shape}")
    flow_list: list = []
    if flows is not None:
        cp = cellprob if cellprob is not None else np.zeros(masks.shape, np.float32)
        rgb = flow_to_rgb(flows)
        if masks.ndim == 2:
            flow_list = [rgb[None], _cellprob_uint8(cp)[None],
                         np.zeros((1, *masks.shape, 3), np.uint8), []]
        else:
            dz = np.clip(flows[0] / 10 * 127 + 127, 0, 255).astype(np.uint8)
            flow_list = [rgb, _cellprob_uint8(cp), dz, []]
        flow_list.append(np.concatenate([flows, cp[None]], 0))
    if ismanual is None:
        ismanual = np.zeros(nmax, bool)
    dat = {
        "outlines": outlines.astype(dtype),
        "masks": masks.astype(dtype),
        "chan_choose": [int(c) for c in channels],
        "ismanual": np.asarray(ismanual, bool),
        "filename": str(filename),
        "flows": flow_list,
        "diameter": float(diameter),
    }
    if image is not None:
        dat["img"] = np.asarray(image)
    np.save(path, dat, allow_pickle=True)
    return path
