"""Inputs of blockwise segmentation: arrays, zarr / OME-Zarr paths and (big) TIFF files.

:func:`open_source` turns what the user gave into a :class:`Source`: an array-like that can
be sliced region by region without loading the whole image (numpy, dask, a zarr array, or a
:class:`TiffArray` reading through tifffile's zarr interface), plus a :class:`Layout` saying
which axes are spatial, which holds channels and which are fixed at index 0.  Regions are
returned in the engine's canonical order ``(Z, Y, X[, C])`` (as
:func:`flowseg.engine.inference.transforms.to_channels_last` would).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..inference.prepare import spatial_ndim
from ..inference.transforms import find_channel_axis
from .ome import OmeImage, read_ome

__all__ = ["TIFF_SUFFIXES", "Layout", "Source", "TiffArray", "is_zarr_path", "open_source"]

TIFF_SUFFIXES = (".tif", ".tiff")
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
_AXIS_LETTERS = {"t": "t", "c": "c", "s": "c", "z": "z", "y": "y", "x": "x"}


def require_zarr() -> Any:
    """The zarr module (version 3 or later), or an ImportError saying how to get it."""
    try:
        import zarr
    except ImportError:
        raise ImportError("blockwise segmentation needs zarr 3 (Python >= 3.11): "
                          "pip install 'zarr>=3'") from None
    if int(str(zarr.__version__).split(".")[0]) < 3:
        raise ImportError(f"blockwise segmentation needs zarr 3, found {zarr.__version__}: "
                          "pip install -U 'zarr>=3'")
    return zarr


@dataclass(frozen=True)
class Layout:
    """Roles of the axes of a raw array.

    Attributes
    ----------
    raw_shape : tuple of int
        Shape of the raw array.
    spatial_axes : tuple of int
        Raw axes of ``(Z,) Y, X`` in that order.
    channel_axis : int or None
        Raw channel axis.
    fixed_axes : tuple of int
        Raw axes of length 1 that are dropped (e.g. OME's ``t``).
    """

    raw_shape: tuple[int, ...]
    spatial_axes: tuple[int, ...]
    channel_axis: int | None = None
    fixed_axes: tuple[int, ...] = ()

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes in canonical order."""
        return tuple(self.raw_shape[a] for a in self.spatial_axes)

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.spatial_axes)

    @property
    def n_channels(self) -> int:
        """Length of the channel axis (1 without one)."""
        return 1 if self.channel_axis is None else int(self.raw_shape[self.channel_axis])

    def raw_index(self, spatial: Sequence[slice]) -> tuple:
        """Index of the raw array selecting ``spatial`` (canonical order), all channels."""
        idx: list[Any] = [slice(None)] * len(self.raw_shape)
        for a in self.fixed_axes:
            idx[a] = 0
        for a, s in zip(self.spatial_axes, spatial):
            idx[a] = s
        return tuple(idx)

    def to_canonical(self, region: np.ndarray) -> np.ndarray:
        """Reorder a region read with :meth:`raw_index` to ``(Z, Y, X[, C])``."""
        kept = [a for a in range(len(self.raw_shape)) if a not in self.fixed_axes]
        order = [kept.index(a) for a in self.spatial_axes]
        if self.channel_axis is not None:
            order.append(kept.index(self.channel_axis))
        return np.transpose(np.asarray(region), order)


@dataclass
class Source:
    """A sliceable image with its layout.

    Attributes
    ----------
    array : array-like
        numpy, dask or zarr array, or a :class:`TiffArray`.
    layout : Layout
    kind : str
        ``"numpy"``, ``"dask"``, ``"zarr"`` or ``"tiff"``.
    name : str
        For messages: the path, or the kind of array.
    ome : OmeImage or None
        OME-Zarr metadata of the image group.
    """

    array: Any
    layout: Layout
    kind: str
    name: str
    ome: OmeImage | None = None

    def read(self, spatial: Sequence[slice]) -> np.ndarray:
        """The region ``spatial`` (canonical order) as a numpy array ``(Z, Y, X[, C])``."""
        return self.layout.to_canonical(np.asarray(self.array[self.layout.raw_index(spatial)]))


