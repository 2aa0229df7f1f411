"""On-disk arrays of a blockwise run: the output labels and the scratch array of blocks.

The output is an int32 zarr array chunked like the block cores, so every block writes its
own chunks and no two writers share one.  Plain outputs use zarr format 2 (readable by
zarr-python 2 and 3 and other zarr v2 readers); for an OME-Zarr input they become a
``labels/<name>`` image of the input (:mod:`flowseg.engine.blocks.ome`).

The scratch array holds each block's padded labels (local ids) in its own chunk, so the
merge step can compare two blocks where they overlap; it lives next to the output (on the
same, possibly shared, storage) and is deleted at the end of the run.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ome import OmeImage, create_label_array, label_exists, remove_label
from .plan import Block, BlockPlan
from .source import Layout, require_zarr

__all__ = [
    "DEFAULT_LABEL_NAME",
    "OutputTarget",
    "Scratch",
    "check_output",
    "create_output",
    "create_scratch",
    "scratch_dir",
]

DEFAULT_LABEL_NAME = "flowseg"


@dataclass
class OutputTarget:
    """Where the final labels go.

    Attributes
    ----------
    array : zarr.Array
        The int32 output array.
    axes : tuple
        Per output axis, the spatial axis (canonical position) it holds, or None for a
        length-1 axis (e.g. OME's ``t``).
    path : str
        The output array's path.
    label_of : tuple or None
        ``(image group path, OmeImage, name)`` when the output is an OME-Zarr label image.
    """

    array: Any
    axes: tuple[int | None, ...]
    path: str
    label_of: tuple[str, OmeImage, str] | None = None

    def put(self, core: Sequence[slice], labels: np.ndarray) -> None:
        """Write ``labels`` (canonical spatial order) at the block core ``core``."""
        spatial = [k for k in self.axes if k is not None]
        data = np.transpose(labels, spatial)
        idx = tuple(slice(0, 1) if k is None else core[k] for k in self.axes)
        shape = tuple(1 if k is None else labels.shape[k] for k in self.axes)
        self.array[idx] = data.reshape(shape)

    def discard(self) -> None:
        """Remove the output (after a failed or cancelled run)."""
        if self.label_of is not None:
            zarr = require_zarr()

            gpath, ome, name = self.label_of
            remove_label(zarr.open_group(gpath, mode="r+"), ome, name)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def _plain_path(out: Any) -> Path:
    p = Path(out).expanduser()
    if p.suffix.lower() != ".zarr":
        raise ValueError(f"output {p} must be a path ending in .zarr")
    return p


def check_output(out: Any, ome: OmeImage | None, overwrite: bool) -> None:
    """Fail early (before any work) if the output exists and ``overwrite`` is False."""
    if ome is not None and _is_label_name(out):
        zarr = require_zarr()

        name = DEFAULT_LABEL_NAME if out is None else str(out)
        if not overwrite and label_exists(zarr.open_group(ome.path, mode="r"), name):
            raise FileExistsError(f"{ome.path}/labels/{name} exists; pass overwrite=True "
                                  "(CLI: --overwrite) or another name")
        return
    if out is None:
        return
    p = _plain_path(out)
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p} exists; pass overwrite=True (CLI: --overwrite) or another "
                              "path")
    if not p.parent.is_dir():
        raise FileNotFoundError(f"output folder {p.parent} does not exist")


def _is_label_name(out: Any) -> bool:
    return out is None or (isinstance(out, str) and "/" not in out and "\\" not in out
                           and not out.lower().endswith(".zarr"))


def create_output(out: Any, layout: Layout, plan: BlockPlan, ome: OmeImage | None, *,
                  overwrite: bool = False, attributes: dict | None = None) -> OutputTarget:
    """Create the zero-filled int32 output.

    Parameters
    ----------
    out : str, Path or None
        A ``.zarr`` path; for an OME-Zarr input a plain name (or None:
        :data:`DEFAULT_LABEL_NAME`) makes ``<image>/labels/<name>``; None otherwise: a new
        folder in the system's temporary directory.
    layout : Layout
        The input's layout (its spatial shape is the output's).
    plan : BlockPlan
        Gives the chunks (the core block size).
    ome : OmeImage or None
        The input's OME-Zarr metadata.
    overwrite : bool
        Replace an existing output.
    attributes : dict, optional
        Stored on the output array (run parameters).
    """
    zarr = require_zarr()

    check_output(out, ome, overwrite)
    attrs = dict(attributes or {})
    if ome is not None and _is_label_name(out):
        name = DEFAULT_LABEL_NAME if out is None else str(out)
        axes: list[int | None] = []
        for a, ax in enumerate(ome.axes):
            if ax == "c":
                continue
            axes.append(layout.spatial_axes.index(a) if a in layout.spatial_axes else None)
        shape = tuple(1 if k is None else layout.spatial_shape[k] for k in axes)
        chunks = tuple(1 if k is None else min(plan.block_size[k], plan.shape[k])
                       for k in axes)
        group = zarr.open_group(ome.path, mode="r+")
        arr = create_label_array(group, ome, name, shape, chunks, attributes=attrs)
        return OutputTarget(arr, tuple(axes), f"{ome.path}/labels/{name}/0",
                            (ome.path, ome, name))
    if out is None:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="flowseg-")) / "labels.zarr"
    else:
        path = _plain_path(out)
        if path.exists():
            shutil.rmtree(path)  # overwrite=True was checked above
    chunks = tuple(min(b, s) for b, s in zip(plan.block_size, plan.shape))
    arr = zarr.create_array(store=str(path), shape=plan.shape, chunks=chunks, dtype="int32",
                            fill_value=0, zarr_format=2, attributes=attrs)
    return OutputTarget(arr, tuple(range(len(plan.shape))), str(path))


@dataclass
class Scratch:
    """Each block's padded labels, one chunk per block (grid position x largest padding)."""

    array: Any
    path: str
    chunk: tuple[int, ...]

    def region(self, block: Block, sub: Sequence[slice] | None = None) -> tuple[slice, ...]:
        """Where ``block``'s padded labels lie; ``sub`` (image coordinates) narrows it."""
        out = []
        for k, (i, c, p) in enumerate(zip(block.index, self.chunk, block.padded)):
            o = i * c
            if sub is None:
                out.append(slice(o, o + p.stop - p.start))
            else:
                out.append(slice(o + sub[k].start - p.start, o + sub[k].stop - p.start))
        return tuple(out)

    def remove(self) -> None:
        """Delete the scratch folder."""
        shutil.rmtree(self.path, ignore_errors=True)


def scratch_dir(target: OutputTarget) -> Path:
    """The default folder for the scratch array: beside the output (beside the image
    group for an OME-Zarr label image)."""
    if target.label_of is not None:
        return Path(target.label_of[0]).parent
    return Path(target.path).parent


def create_scratch(plan: BlockPlan, base: str | Path) -> Scratch:
    """A scratch array in a new hidden folder inside ``base``."""
    zarr = require_zarr()

    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    path = base / f".flowseg-scratch-{uuid.uuid4().hex[:12]}.zarr"
    chunk = plan.padded_max
    shape = tuple(g * c for g, c in zip(plan.grid, chunk))
    arr = zarr.create_array(store=str(path), shape=shape, chunks=chunk, dtype="int32",
                            fill_value=0, zarr_format=3)
    return Scratch(arr, str(path), chunk)
