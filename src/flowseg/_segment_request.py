"""A validated segmentation request: an image layer plus everything the engine needs.

No Qt here: :func:`make_request` checks an image layer against its
:class:`~flowseg._session.ImageSettings` and the run options, and raises ``ValueError``
with a message for the user when something does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._inputs import (
    Axes,
    check_axes,
    default_anisotropy,
    guess_axes,
    layer_kind,
    n_channels,
)
from ._session import ImageSettings
from .engine.flows.params import MaskParams

__all__ = ["AUTO_MODEL", "LOAD_FILE", "SegmentRequest", "default_settings", "make_request"]

LOAD_FILE = "load file…"
#: the model picker's "auto" entry: the model zoo chooses per image
#: (:func:`flowseg.engine.inference.zoo.choose_model`, as ``flowseg segment --model auto``)
AUTO_MODEL = "auto"


@dataclass(frozen=True)
class SegmentRequest:
    """Arguments of one ``Model.segment`` call on an image layer."""

    layer: Any
    model_path: str
    device: str
    channel_axis: int | None
    z_axis: int | None
    channels: tuple | None
    diameter: float | None
    do_3d: bool
    anisotropy: float | None
    augment: bool
    mask: MaskParams

    @property
    def data(self) -> Any:
        """The layer's data (the full-resolution level of a multiscale layer)."""
        return self.layer.data[0] if self.layer.multiscale else self.layer.data

    def engine_kwargs(self) -> dict:
        """Keyword arguments of ``Model.segment`` (besides progress and cancel)."""
        kw = {"channels": self.channels, "channel_axis": self.channel_axis, "z_axis": self.z_axis,
              "diameter": self.diameter, "do_3d": self.do_3d, "augment": self.augment,
              **self.mask.as_dict()}
        if self.anisotropy is not None:
            kw["anisotropy"] = self.anisotropy
        return kw

    def record(self) -> dict:
        """JSON-able record of the run, stored in the output layers' metadata."""
        p = self.engine_kwargs()
        p.setdefault("anisotropy", None)
        p["channels"] = list(self.channels) if self.channels is not None else None
        p["model"] = self.model_path
        p["device"] = self.device
        return p


def default_settings(layer: Any, model: str | None = None, diameter: float = 30.0
                     ) -> ImageSettings:
    """Settings for an image layer seen for the first time (axes guessed from its shape)."""
    shape = tuple(layer.data.shape)
    ax = guess_axes(shape, bool(layer.rgb))
    meta_axes = (layer.metadata or {}).get("flowseg_axes")
    if isinstance(meta_axes, dict):
        ax = Axes(meta_axes.get("channel_axis"), meta_axes.get("z_axis"))
    nch = shape[ax.channel_axis] if ax.channel_axis is not None else 1
    try:
        aniso = default_anisotropy(layer.scale, ax, layer.ndim, bool(layer.rgb))
    except (IndexError, ValueError):
        aniso = 1.0
    return ImageSettings(channel_axis=ax.channel_axis, z_axis=ax.z_axis, cyto=0,
                         nucleus=1 if (nch == 2 and not layer.rgb) else None, model=model,
                         diameter=float(diameter), do_3d=ax.z_axis is not None,
                         stitch=0.0, anisotropy=round(float(aniso), 3))


def make_request(layer: Any, settings: ImageSettings, *, device: str, augment: bool,
                 mask: MaskParams) -> SegmentRequest:
    """Validate ``layer`` and ``settings``; ``ValueError`` with a clear message otherwise.

    ``mask`` holds the threshold controls' values; its ``stitch_threshold`` is replaced by
    the image's own setting (0 unless a stack is segmented slice by slice).
    """
    from napari.layers import Image

    if layer is None:
        raise ValueError("no image layer: open an image (or File > Open Sample > FlowSeg) first")
    if not isinstance(layer, Image):  # a ValueError: shown to the user like the others
        raise ValueError(  # noqa: TRY004
            f"layer {layer.name!r} is a {layer_kind(layer)} layer; pick an image layer to "
            "segment")
    s = settings
    shape = tuple(layer.data.shape)
    ax = Axes(s.channel_axis, s.z_axis)
    check_axes(shape, ax, bool(layer.rgb))
    nch = n_channels(shape, ax)
    for name, v in (("cytoplasm", s.cyto), ("nucleus", s.nucleus)):
        if v is not None and not 0 <= v < nch:
            raise ValueError(f"{name} channel {v} does not exist (the image has {nch} channels)")
    if s.model in (None, LOAD_FILE):
        raise ValueError("no model chosen: pick a bundled model or load a model file")
    zax = ax.z_axis
    do_3d = bool(s.do_3d) and zax is not None
    return SegmentRequest(
        layer=layer, model_path=str(s.model), device=str(device),
        channel_axis=ax.channel_axis, z_axis=zax,
        channels=(s.cyto, s.nucleus) if nch > 1 or s.nucleus is not None else None,
        diameter=float(s.diameter) or None, do_3d=do_3d,
        anisotropy=float(s.anisotropy) if do_3d else None, augment=bool(augment),
        mask=mask.replace(stitch_threshold=float(s.stitch) if zax is not None and not do_3d
                          else 0.0))
