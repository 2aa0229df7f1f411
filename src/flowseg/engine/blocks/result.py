"""The outcome of a blockwise run (:class:`BlockResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .plan import BlockPlan
from .source import require_zarr

__all__ = ["BlockResult"]


@dataclass
class BlockResult:
    """The outcome of :func:`segment_blocks`.

    Attributes
    ----------
    path : str
        The output zarr array.
    labels : zarr.Array
        The output, opened read-only (lazy: nothing is loaded).
    n_objects : int
        Objects in the image.
    diameter : float
        Diameter every block was segmented at.
    diameter_source : str
        ``"given"`` or how it was estimated.
    plan : BlockPlan
        Block geometry.
    n_segmented, n_skipped : int
        Blocks run through the network / skipped as empty.
    n_merged : int
        Object pieces joined across block faces.
    seconds : dict
        Wall time per stage and ``"total"``; ``"block_tasks"``: the block tasks' own times
        summed over all workers.
    peak_rss_mb : float
        Largest peak resident memory reported by a worker process (MiB).
    workers : int
        Worker processes that segmented blocks.
    label_name : str or None
        Name of the OME-Zarr label image, when the output is one.
    levels : tuple of str
        Paths of the output's resolution levels (``path`` first; an OME-Zarr label image
        gets the image's lower-resolution levels too).
    """

    path: str
    labels: Any
    n_objects: int
    diameter: float
    diameter_source: str
    plan: BlockPlan
    n_segmented: int
    n_skipped: int
    n_merged: int
    seconds: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    workers: int = 0
    label_name: str | None = None
    levels: tuple[str, ...] = ()

    def to_dask(self) -> Any:
        """The labels as a lazy dask array."""
        import dask.array as da

        return da.from_zarr(self.labels)

    def pyramid(self) -> list[Any]:
        """All resolution levels as lazy dask arrays (full resolution first), e.g. for a
        multiscale napari Labels layer."""
        import dask.array as da

        zarr = require_zarr()
        return [da.from_zarr(zarr.open_array(p, mode="r")) for p in self.levels or
                (self.path,)]
