"""Resolution levels of an OME-Zarr label image, matching the image's own pyramid.

A whole-slide image comes with downsampled levels so viewers can show it without reading
every pixel; its label image needs the same levels for the same reason (napari reads only
the level it draws).  Level ``k`` of the labels takes every ``f``-th pixel of level 0
(nearest neighbour: ids stay ids), where ``f`` is the image's own integer scale factor of
level ``k`` along each axis, and carries that level's coordinate transformations, so the
label pyramid lines up with the image pyramid.  The levels are computed by the dask
workers, chunk by chunk.
"""

from __future__ import annotations

from typing import Any

from .ome import OmeImage, array_options, label_transforms, set_label_datasets

__all__ = ["level_factors", "write_label_levels"]


def _scale(transforms: tuple[dict, ...], n: int) -> list[float] | None:
    for t in transforms:
        if t.get("type") == "scale" and isinstance(t.get("scale"), list) and \
                len(t["scale"]) == n:
            return [float(v) for v in t["scale"]]
    return None


def level_factors(ome: OmeImage) -> list[tuple[int, ...]]:
    """Integer downsampling factor per label axis of each image level after the first.

    Stops at the first level whose factors are not whole numbers (or that has no scale).
    """
    n = len(ome.axes)
    keep = [k for k, a in enumerate(ome.axes) if a != "c"]
    s0 = _scale(ome.levels[0][1], n) if ome.levels else None
    out: list[tuple[int, ...]] = []
    if s0 is None or any(s0[k] <= 0 for k in keep):
        return out
    for _, transforms in ome.levels[1:]:
        s = _scale(transforms, n)
        if s is None:
            break
        f = [s[k] / s0[k] for k in keep]
        fi = tuple(round(v) for v in f)
        if any(abs(v - r) > 1e-3 or r < 1 for v, r in zip(f, fi)):
            break
        out.append(fi)
    return out


def write_label_levels(client: Any, group: Any, level0: Any, ome: OmeImage) -> list[str]:
    """Add the image's lower-resolution levels to a label image; returns all level paths.

    Parameters
    ----------
    client : distributed.Client
        Computes the levels.
    group : zarr.Group
        The label image group (``labels/<name>``), writable, holding level ``0``.
    level0 : zarr.Array
        Its full-resolution labels.
    ome : OmeImage
        The image's metadata (levels and transformations).
    """
    import dask.array as da

    factors = level_factors(ome)
    paths = ["0"]
    datasets = [{"path": "0", "coordinateTransformations": label_transforms(ome)}]
    src = da.from_zarr(level0)
    for k, f in enumerate(factors, start=1):
        lvl = src[tuple(slice(None, None, v) for v in f)]
        chunks = tuple(min(c, s) for c, s in zip(level0.chunks, lvl.shape))
        arr = group.create_array(str(k), shape=lvl.shape, chunks=chunks, dtype="int32",
                                 fill_value=0, overwrite=True, **array_options(ome))
        client.compute(da.store(lvl.rechunk(chunks), arr, lock=False, compute=False)).result()
        paths.append(str(k))
        datasets.append({"path": str(k), "coordinateTransformations":
                         label_transforms(ome, ome.levels[k][1])})
    if len(paths) > 1:
        set_label_datasets(group, ome, datasets)
    return paths
