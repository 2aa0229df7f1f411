"""Voxel size of a volume file, and the anisotropy (z step / pixel size) it implies.

:func:`read_voxel_size` reads the ``(z, y, x)`` spacing, in micrometres, that a file states:

* **OME-TIFF**: the first image's ``Pixels`` element (``PhysicalSizeX/Y/Z`` with their
  ``PhysicalSize*Unit``, default µm as in the OME schema), from ``tifffile``'s
  ``ome_metadata``;
* **ImageJ TIFF** (hyperstacks): ``spacing`` (the z step) and ``unit`` of the ImageJ
  description, and the pixel size ``1 / XResolution``, ``1 / YResolution`` in that unit;
* **OME-Zarr** (NGFF 0.4 and 0.5, and a bioformats2raw container's first image): the
  ``multiscales`` axes (names and units) and the ``scale`` of the first dataset (times the
  multiscale-wide ``scale``, if any).

It is conservative -- a wrong anisotropy is worse than none -- and says None (unknown)
whenever the file does not state all three sizes in a known length unit: a 2D image (no z
axis longer than 1), no z step (ImageJ omits ``spacing`` when the z step is 1 unit: such a
file gives None too), a unit that is not a length (``pixel``, none at all), the TIFF default
resolution (1 / 1, or 72 per inch or per no unit), values that are not finite and positive,
or an OME-TIFF whose ImageJ description disagrees with its OME metadata.  Odd or damaged
metadata never raises: it gives None.

:func:`anisotropy_from_voxel` turns a voxel size into ``z / mean(y, x)``; pixels that are
not square (y and x more than 1 % apart) still give one number from their mean, and
:func:`format_voxel` then shows both.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["MAX_ANISOTROPY", "anisotropy_from_voxel", "format_voxel", "read_voxel_size"]

#: Anisotropies outside ``[1 / MAX_ANISOTROPY, MAX_ANISOTROPY]`` are taken for wrong
#: metadata (e.g. a z step in nm labelled µm): :func:`anisotropy_from_voxel` gives None.
MAX_ANISOTROPY = 100.0
#: y and x sizes further apart than this (relative) are reported as non-square pixels.
SQUARE_TOLERANCE = 0.01

_MICRONS = {  # length unit (lower case) -> micrometres
    "m": 1e6, "meter": 1e6, "metre": 1e6, "dm": 1e5, "decimeter": 1e5,
    "cm": 1e4, "centimeter": 1e4, "centimetre": 1e4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6,
    "\u00e5": 1e-4, "angstrom": 1e-4,
    "in": 25400.0, "inch": 25400.0,
}
#: plausible voxel edge in µm (0.1 nm .. 10 cm)
_RANGE = (1e-4, 1e5)

Voxel = tuple[float, float, float]


def _microns(value: Any, unit: Any) -> float | None:
    """``value`` in ``unit`` as micrometres; None for no number, an unknown unit or a size
    outside :data:`_RANGE`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(unit, str):
        return None
    unit = re.sub(r"\\u00[bB]5", "\u00b5", unit.strip())  # ImageJ escapes non-ASCII
    factor = _MICRONS.get(unit.lower()) or _MICRONS.get(unit)
    if factor is None or not math.isfinite(v) or v <= 0:
        return None
    um = v * factor
    return um if _RANGE[0] <= um <= _RANGE[1] else None


def _voxel(z: float | None, y: float | None, x: float | None) -> Voxel | None:
    return None if None in (z, y, x) else (float(z), float(y), float(x))


# ------------------------------------------------------------------ TIFF
def _has_z(series: Any) -> bool:
    """Whether a tifffile series has a z axis longer than 1."""
    axes, shape = str(series.axes).upper(), tuple(series.shape)
    return "Z" in axes and int(shape[axes.index("Z")]) > 1


def _resolution(page: Any, name: str) -> float | None:
    """Pixels per unit of a resolution tag (None: missing, zero or malformed)."""
    tag = page.tags.get(name)
    if tag is None:
        return None
    value = tag.value
    if isinstance(value, (tuple, list)) and len(value) == 2:
        num, den = (float(v) for v in value)
        return num / den if den > 0 and num > 0 else None
    value = float(value)
    return value if value > 0 else None


def _imagej_voxel(tif: Any) -> Voxel | None:
    meta = tif.imagej_metadata
    if not isinstance(meta, dict) or "spacing" not in meta:
        return None
    unit = meta.get("unit")
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    xres, yres = _resolution(page, "XResolution"), _resolution(page, "YResolution")
    if xres is None or yres is None:
        return None
    default = {1.0} | ({72.0} if not unit or str(unit).lower() in ("inch", "in") else set())
    if xres in default or yres in default:  # the TIFF default: no calibration
        return None
    return _voxel(_microns(meta["spacing"], unit), _microns(1.0 / yres, unit),
                  _microns(1.0 / xres, unit))


def _ome_voxel(xml: str) -> Voxel | None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    pixels = next((e for e in root.iter() if str(e.tag).rpartition("}")[2] == "Pixels"),
                  None)
    if pixels is None:
        return None
    a = pixels.attrib
    try:
        if int(a.get("SizeZ", "1")) < 2:
            return None
    except ValueError:
        return None
    size = {k: _microns(a.get(f"PhysicalSize{k}"), a.get(f"PhysicalSize{k}Unit", "\u00b5m"))
            if f"PhysicalSize{k}" in a else None for k in "ZYX"}
    return _voxel(size["Z"], size["Y"], size["X"])