class TiffArray:
    """A TIFF image read region by region through tifffile's zarr interface.

    Picklable (only the path travels); each process opens the file on first use.

    Parameters
    ----------
    path : str or Path
    series, level : int
        TIFF series and pyramid level.
    """

    def __init__(self, path: str | os.PathLike, series: int = 0, level: int = 0) -> None:
        import tifffile

        self.path = str(path)
        self.series = int(series)
        self.level = int(level)
        with tifffile.TiffFile(self.path) as tif:
            if not 0 <= self.series < len(tif.series):
                raise ValueError(f"{self.path}: no series {series} (it has {len(tif.series)})")
            s = tif.series[self.series]
            lev = s.levels[self.level] if self.level < len(s.levels) else None
            if lev is None:
                raise ValueError(f"{self.path}: series {series} has no level {level}")
            self.shape = tuple(int(v) for v in lev.shape)
            self.dtype = np.dtype(lev.dtype)
            self.axes = str(lev.axes)
        self._array: Any = None

    @property
    def ndim(self) -> int:
        """Number of axes."""
        return len(self.shape)

    def _open(self) -> Any:
        if self._array is None:
            import tifffile
            zarr = require_zarr()

            store = tifffile.imread(self.path, aszarr=True, series=self.series,
                                    level=self.level)
            self._array = zarr.open(store, mode="r")
        return self._array

    def __getitem__(self, idx: Any) -> np.ndarray:
        return np.asarray(self._open()[idx])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"TiffArray({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def is_zarr_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr array or group (a folder with zarr metadata)."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in _ZARR_MARKERS)


def _open_zarr(path: Path) -> tuple[Any, OmeImage | None]:
    zarr = require_zarr()

    node = zarr.open(str(path), mode="r")
    if hasattr(node, "shape"):
        return node, None
    ome = read_ome(node)
    if ome is not None:
        group = zarr.open_group(ome.path, mode="r")
        return group[ome.dataset], ome
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) == 1:
        return node[arrays[0]], None
    raise ValueError(f"{path} is a zarr group without OME-Zarr metadata and with "
                     f"{len(arrays)} arrays ({', '.join(arrays) or 'none'}): give the path "
                     "of one array, e.g. " + str(path / (arrays[0] if arrays else "NAME")))


def _named_axes(names: Sequence[str], shape: Sequence[int]) -> dict | None:
    """channel / z / fixed axes from axis names, or None if the names are not usable."""
    roles = [_AXIS_LETTERS.get(n.lower()) for n in names]
    if any(r is None and s > 1 for r, s in zip(roles, shape)):
        return None
    out: dict[str, Any] = {"channel_axis": None, "z_axis": None, "fixed": []}
    for k, (r, s) in enumerate(zip(roles, shape)):
        if r == "c":
            out["channel_axis"] = k
        elif r == "z" and s > 1:
            out["z_axis"] = k
        elif r == "z" or r is None or r == "t":
            if s != 1:
                raise ValueError(f"the image has {s} time points (axes {''.join(names)}, "
                                 f"shape {tuple(shape)}): segment one at a time, e.g. "
                                 "pass dask.array.from_zarr(...)[t]")
            out["fixed"].append(k)
    return out


