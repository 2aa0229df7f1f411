"""OME-Zarr (OME-NGFF 0.4 / 0.5) metadata: read an image's axes, write a ``labels/`` image.

Written by hand from the NGFF specification (https://ngff.openmicroscopy.org): an image
group holds ``multiscales`` metadata (axes, datasets = resolution levels, scale transforms);
label images live in ``<image>/labels/<name>/`` as multiscale integer images with an
``image-label`` block, and ``<image>/labels`` lists them.  NGFF 0.4 uses zarr format 2
(metadata in ``.zattrs``, chunk keys separated by ``/``); 0.5 uses zarr format 3 with the
metadata under an ``"ome"`` attribute.  Labels are written in the image's own format.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OmeImage",
    "array_options",
    "create_label_array",
    "label_exists",
    "label_transforms",
    "read_ome",
    "remove_label",
    "set_label_datasets",
]


@dataclass(frozen=True)
class OmeImage:
    """The parts of an OME-Zarr image this package uses.

    Attributes
    ----------
    path : str
        Path of the image group.
    version : str
        NGFF version (``"0.4"``, ``"0.5"``, ...).
    zarr_format : int
        2 or 3.
    axes : tuple of str
        Axis names of the full-resolution array, e.g. ``("c", "z", "y", "x")``.
    dataset : str
        Path of the full-resolution array inside the group.
    transforms : tuple of dict
        Coordinate transformations of that dataset (scale, translation).
    levels : tuple of (str, tuple of dict)
        Every resolution level: dataset path and its transformations (level 0 first).
    """

    path: str
    version: str
    zarr_format: int
    axes: tuple[str, ...]
    dataset: str
    transforms: tuple[dict, ...] = ()
    levels: tuple[tuple[str, tuple[dict, ...]], ...] = ()


def _ome_attrs(group: Any) -> tuple[dict, str]:
    """``(attributes holding the NGFF keys, version)`` of a group."""
    attrs = dict(group.attrs)
    if isinstance(attrs.get("ome"), dict):  # NGFF >= 0.5
        ome = dict(attrs["ome"])
        return ome, str(ome.get("version", "0.5"))
    ms = attrs.get("multiscales")
    version = "0.4"
    if isinstance(ms, list) and ms and isinstance(ms[0], dict):
        version = str(ms[0].get("version", version))
    return attrs, version


def _axis_name(ax: Any) -> str:
    return str(ax.get("name") if isinstance(ax, dict) else ax).lower()


def read_ome(group: Any) -> OmeImage | None:
    """The OME-Zarr image of a zarr group, or None if it has no ``multiscales`` metadata.

    A bioformats2raw container (``bioformats2raw.layout``) yields its first image (``0``).
    """
    attrs, version = _ome_attrs(group)
    if "bioformats2raw.layout" in attrs and "multiscales" not in attrs:
        try:
            return read_ome(group["0"])
        except KeyError:
            return None
    ms = attrs.get("multiscales")
    if not isinstance(ms, list) or not ms:
        return None
    m0 = ms[0]
    datasets = m0.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        raise ValueError(f"{_path(group)}: OME-Zarr multiscales metadata without datasets")
    level0 = datasets[0]
    arr = group[level0["path"]]
    axes = m0.get("axes")
    names = tuple(_axis_name(a) for a in axes) if axes else \
        ("t", "c", "z", "y", "x")[-arr.ndim:]  # NGFF 0.1/0.2: always 5D tczyx
    if len(names) != arr.ndim:
        raise ValueError(f"{_path(group)}: OME-Zarr axes {names} do not match the "
                         f"{arr.ndim}-D array {level0['path']!r}")
    levels = tuple((str(d["path"]), tuple(dict(t) for t in d.get("coordinateTransformations",
                                                                   [])))
                   for d in datasets if "path" in d)
    return OmeImage(path=_path(group), version=version,
                    zarr_format=int(group.metadata.zarr_format), axes=names,
                    dataset=levels[0][0], transforms=levels[0][1], levels=levels)


def _path(node: Any) -> str:
    store = node.store
    root = getattr(store, "root", None)
    base = str(root) if root is not None else str(store)
    return base if not node.path else f"{base}/{node.path}"


def _label_axes(ome: OmeImage) -> list[int]:
    """Axes of the image kept in its label image (all but channels)."""
    return [k for k, a in enumerate(ome.axes) if a != "c"]


def _axes_meta(ome: OmeImage) -> list[dict]:
    types = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    out = []
    for k in _label_axes(ome):
        a = ome.axes[k]
        out.append({"name": a, "type": types[a]} if a in types else {"name": a})
    return out


def label_transforms(ome: OmeImage, transforms: tuple[dict, ...] | None = None
                     ) -> list[dict]:
    """Coordinate transformations of the label image (level 0, or the given ones)."""
    keep = _label_axes(ome)
    out = []
    for t in ome.transforms if transforms is None else transforms:
        key = t.get("type")
        if key in ("scale", "translation") and isinstance(t.get(key), list):
            out.append({"type": key, key: [t[key][k] for k in keep]})
    return out or [{"type": "scale", "scale": [1.0] * len(keep)}]


def label_exists(image_group: Any, name: str) -> bool:
    """Whether ``labels/<name>`` exists in an image group."""
    try:
        image_group[f"labels/{name}"]
        return True
    except KeyError:
        return False


def create_label_array(image_group: Any, ome: OmeImage, name: str, shape: tuple[int, ...],
                       chunks: tuple[int, ...], *, attributes: dict | None = None) -> Any:
    """Create ``labels/<name>`` (one int32 level ``0``) with its NGFF metadata.

    Parameters
    ----------
    image_group : zarr.Group
        The image group, opened writable.
    ome : OmeImage
        Its metadata (:func:`read_ome`).
    name : str
        Label image name.
    shape, chunks : tuple of int
        Shape of the label array (the image's axes without ``c``) and its chunks.
    attributes : dict, optional
        Extra attributes stored on the label array.

    Returns
    -------
    zarr.Array
        The (empty, zero-filled) level-0 array.
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"label name must be a plain name (no '/'), got {name!r}")
    labels = image_group.require_group("labels")
    multiscale = {"name": name, "axes": _axes_meta(ome),
                  "datasets": [{"path": "0", "coordinateTransformations": label_transforms(ome)}]}
    image_label = {"version": ome.version, "source": {"image": "../../"}}
    kw = array_options(ome)
    group = labels.create_group(name, overwrite=True)
    if ome.zarr_format == 2:
        multiscale["version"] = ome.version
        group.attrs.update({"multiscales": [multiscale], "image-label": image_label})
    else:
        group.attrs.update({"ome": {"version": ome.version, "multiscales": [multiscale],
                                    "image-label": image_label}})
    arr = group.create_array("0", shape=shape, chunks=chunks, dtype="int32", fill_value=0,
                             attributes=dict(attributes or {}), **kw)
    _set_label_list(labels, ome, add=name)
    return arr


