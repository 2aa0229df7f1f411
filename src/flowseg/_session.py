"""What the Segment tab remembers: settings per image layer and results per masks layer.

No Qt here.  A :class:`Result` ties one masks (Labels) layer to the
:class:`~flowseg.engine.inference.result.Segmentation` it came from and keeps a copy of the
labels the plugin last wrote into it.  Comparing the layer's data with that copy tells
which pixels the user changed -- whatever tool did it (brush, fill, eraser, the delete /
merge helpers, napari's undo, a script) -- so corrections are never overwritten:
:func:`merge_untouched` lays new masks only over objects the user left alone.

A block-by-block run of a big image (:class:`BlockRecord`) keeps no flows and no copy of
its labels (they live in a zarr file): the session only remembers that it is the image's
latest result, so the panel can say that new thresholds need a new run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

__all__ = ["BlockRecord", "ImageSettings", "Result", "Session", "merge_untouched"]


@dataclass
class ImageSettings:
    """Segment-tab settings of one image layer (restored when the layer is picked again).

    ``None`` in a channel means "none" (nucleus) or "mean of channels" (cytoplasm), as in
    the pickers.
    """

    channel_axis: int | None = None
    z_axis: int | None = None
    cyto: int | None = 0
    nucleus: int | None = None
    model: str | None = None
    diameter: float = 30.0
    do_3d: bool = False
    stitch: float = 0.0
    anisotropy: float = 1.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The setting names (also the panel's widget attribute names)."""
        return tuple(f.name for f in fields(cls))


def merge_untouched(new: np.ndarray, current: np.ndarray, protected: np.ndarray) -> np.ndarray:
    """New masks everywhere except where the user's corrections are.

    Parameters
    ----------
    new : ndarray of int
        Freshly computed masks.
    current : ndarray of int
        The layer's labels now (with the user's corrections).
    protected : ndarray of bool
        Pixels that belong to the user: the pixels they changed and every object they
        touched (including background they erased).

    Returns
    -------
    ndarray of int32
        ``current`` on ``protected``; elsewhere the objects of ``new`` that do not overlap
        ``protected`` (an object there is the same cell, already corrected, or one the user
        deleted), renumbered after the kept labels.
    """
    new = np.asarray(new)
    current = np.asarray(current)
    protected = np.asarray(protected, bool)
    if new.shape != current.shape or protected.shape != current.shape:
        raise ValueError(f"shapes differ: new {new.shape}, current {current.shape}, "
                         f"protected {protected.shape}")
    clash = np.unique(new[protected])
    keep_new = np.ones(int(new.max(initial=0)) + 1, bool)
    keep_new[clash] = False
    keep_new[0] = False
    ids = np.flatnonzero(keep_new)
    base = int(current[protected].max(initial=0))
    lut = np.zeros(keep_new.size, np.int64)
    lut[ids] = base + 1 + np.arange(ids.size)
    out = lut[new]
    out[protected] = current[protected]
    return out.astype(np.int32)