def _layout(shape: tuple[int, ...], channel_axis: int | None, z_axis: int | None,
            fixed: Sequence[int], do_3d: bool, stitch_threshold: float) -> Layout:
    fixed = sorted(int(a) for a in fixed)
    kept = [a for a in range(len(shape)) if a not in fixed]
    sub = tuple(shape[a] for a in kept)

    def to_sub(a: int | None, what: str) -> int | None:
        if a is None:
            return None
        if not -len(shape) <= int(a) < len(shape):
            raise ValueError(f"{what}={a} is out of range for an image of shape {shape}")
        a = int(a) % len(shape)
        if a in fixed:
            raise ValueError(f"{what}={a} names a dropped length-1 axis of shape {shape}")
        return kept.index(a)

    c_sub, z_sub = to_sub(channel_axis, "channel_axis"), to_sub(z_axis, "z_axis")
    sdim = spatial_ndim(SimpleNamespace(ndim=len(sub), shape=sub), c_sub, z_sub, do_3d,
                         stitch_threshold)
    if c_sub is None:
        c_sub = find_channel_axis(sub, sdim)
    if c_sub is not None and len(sub) != sdim + 1:
        raise ValueError(f"image of shape {sub} with channel_axis={channel_axis} has "
                         f"{len(sub) - 1} non-channel axes; expected {sdim}")
    rest = [a for a in range(len(sub)) if a != c_sub]
    if sdim == 3 and z_sub is not None:
        if z_sub == c_sub:
            raise ValueError(f"z_axis={z_axis} is the channel axis")
        rest = [z_sub] + [a for a in rest if a != z_sub]
    elif sdim == 2 and z_sub is not None:
        raise ValueError("z_axis given for a 2D image; pass do_3d=True or a stack")
    return Layout(raw_shape=tuple(int(s) for s in shape),
                  spatial_axes=tuple(kept[a] for a in rest),
                  channel_axis=None if c_sub is None else kept[c_sub],
                  fixed_axes=tuple(fixed))


def open_source(data: Any, *, channel_axis: int | None = None, z_axis: int | None = None,
                do_3d: bool = False, stitch_threshold: float = 0.0) -> Source:
    """Wrap ``data`` for blockwise reading.

    Parameters
    ----------
    data : np.ndarray, dask array, zarr array, str or Path
        An array, or the path of a zarr array / group, an OME-Zarr image or a TIFF file.
    channel_axis, z_axis : int, optional
        Raw axes of channels / z; for OME-Zarr and TIFF files taken from the file's axis
        names when not given.
    do_3d, stitch_threshold
        As in :meth:`flowseg.Model.segment` (they decide whether a 3-axis image is a volume).

    Raises
    ------
    FileNotFoundError, ValueError
        Missing path, unsupported file, non-numeric data, wrong number of axes.
    """
    names: Sequence[str] | None = None
    ome = None
    if isinstance(data, (str, os.PathLike)):
        path = Path(data).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
        if path.is_dir():
            if not is_zarr_path(path):
                raise ValueError(f"{path} is a folder but not a zarr array or group "
                                 "(no .zarray, .zgroup or zarr.json in it)")
            array, ome = _open_zarr(path)
            kind, name = "zarr", str(path)
            names = ome.axes if ome is not None else None
        elif path.suffix.lower() in TIFF_SUFFIXES:
            array = TiffArray(path)
            kind, name, names = "tiff", str(path), array.axes
        else:
            raise ValueError(f"{path}: blockwise input must be a zarr / OME-Zarr folder or a "
                             f"TIFF file, got {path.suffix or 'no suffix'!r}")
    else:
        array = data
        mod = type(data).__module__.split(".")[0]
        kind = {"dask": "dask", "zarr": "zarr"}.get(mod, "numpy")
        if kind == "numpy":
            array = np.asarray(data)
        name = f"{kind} array"
    shape = tuple(int(s) for s in array.shape)
    dtype = np.dtype(array.dtype)
    numeric = np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)
    if not numeric or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"{name}: image must be real-valued numbers, got dtype {dtype}")
    fixed: list[int] = []
    if names is not None:
        roles = _named_axes(names, shape)
        if roles is not None:
            fixed = roles["fixed"]
            channel_axis = roles["channel_axis"] if channel_axis is None else channel_axis
            if z_axis is None and roles["z_axis"] is not None:
                z_axis = roles["z_axis"]
    try:
        layout = _layout(shape, channel_axis, z_axis, fixed, do_3d, stitch_threshold)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if min(layout.spatial_shape) < 1:
        raise ValueError(f"{name}: image is empty (shape {shape})")
    return Source(array=array, layout=layout, kind=kind, name=name, ome=ome)