def _close(a: Voxel, b: Voxel, tol: float = SQUARE_TOLERANCE) -> bool:
    return all(abs(p - q) <= tol * max(p, q) for p, q in zip(a, b))


def _tiff_voxel(path: Path) -> Voxel | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        # only ImageJ and OME-TIFF files state a voxel size; both are known from the first
        # page, while listing the series of a long plain TIFF reads every page (seconds)
        if not (tif.is_ome or tif.is_imagej):
            return None
        if not tif.series or not _has_z(tif.series[0]):
            return None
        ome = _ome_voxel(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else None
        ij = _imagej_voxel(tif) if tif.is_imagej else None
    if ome is not None and ij is not None and not _close(ome, ij):
        return None  # two statements that disagree: neither is trusted
    return ome or ij


# ------------------------------------------------------------------ OME-Zarr
def _ngff_attrs(group: Any) -> dict:
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if isinstance(attrs.get("ome"), dict) else attrs


def _scale(transforms: Any) -> list[float] | None:
    for t in transforms or ():
        if isinstance(t, dict) and t.get("type") == "scale" and isinstance(t.get("scale"),
                                                                           list):
            return [float(s) for s in t["scale"]]
    return None


def _zarr_voxel(path: Path) -> Voxel | None:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = _ngff_attrs(group)
    if "multiscales" not in attrs and "bioformats2raw.layout" in attrs:
        group = group["0"]
        attrs = _ngff_attrs(group)
    ms = attrs.get("multiscales")
    if not isinstance(ms, list) or not ms or not isinstance(ms[0], dict):
        return None
    axes, datasets = ms[0].get("axes"), ms[0].get("datasets")
    if not isinstance(axes, list) or not isinstance(datasets, list) or not datasets:
        return None
    if not all(isinstance(ax, dict) for ax in axes):  # NGFF 0.3: names only, no units
        return None
    names = [str(ax.get("name", "")).lower() for ax in axes]
    scale = _scale(datasets[0].get("coordinateTransformations"))
    if scale is None or len(scale) != len(names) or not {"z", "y", "x"} <= set(names):
        return None
    outer = _scale(ms[0].get("coordinateTransformations"))
    if outer is not None:
        if len(outer) != len(scale):
            return None
        scale = [s * o for s, o in zip(scale, outer)]
    shape = tuple(group[str(datasets[0]["path"])].shape)
    if len(shape) != len(names) or shape[names.index("z")] < 2:
        return None
    size = {k: _microns(scale[names.index(k)], axes[names.index(k)].get("unit"))
            for k in "zyx"}
    return _voxel(size["z"], size["y"], size["x"])


# ------------------------------------------------------------------ public
def read_voxel_size(path: str | os.PathLike) -> Voxel | None:
    """The ``(z, y, x)`` voxel size a volume file states, in micrometres.

    Parameters
    ----------
    path : path-like
        A TIFF (ImageJ or OME-TIFF) file, or an OME-Zarr image group (a folder).

    Returns
    -------
    tuple of float or None
        ``(z, y, x)`` in µm; None when the file does not state all three reliably (see the
        module docstring: 2D images, no z step, no length unit, default resolution tags,
        disagreeing metadata), for other file types, and for any file that cannot be read.
        Never raises.
    """
    try:
        p = Path(path).expanduser()
        if p.is_dir():
            return _zarr_voxel(p)
        if p.is_file() and p.suffix.lower() in (".tif", ".tiff"):
            return _tiff_voxel(p)
    except Exception:  # noqa: BLE001 - odd metadata means "unknown", never a failed run
        return None
    return None


def anisotropy_from_voxel(voxel: Voxel | None) -> float | None:
    """The anisotropy ``z / mean(y, x)`` of a voxel size.

    Parameters
    ----------
    voxel : tuple of float or None
        ``(z, y, x)`` in one unit (:func:`read_voxel_size`).

    Returns
    -------
    float or None
        The z step over the in-plane pixel size.  Non-square pixels (y and x apart by more
        than :data:`SQUARE_TOLERANCE`) use the mean of the two, as the network rescales y
        and x alike (:func:`format_voxel` shows both).  None for no voxel size, sizes that
        are not finite and positive, or a ratio beyond :data:`MAX_ANISOTROPY` either way.
    """
    if voxel is None:
        return None
    try:
        z, y, x = (float(v) for v in voxel)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v > 0 for v in (z, y, x)):
        return None
    ratio = z / ((y + x) / 2.0)
    return ratio if 1.0 / MAX_ANISOTROPY <= ratio <= MAX_ANISOTROPY else None


def format_voxel(voxel: Voxel) -> str:
    """A voxel size in words: ``"z 1 um, xy 0.31 um"`` (``"z 1 um, y 0.3 um, x 0.32 um
    (xy mean 0.31 um)"`` for non-square pixels)."""
    z, y, x = (float(v) for v in voxel)
    if abs(y - x) <= SQUARE_TOLERANCE * max(y, x):
        return f"z {z:.4g} um, xy {(y + x) / 2:.4g} um"
    return f"z {z:.4g} um, y {y:.4g} um, x {x:.4g} um (xy mean {(y + x) / 2:.4g} um)"