@dataclass(eq=False)
class Result:
    """One segmentation result shown as a masks layer.

    Attributes
    ----------
    image : napari.layers.Image
        The segmented image layer.
    seg : Segmentation
        Network outputs and the masks last computed from them.
    layers : dict
        Output layers by role (``"masks"``, ``"flows"``, ``"cellprob"``, ``"flow_rgb"``).
    params : dict
        The run's settings (also in the layers' metadata).
    written : ndarray
        Copy of the labels the plugin last wrote into the masks layer.
    protected : ndarray of bool or None
        Pixels kept from earlier corrections (set by :meth:`sync_edits`).
    """

    image: Any
    seg: Any
    layers: dict
    params: dict
    written: np.ndarray = field(repr=False)
    protected: np.ndarray | None = field(default=None, repr=False)

    @property
    def masks(self) -> Any:
        """The masks (Labels) layer."""
        return self.layers["masks"]

    def changed_pixels(self) -> np.ndarray:
        """Pixels where the layer's labels differ from what the plugin wrote."""
        data = np.asarray(self.masks.data)
        if data.shape != self.written.shape:  # the user replaced the whole array
            return np.ones(data.shape, bool)
        return data != self.written

    def sync_edits(self) -> np.ndarray:
        """Add the user's latest changes to :attr:`protected`; return it.

        Protected: every changed pixel, plus every pixel of an object that was painted,
        erased, merged or split (its label occurs on either side of a change).
        """
        data = np.asarray(self.masks.data)
        changed = self.changed_pixels()
        prot = np.zeros(data.shape, bool) if self.protected is None else self.protected
        if prot.shape != data.shape:
            prot = np.zeros(data.shape, bool)
        if changed.any():
            if changed.shape == self.written.shape:
                touched = np.union1d(data[changed], self.written[changed])
            else:
                touched = np.unique(data)
            touched = touched[touched > 0]
            prot = prot | changed | np.isin(data, touched)
        self.protected = prot
        return prot

    @property
    def edited(self) -> bool:
        """Whether the layer holds corrections by the user (now or kept from before)."""
        return bool(self.changed_pixels().any()) or (
            self.protected is not None and bool(self.protected.any()))

    def mark_written(self, data: np.ndarray) -> None:
        """Record ``data`` as what the plugin wrote into the masks layer."""
        self.written = np.array(data, copy=True)


@dataclass(eq=False)
class BlockRecord:
    """A block-by-block result: a lazy, zarr-backed masks layer without flows.

    Attributes
    ----------
    image : napari.layers.Image
        The segmented image layer.
    masks : napari.layers.Labels
        The masks layer (its data reads the zarr output lazily).
    path : str
        The zarr array holding the labels.
    n_objects : int
        Objects found.
    params : dict
        The run's settings (also in the layer's metadata).
    """

    image: Any
    masks: Any
    path: str
    n_objects: int
    params: dict


class Session:
    """Settings per image layer and results per masks layer, found by ``unique_id``."""

    def __init__(self) -> None:
        self.settings: dict[str, ImageSettings] = {}
        self.results: dict[str, Result] = {}  # masks layer id -> result
        self.blocks: dict[str, BlockRecord] = {}  # masks layer id -> block-by-block result
        self._current: dict[str, str] = {}  # image layer id -> masks layer id

    @staticmethod
    def key(layer: Any) -> str:
        """The dictionary key of a layer."""
        return str(layer.unique_id)

    def add(self, result: Result | BlockRecord) -> None:
        """Store a result and make it the image's current one."""
        mid = self.key(result.masks)
        if isinstance(result, BlockRecord):
            self.blocks[mid] = result
        else:
            self.results[mid] = result
        self._current[self.key(result.image)] = mid

    def current(self, image: Any) -> Result | None:
        """The result the threshold controls act on for ``image`` (None if none, or when
        the latest one was made block by block: see :meth:`current_blocks`)."""
        if image is None:
            return None
        mid = self._current.get(self.key(image))
        return None if mid is None else self.results.get(mid)

    def current_blocks(self, image: Any) -> BlockRecord | None:
        """The image's latest result when it was made block by block, else None."""
        if image is None:
            return None
        mid = self._current.get(self.key(image))
        return None if mid is None else self.blocks.get(mid)

    def result_of(self, masks: Any) -> Result | None:
        """The result shown in the masks layer ``masks`` (None if not ours)."""
        return self.results.get(self.key(masks))

    def make_current(self, masks: Any) -> Result | None:
        """Make the result in ``masks`` the current one of its image; return it (None
        for a block-by-block result, which also becomes current)."""
        res = self.result_of(masks)
        rec = res if res is not None else self.blocks.get(self.key(masks))
        if rec is not None:
            self._current[self.key(rec.image)] = self.key(masks)
        return res

    def forget_missing(self, alive: set[str]) -> None:
        """Drop results and settings whose layers left the viewer (frees the flows)."""
        for store in (self.results, self.blocks):
            for mid in [m for m, r in store.items()
                        if m not in alive or self.key(r.image) not in alive]:
                del store[mid]
        for iid in [i for i, m in self._current.items()
                    if m not in self.results and m not in self.blocks]:
            del self._current[iid]
        for iid in [i for i in self.settings if i not in alive]:
            del self.settings[iid]
