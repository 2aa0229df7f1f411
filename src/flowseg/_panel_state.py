"""Which image the Segment tab works on, and that image's settings.

:class:`PanelState` makes the Segment tab follow the active layer (an image, or one of our
outputs, which stands for its image), stores the controls' values per image layer when
another image is picked and restores them when it comes back.  An image seen for the first
time gets its axes guessed from its shape, and the model and diameter shown before (the
model's default diameter for the very first image); the status line says so -- nothing is
carried over silently.

A volume's default anisotropy comes from the layer's scale along Z, Y and X; when the layer
has none (all 1), from the voxel size stated by the file it was read from (ImageJ TIFF,
OME-TIFF, OME-Zarr: napari's own TIFF reader sets no scale), read once per layer.  The
anisotropy's tooltip says where the default came from, and so does the status line when a
new image takes it from its file.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from napari.layers import Image

from . import _layers
from ._inputs import (
    Axes,
    channel_axis_choices,
    file_voxel,
    n_channels,
    scale_anisotropy,
    z_axis_choices,
    zyx_scale,
)
from ._segment_request import default_settings
from ._session import ImageSettings, Session
from .engine.io.voxel import anisotropy_from_voxel, format_voxel

__all__ = ["ANISOTROPY_TIP", "DEFAULT_DIAMETER", "PanelState"]

DEFAULT_DIAMETER = 30.0
#: tooltip of the anisotropy control; where the shown image's default came from follows it
ANISOTROPY_TIP = "Z step over the XY pixel size of the volume (3D only)"

Voxel = tuple[float, float, float]  # (z, y, x) in µm


class PanelState:
    """Per-image settings and layer following of a :class:`~flowseg._segment_panel.SegmentPanel`."""

    def __init__(self, panel: Any) -> None:
        self.panel = panel
        self.quiet = False  # True while the panel sets its own widgets
        self.shown: Any = None  # the image layer whose settings the controls show
        self.last_shown: str | None = None  # name of the image shown before
        # layer -> the voxel size its file states (None: none); read once per layer, and
        # weak, so that a deleted layer's data is not kept alive
        self._voxels: weakref.WeakKeyDictionary[Any, Voxel | None] = (
            weakref.WeakKeyDictionary())

    @contextmanager
    def quietly(self) -> Iterator[None]:
        """Set widgets without triggering recomputation, previews or defaults."""
        prev, self.quiet = self.quiet, True
        try:
            yield
        finally:
            self.quiet = prev

    @property
    def session(self) -> Session:
        """The panel's session."""
        return self.panel.session

    # ------------------------------------------------------------------ settings
    def collect(self) -> ImageSettings:
        """The settings shown in the controls now."""
        p = self.panel
        return ImageSettings(**{name: getattr(p, name).value for name in ImageSettings.names()})

    def default_diameter(self, model: str | None = None) -> float:
        """The model's default diameter, else :data:`DEFAULT_DIAMETER`."""
        p = self.panel
        d = p.models.default_diameter(p.model.value if model is None else model, p.device.value)
        return DEFAULT_DIAMETER if d is None else d

    def settings_for(self, layer: Any) -> ImageSettings:
        """Settings of ``layer``: the controls for the shown image, else remembered or new."""
        if layer is None or not isinstance(layer, Image):
            return self.collect()
        if layer is self.panel.image.value:
            return self.collect()
        stored = self.session.settings.get(Session.key(layer))
        if stored is not None:
            return stored
        return self.new_settings(layer, model=self.panel.model.value,
                                 diameter=self.default_diameter())

    def new_settings(self, layer: Any, model: str | None = None, diameter: float = 30.0
                     ) -> ImageSettings:
        """Settings for an image seen for the first time: :func:`default_settings` with the
        default anisotropy of :meth:`anisotropy_default`."""
        s = default_settings(layer, model=model, diameter=diameter)
        if s.z_axis is None:
            return s
        aniso, _ = self.anisotropy_default(layer, Axes(s.channel_axis, s.z_axis))
        return dataclasses.replace(s, anisotropy=round(aniso, 3))

    # ------------------------------------------------------------------ anisotropy
    def file_voxel(self, layer: Any) -> Voxel | None:
        """The voxel size stated by the file ``layer`` was read from (None: none), read
        once per layer (:func:`flowseg._inputs.file_voxel`).  Never raises."""
        try:
            return self._voxels[layer]
        except KeyError:
            pass
        except TypeError:  # a layer-like object that cannot be weakly referenced
            return file_voxel(layer)
        voxel = self._voxels[layer] = file_voxel(layer)
        return voxel

    def anisotropy_default(self, layer: Any, ax: Axes) -> tuple[float, str]:
        """The default anisotropy of ``layer`` with the axes ``ax``, and where it came from.

        Parameters
        ----------
        layer : napari.layers.Image
            The image.
        ax : Axes
            Its channel and Z axes.

        Returns
        -------
        value : float
            The layer's scale along Z / Y / X when it has one (not all 1: the user or a
            reader set it); else the file's voxel size when it states one; else 1.
        source : str
            Where it came from, in words (``"from the file's voxel size (z 2 um, xy 0.5
            um)"``); empty without a Z axis.
        """
        if ax.z_axis is None:
            return 1.0, ""
        try:
            zyx = zyx_scale(layer.scale, ax, layer.ndim, bool(layer.rgb))
        except (IndexError, ValueError, TypeError):
            zyx = None
        if zyx is not None and any(v != 1.0 for v in zyx):
            source = "from the layer's scale (z {:g}, y {:g}, x {:g})".format(*zyx)
            return scale_anisotropy(zyx), source
        voxel = self.file_voxel(layer)
        aniso = anisotropy_from_voxel(voxel)
        if voxel is not None and aniso is not None:
            return aniso, f"from the file's voxel size ({format_voxel(voxel)})"
        return 1.0, "(neither the layer's scale nor its file states a voxel size)"

    def _show_anisotropy_source(self, layer: Any) -> None:
        """Tell, in the anisotropy's tooltip, where the default for ``layer`` came from."""
        p = self.panel
        aniso, source = self.anisotropy_default(layer, Axes(p.channel_axis.value,
                                                             p.z_axis.value))
        p.anisotropy.tooltip = (f"{ANISOTROPY_TIP}; default {aniso:.3g} {source}" if source
                                else ANISOTROPY_TIP)

    def remember(self, layer: Any, **changes: Any) -> None:
        """Store the settings of ``layer`` (with ``changes``)."""
        s = dataclasses.replace(self.settings_for(layer), **changes)
        self.session.settings[Session.key(layer)] = s

    # ------------------------------------------------------------------ switching images
    def on_image_changed(self, value: Any = None) -> None:
        """Store the previous image's settings, show the new image's."""
        p = self.panel
        prev, layer = self.shown, p.image.value
        if prev is layer:
            return
        if prev is not None and prev in p.viewer.layers:
            self.session.settings[Session.key(prev)] = self.collect()
        self.shown = layer
        p.preview_circle.hide()
        if layer is None:
            return
        stored = self.session.settings.get(Session.key(layer))
        new, before = stored is None, self.last_shown
        if new:  # the model and diameter of the image shown before, said out loud
            d = p.diameter.value if before is not None else self.default_diameter()
            stored = self.new_settings(layer, model=p.model.value, diameter=d)
        self.apply(layer, stored)
        self.last_shown = layer.name
        self.show_result(layer)
        if new and not p.busy and self.session.current(layer) is None:
            origin = f" (as for {before!r}: change them if this image differs)" if before else ""
            aniso, source = self.anisotropy_default(layer, Axes(stored.channel_axis,
                                                                stored.z_axis))
            file = (f" Anisotropy {aniso:.3g} {source}." if source.startswith("from the file")
                    else "")
            p.status.value = (f"{layer.name}: model {p.models.label_of(p.model.value)}, "
                              f"diameter {p.diameter.value:g} px{origin}.{file} Press Run.")

    def apply(self, layer: Any, s: ImageSettings) -> None:
        """Show the settings ``s`` of ``layer`` in the controls."""
        p = self.panel
        with self.quietly():
            self._fill_axes(layer, s.channel_axis, s.z_axis)
            p.channel_axis.enabled = not layer.rgb
            self._fill_channels(layer)
            for name in ("cyto", "nucleus"):
                w = getattr(p, name)
                v = getattr(s, name)
                w.value = v if v in w.choices else w.choices[0]
            has_z = p.z_axis.value is not None
            for w in (p.do_3d, p.stitch, p.anisotropy):
                w.enabled = has_z
            p.do_3d.value, p.stitch.value, p.anisotropy.value = s.do_3d, s.stitch, s.anisotropy
            self._show_anisotropy_source(layer)
            if has_z:
                p.more.value = True
            if s.model is not None and s.model in p.model.choices:
                p.model.value = s.model
            p.diameter.value = s.diameter

    def _fill_axes(self, layer: Any, channel_axis: int | None, z_axis: int | None) -> None:
        """Offer only valid axes: channels on a short axis, Z on another axis."""
        p = self.panel
        shape, rgb = tuple(layer.data.shape), bool(layer.rgb)
        p.channel_axis.choices = channel_axis_choices(shape, z_axis)
        cax = channel_axis if channel_axis in _values(p.channel_axis.choices) else None
        p.channel_axis.value = cax
        p.z_axis.choices = z_axis_choices(shape, cax, rgb)
        p.z_axis.value = z_axis if z_axis in _values(p.z_axis.choices) else None
        if p.z_axis.value is not None:  # the channel picker leaves out the Z axis
            p.channel_axis.choices = channel_axis_choices(shape, p.z_axis.value)
            p.channel_axis.value = cax

    def _fill_channels(self, layer: Any) -> None:
        p = self.panel
        shape = tuple(layer.data.shape)
        ax = Axes(p.channel_axis.value, p.z_axis.value)
        ok = ax.channel_axis is not None and ax.channel_axis < len(shape)
        nch = n_channels(shape, ax) if ok else 1
        names = ["red", "green", "blue", "alpha"] if layer.rgb else [f"channel {i}"
                                                                     for i in range(nch)]
        cyto = [(names[i], i) for i in range(nch)]
        if nch > 1:
            cyto.append(("mean of channels", None))
        p.cyto.choices = cyto
        p.nucleus.choices = [("none", None)] + [(names[i], i) for i in range(nch)]

    def on_axes_changed(self, value: Any = None) -> None:
        """The user chose another channel or Z axis: channel and 3D defaults follow."""
        p = self.panel
        layer = p.image.value
        if self.quiet or layer is None:
            return
        with self.quietly():
            self._fill_axes(layer, p.channel_axis.value, p.z_axis.value)
            ax = Axes(p.channel_axis.value, p.z_axis.value)
            self._fill_channels(layer)
            p.cyto.value = 0
            nch = len(p.nucleus.choices) - 1
            p.nucleus.value = 1 if (nch == 2 and not layer.rgb) else None
            has_z = ax.z_axis is not None
            p.do_3d.value = has_z
            for w in (p.do_3d, p.stitch, p.anisotropy):
                w.enabled = has_z
            if has_z:
                p.anisotropy.value = round(self.anisotropy_default(layer, ax)[0], 3)
            self._show_anisotropy_source(layer)

    def show_result(self, layer: Any) -> None:
        """Thresholds and status of the current result of ``layer`` (if any)."""
        p = self.panel
        res = self.session.current(layer)
        if res is None:
            blocks = self.session.current_blocks(layer)
            if not p.busy:
                p.status.value = f"{layer.name}: not segmented yet" if blocks is None else (
                    f"{layer.name}: {blocks.n_objects} cells in {blocks.masks.name!r} "
                    f"(block by block, saved in {blocks.path})")
            return
        with self.quietly():
            for name, key in (("cellprob", "cellprob_threshold"),
                              ("flow_threshold", "flow_threshold"), ("min_size", "min_size")):
                if res.params.get(key) is not None:
                    getattr(p, name).value = res.params[key]
        if not p.busy:
            n = int(np.count_nonzero(np.unique(np.asarray(res.masks.data))))
            edited = " (with your corrections)" if res.edited else ""
            p.status.value = f"{layer.name}: {n} cells in {res.masks.name!r}{edited}"

    # ------------------------------------------------------------------ following layers
    def follow_active_layer(self, event: Any = None) -> None:
        """Pick the active image layer (or the image an active output layer came from)."""
        p = self.panel
        layer = p.viewer.layers.selection.active
        if layer is None:
            return
        role = _layers.role_of(layer)
        if role is None and isinstance(layer, Image):
            target = layer
        elif role in _layers.OUTPUT_ROLES:
            sid = _layers.source_of(layer)
            target = next((ly for ly in p.viewer.layers if Session.key(ly) == sid), None)
            if role == "masks":
                self.session.make_current(layer)
        else:
            return
        if target is None:
            return
        if target not in p.image.choices:
            p.image.reset_choices()
        if target not in p.image.choices:
            return
        if target is not p.image.value:
            p.image.value = target
        elif role == "masks":
            self.show_result(target)


def _values(choices: Any) -> list:
    """The values of a ComboBox's choices (magicgui gives values, or (label, value) pairs)."""
    return [c[1] if isinstance(c, tuple) else c for c in choices]