def array_options(ome: OmeImage) -> dict[str, Any]:
    """``create_array`` options of a label array in the image's format (NGFF 0.4: chunk
    keys separated by ``/``; zarr 3: dimension names)."""
    if ome.zarr_format == 2:
        return {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return {"dimension_names": [a["name"] for a in _axes_meta(ome)]}


def set_label_datasets(label_group: Any, ome: OmeImage, datasets: list[dict]) -> None:
    """Replace the ``datasets`` (resolution levels) of a label image's metadata."""
    attrs = dict(label_group.attrs)
    holder = dict(attrs["ome"]) if ome.zarr_format == 3 else attrs
    ms = [dict(m) for m in holder["multiscales"]]
    ms[0]["datasets"] = datasets
    holder["multiscales"] = ms
    label_group.attrs.update({"ome": holder} if ome.zarr_format == 3 else holder)


def _set_label_list(labels: Any, ome: OmeImage, *, add: str | None = None,
                    remove: str | None = None) -> None:
    attrs = dict(labels.attrs)
    holder = dict(attrs.get("ome") or {}) if ome.zarr_format == 3 else attrs
    names = [n for n in holder.get("labels", []) if n != remove]
    if add is not None and add not in names:
        names.append(add)
    holder["labels"] = names
    if ome.zarr_format == 3:
        holder.setdefault("version", ome.version)
        labels.attrs.update({"ome": holder})
    else:
        labels.attrs.update({"labels": names})


def remove_label(image_group: Any, ome: OmeImage, name: str) -> None:
    """Delete ``labels/<name>`` and drop it from the ``labels`` list (used on failure)."""
    try:
        labels = image_group["labels"]
    except KeyError:
        return
    with contextlib.suppress(KeyError):
        del labels[name]
    _set_label_list(labels, ome, remove=name)
