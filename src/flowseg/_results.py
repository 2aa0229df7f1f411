"""Result layers in the viewer: add a run's outputs, apply new thresholds, keep corrections.

:class:`ResultLayers` is the one place that writes segmentation results into napari
layers.  Its rules:

* A re-run replaces the previous outputs of the same image, except masks layers the user
  has corrected: those stay, and the new masks get a layer of their own.
* New thresholds on a corrected masks layer either update only the objects the user did
  not touch (written with ``Labels.data_setitem``, so napari's undo covers it) or go to a
  new masks layer (``AFTER_EDITS``).
* Flow vectors and probability images are hidden by default.
* A block-by-block result (:meth:`ResultLayers.add_blocks`) is a Labels layer reading its
  zarr output lazily (one level per resolution of the output); it has no flow layers, and
  it is never removed by a later run (its labels are a file the user may want).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from psygnal import Signal

from . import _layers
from ._session import BlockRecord, Result, Session, merge_untouched

__all__ = ["AFTER_EDITS", "NEW_LAYER", "UNTOUCHED", "ResultLayers"]

UNTOUCHED = "update untouched cells"
NEW_LAYER = "write a new layer"
AFTER_EDITS = (UNTOUCHED, NEW_LAYER)


class ResultLayers:
    """Writes results into ``viewer`` and records them in ``session``.

    Signals
    -------
    edited(Result)
        The user changed the labels of a result's masks layer (brush, fill, eraser, ...).
    """

    edited = Signal(object)

    def __init__(self, viewer: Any, session: Session) -> None:
        self.viewer = viewer
        self.session = session
        self.outlines = False  # new masks layers show outlines only
        self._writing = False  # our own data_setitem calls are not user edits

    # ------------------------------------------------------------------ adding
    def add(self, source: Any, seg: Any, params: dict, channel_axis: int | None) -> tuple:
        """Show a new result of ``source``; returns ``(result, kept_layers)``.

        ``kept_layers`` are the earlier masks layers of ``source`` that hold corrections
        and were therefore not replaced.
        """
        viewer = self.viewer
        placement = _layers.spatial_placement(source, channel_axis)
        # the new layers go in first; the old ones leave only when all new ones are in,
        # so a failure (napari refusing a layer) leaves the viewer as it was
        outputs = _layers.output_layer_data(seg, source, placement, params)
        made = {}
        try:
            for data, kwargs, kind in outputs:
                if kind == "labels":
                    data = np.array(data, copy=True)  # the layer's own, edited in place
                role = kwargs["metadata"][_layers.META_KEY]["role"]
                made[role] = getattr(viewer, f"add_{kind}")(data, **kwargs)
        except Exception:
            for layer in made.values():  # never a half-made result
                if layer in viewer.layers:
                    viewer.layers.remove(layer)
            raise
        kept = self._clear_outputs(source, keep=list(made.values()))
        for (_, kwargs, _), layer in zip(outputs, made.values()):
            if not any(k.name == kwargs["name"] for k in kept):
                layer.name = kwargs["name"]  # napari numbered it while the old one was there
        masks = made["masks"]
        masks.contour = 2 if self.outlines else 0
        res = Result(image=source, seg=seg, layers=made, params=params,
                     written=np.array(masks.data, copy=True))
        self._watch(res)
        self.session.add(res)
        return res, kept

    def _clear_outputs(self, source: Any, keep: list | None = None) -> list:
        """Remove the earlier outputs of ``source`` (not those in ``keep``) except
        corrected masks layers (returned) and block-by-block results (files, kept as they
        are)."""
        kept = []
        for old in _layers.find_outputs(self.viewer.layers, source):
            if _layers.is_blockwise(old) or any(old is k for k in keep or ()):
                continue
            if _layers.role_of(old) == "masks" and self._is_edited(old):
                kept.append(old)
            else:
                self.viewer.layers.remove(old)
        return kept

    def add_blocks(self, source: Any, result: Any, params: dict, channel_axis: int | None
                   ) -> tuple[BlockRecord, list]:
        """Show a block-by-block result (:class:`~flowseg.engine.blocks.BlockResult`).

        The Labels layer reads the zarr output lazily: its resolution levels when it has
        several (multiscale), else the full-resolution array opened for writing, so
        corrections made with the brush are saved into the file.  Returns
        ``(record, kept_layers)`` as :meth:`add`.
        """
        from .engine.blocks.source import require_zarr

        zarr = require_zarr()
        kept = self._clear_outputs(source)
        levels = list(result.levels or (result.path,))
        params = {**params, "zarr": str(result.path), "blockwise": True,
                  "n_objects": int(result.n_objects)}
        if len(levels) > 1:
            data: Any = [zarr.open_array(p, mode="r") for p in levels]
        else:
            data = zarr.open_array(levels[0], mode="r+")
        layer = self.viewer.add_labels(
            data, multiscale=len(levels) > 1, name=f"{source.name} masks",
            metadata=_layers.tag("masks", source, params=params),
            **_layers.spatial_placement(source, channel_axis))
        layer.contour = 2 if self.outlines else 0
        rec = BlockRecord(image=source, masks=layer, path=str(result.path),
                          n_objects=int(result.n_objects), params=params)
        self.session.add(rec)
        return rec, kept

    def _is_edited(self, masks: Any) -> bool:
        res = self.session.result_of(masks)
        return True if res is None else res.edited  # unknown origin: keep it

    def _watch(self, res: Result) -> None:
        def on_paint(event: Any = None) -> None:
            if not self._writing:
                self.edited.emit(res)

        res.masks.events.paint.connect(on_paint)

    # ------------------------------------------------------------------ new thresholds
    def update(self, res: Result, new_seg: Any, mode: str = UNTOUCHED) -> Result:
        """Show ``new_seg`` (same flows, new thresholds) in place of ``res``'s masks.

        Untouched masks layers are overwritten.  A corrected one keeps every object the
        user touched (``mode == UNTOUCHED``) or stays as it is while the new masks go to a
        new layer (``mode == NEW_LAYER``).  Returns the result now current for the image.
        """
        if mode not in AFTER_EDITS:
            raise ValueError(f"mode must be one of {AFTER_EDITS}, got {mode!r}")
        layer = res.masks
        new_params = {**res.params, **{k: new_seg.params[k] for k in
                      ("cellprob_threshold", "flow_threshold", "min_size")
                      if k in new_seg.params}}
        if not res.edited:
            layer.data = np.array(new_seg.masks, copy=True)  # the layer's own, edited in place
            res.mark_written(new_seg.masks)
        elif mode == UNTOUCHED:
            data = np.asarray(layer.data)
            merged = merge_untouched(new_seg.masks, data, res.sync_edits())
            idx = np.nonzero(merged != data)
            if idx[0].size:
                self._writing = True
                try:  # one undoable step in napari's history
                    layer.data_setitem(idx, merged[idx])
                finally:
                    self._writing = False
            res.mark_written(merged)
        else:
            return self._new_masks_layer(res, new_seg, new_params)
        res.seg, res.params = new_seg, new_params
        _set_params(layer, new_params)
        return res

    def _new_masks_layer(self, res: Result, new_seg: Any, params: dict) -> Result:
        old = res.masks
        meta = _layers.tag("masks", res.image, params=params)
        layer = self.viewer.add_labels(
            np.array(new_seg.masks, copy=True), name=f"{res.image.name} masks",
            scale=old.scale, translate=old.translate, metadata=meta)
        layer.contour = 2 if self.outlines else 0
        new = Result(image=res.image, seg=new_seg, layers={**res.layers, "masks": layer},
                     params=params, written=np.array(layer.data, copy=True))
        self._watch(new)
        self.session.add(new)
        return new

    # ------------------------------------------------------------------ view
    def set_outlines(self, on: bool) -> None:
        """Show every result masks layer as outlines (``on``) or filled."""
        self.outlines = bool(on)
        for res in (*self.session.results.values(), *self.session.blocks.values()):
            if res.masks in self.viewer.layers:
                res.masks.contour = 2 if on else 0


def _set_params(layer: Any, params: dict) -> None:
    meta = dict(layer.metadata)
    info = dict(meta.get(_layers.META_KEY, {}))
    info["params"] = dict(params)
    meta[_layers.META_KEY] = info
    layer.metadata = meta
