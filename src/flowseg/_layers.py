"""Output layers of a segmentation run and how to find them again.

Every layer made by the plugin carries ``layer.metadata["flowseg"]`` with ``role``
(``"masks"``, ``"flows"``, ``"cellprob"``, ``"flow_rgb"``, ``"diameter_preview"``), the
``source`` layer's ``unique_id`` and name, and the run ``params``.  Layers are found through
that tag, never through their names, so renaming a layer does not break anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .engine.io.segfile import flow_to_rgb

__all__ = [
    "META_KEY",
    "find_outputs",
    "flow_vectors",
    "is_blockwise",
    "output_layer_data",
    "role_of",
    "source_of",
    "spatial_placement",
    "tag",
]

META_KEY = "flowseg"
OUTPUT_ROLES = ("masks", "flows", "cellprob", "flow_rgb")


def tag(role: str, source: Any = None, **extra: Any) -> dict:
    """The metadata dict marking a layer as one of ours."""
    meta = {"role": role, **extra}
    if source is not None:
        meta["source"] = str(source.unique_id)
        meta["source_name"] = str(source.name)
    return {META_KEY: meta}


def role_of(layer: Any) -> str | None:
    """The plugin role of ``layer`` or None when it is not one of ours."""
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get(META_KEY)
    return info.get("role") if isinstance(info, dict) else None


def is_blockwise(layer: Any) -> bool:
    """Whether ``layer`` is a block-by-block result (labels in a zarr file, no flows)."""
    info = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    params = info.get("params") if isinstance(info, dict) else None
    return isinstance(params, dict) and bool(params.get("blockwise"))


def source_of(layer: Any) -> str | None:
    """The ``unique_id`` (as str) of the image ``layer`` was made from."""
    info = (getattr(layer, "metadata", None) or {}).get(META_KEY)
    return info.get("source") if isinstance(info, dict) else None


def find_outputs(layers: Iterable[Any], source: Any, roles: Iterable[str] = OUTPUT_ROLES) -> list:
    """Our output layers made from ``source`` (an image layer)."""
    sid = str(source.unique_id)
    roles = set(roles)
    return [ly for ly in layers if role_of(ly) in roles and source_of(ly) == sid]


def spatial_placement(layer: Any, channel_axis: int | None) -> dict:
    """``scale`` / ``translate`` of the spatial axes of an image layer.

    The channel axis (if the layer has one) is dropped; RGB layers have no channel axis in
    ``layer.scale``.
    """
    scale = list(np.asarray(layer.scale, float))
    translate = list(np.asarray(layer.translate, float))
    if channel_axis is not None and not getattr(layer, "rgb", False):
        ax = channel_axis % len(scale)
        del scale[ax], translate[ax]
    return {"scale": tuple(scale), "translate": tuple(translate)}


def flow_vectors(flows: np.ndarray, step: int, max_vectors: int = 40000
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Subsample a flow field on a regular grid as napari Vectors data.

    Parameters
    ----------
    flows : ndarray
        ``(ndim, *shape)`` flow field.
    step : int
        Grid spacing in pixels (along Y and X; Z is sampled on every plane when ``ndim == 3``
        unless that gives more than ``max_vectors`` vectors).
    max_vectors : int
        Upper bound on the number of vectors (the step grows to respect it).

    Returns
    -------
    vectors : ndarray
        ``(N, 2, ndim)``: positions and projections; the longest projection (99th
        percentile of the speed) is 0.9 grid spacing, so length is proportional to flow.
    colors : ndarray
        ``(N, 4)`` RGBA colours giving the direction (same hue wheel as the flow image).
    """
    flows = np.asarray(flows, np.float32)
    if flows.ndim == 4 and flows.shape[0] == 2:  # a stack segmented slice by slice: no dz
        flows = np.concatenate([np.zeros_like(flows[:1]), flows], 0)
    ndim = flows.shape[0]
    shape = flows.shape[1:]
    step = max(1, int(step))
    zstep = 1
    while True:
        grids = [np.arange(step // 2, n, step) for n in shape[-2:]]
        if ndim == 3:
            grids.insert(0, np.arange(0, shape[0], zstep))
        n = int(np.prod([len(g) for g in grids]))
        if n <= max_vectors:
            break
        if ndim == 3 and zstep < step:
            zstep += 1
        else:
            step += 1
    pos = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(-1, ndim)
    vec = flows[(slice(None), *pos.T)].T  # (N, ndim)
    speed = np.sqrt((vec ** 2).sum(1))
    hi = np.percentile(speed, 99) if speed.size else 0.0
    keep = speed > 1e-3 * max(hi, 1e-12)
    pos, vec = pos[keep], vec[keep]
    if hi > 0:
        vec = vec / hi * 0.9 * step
    if len(pos):  # colour by in-plane (Y, X) direction, as the flow colour image
        rgb = flow_to_rgb(flows[(slice(-2, None), *pos.T)][:, None, :]).reshape(-1, 3)
    else:
        rgb = np.zeros((0, 3), np.uint8)
    colors = np.concatenate([rgb / 255.0, np.ones((len(rgb), 1))], 1)
    data = np.stack([pos.astype(np.float32), vec.astype(np.float32)], 1)
    return data, colors


def output_layer_data(seg: Any, source: Any, placement: dict, params: dict) -> list[tuple]:
    """napari ``LayerDataTuple`` list for a segmentation result.

    Returns masks (Labels), then hidden flow vectors (Vectors; left out when there is no
    flow to draw, e.g. an empty image: napari cannot show an empty Vectors layer), cell
    probability and flow colour (Images), all tagged with :func:`tag` and placed with
    ``placement``.
    """
    name = source.name
    masks = np.asarray(seg.masks)
    flows = np.asarray(seg.flows, np.float32)
    step = max(2, round(float(params.get("diameter") or 30) / 5))
    vectors, colors = flow_vectors(flows, step)
    common = dict(placement)
    flow_layer = [] if not len(vectors) else [
        (vectors, {**common, "name": f"{name} flows", "visible": False, "edge_color": colors,
                   "edge_width": 0.25 * step,
                   "vector_style": "arrow", "length": 1.0,
                   "metadata": tag("flows", source, params=params, step=step)}, "vectors")]
    out = [
        (masks, {**common, "name": f"{name} masks",
                 "metadata": tag("masks", source, params=params)}, "labels"),
        *flow_layer,
        (np.asarray(seg.cellprob, np.float32),
         {**common, "name": f"{name} cell probability", "visible": False, "colormap": "magma",
          "metadata": tag("cellprob", source, params=params)}, "image"),
        (flow_to_rgb(flows), {**common, "name": f"{name} flow colour", "visible": False,
                              "rgb": True, "metadata": tag("flow_rgb", source, params=params)},
         "image"),
    ]
    return out
