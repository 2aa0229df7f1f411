"""The three tasks a worker runs: segment a block, match it with its neighbours, write it.

They run in dask.distributed workers (other processes or machines), so they take only
picklable arguments: the :class:`RunSpec` shared by all blocks, the :class:`Block`, and
the model (sent once per worker by the caller).  Cancel reaches them through a flag file
(:class:`FileFlag`) beside the scratch array, which every worker can see.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network.tiling import TileLattice, tile_lattice
from ..progress import check_cancel
from .merge import keep_core_objects, match_labels
from .plan import Block
from .prepare import normalize_block, prepare_block
from .source import Layout
from .store import OutputTarget, Scratch

__all__ = [
    "BlockOutcome",
    "FileFlag",
    "RunSpec",
    "block_lattice",
    "match_block",
    "peak_rss_mb",
    "segment_block",
    "write_block",
]


class FileFlag:
    """A cancel token (``is_set()``) that is set when a file exists."""

    def __init__(self, path: str) -> None:
        self.path = str(path)

    def is_set(self) -> bool:
        """Whether the flag file exists."""
        return os.path.exists(self.path)

    def set(self) -> None:
        """Create the flag file."""
        with open(self.path, "w", encoding="utf-8") as fh:
            fh.write("cancel\n")


@dataclass(frozen=True)
class RunSpec:
    """What every block task of one run shares.

    Attributes
    ----------
    layout : Layout
        Axes of the input array.
    nchan : int
        The network's input channels.
    channels : tuple or None
        ``(cyto, nucleus)`` channel indices, as in :meth:`flowseg.Model.segment`.
    lohi : np.ndarray or None
        ``(nchan, 2)`` image-wide normalisation percentiles (None: no normalisation).
    segment_kwargs : dict
        Keyword arguments of :meth:`flowseg.Model.segment` (diameter included).
    scratch : Scratch
        Where the padded labels go.
    flag : str
        Path of the cancel flag file.
    skip_below : float or None
        Skip blocks whose selected channels never reach this raw intensity.
    threads : int or None
        Torch / numba threads per task (None: leave the worker's setting).
    """

    layout: Layout
    nchan: int
    channels: tuple | None
    lohi: np.ndarray | None
    segment_kwargs: dict
    scratch: Scratch
    flag: str
    skip_below: float | None = None
    threads: int | None = None


@dataclass
class BlockOutcome:
    """What a segmented block reports back (small)."""

    index: tuple[int, ...]
    n_objects: int = 0
    skipped: bool = False
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (0 where the OS does not say).

    On Linux the high-water mark of this process's own memory (``VmHWM``): ``ru_maxrss``
    survives ``exec``, so a worker process started (fork + exec) by a big parent -- a test
    run, a notebook -- would report the parent's size at the fork as its own peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0.0
    r = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024.0


#: glibc ``mallopt`` settings for a worker process: network activations (a few MB to tens of MB
#: each) come from the heap and are reused instead of being mapped and zeroed by the kernel at
#: every allocation.  dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which
#: turns off glibc's adaptive mmap threshold: a 100^3 3D run then spent 20 s in the kernel
#: (40 s wall) against 0.2 s (20 s wall) with these settings.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_TUNED = False


def tune_malloc(mmap_threshold: int = 1 << 26, trim_threshold: int = 1 << 27) -> bool:
    """Let a worker process reuse freed heap memory for large arrays (glibc only; once).

    Only in a process started for the work (a dask worker: it has a multiprocessing parent);
    the caller's own process (napari, a notebook, threads-mode workers) is left as it is.
    Returns whether the settings were applied.
    """
    global _MALLOC_TUNED
    import multiprocessing

    if (_MALLOC_TUNED or not sys.platform.startswith("linux")
            or multiprocessing.parent_process() is None):
        return False
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                    and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False


def _set_threads(n: int | None) -> None:
    """Torch and numba threads of this task's thread: numba first, since starting numba's
    thread pool set PyTorch's OpenMP threads back to all cores (a worker's first block then
    ran on 2 torch threads next to the other worker's: 25-30 % slower blocks)."""
    if n is None:
        return
    import torch

    try:
        import numba

        numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
    except (ImportError, ValueError):  # pragma: no cover
        pass
    if torch.get_num_threads() != int(n):
        torch.set_num_threads(int(n))


def segment_block(spec: RunSpec, block: Block, model: Any, data: Any,
                  preread: bool = False) -> BlockOutcome:
    """Segment one padded block and store the labels of its core objects in the scratch.

    Parameters
    ----------
    spec : RunSpec
    block : Block
    model : Model
    data : array-like or np.ndarray
        The input array (read here), or with ``preread`` the padded region already read
        with ``spec.layout.raw_index(block.padded)``.
    preread : bool
        Whether ``data`` is the region itself.
    """
    flag = FileFlag(spec.flag)
    check_cancel(flag)
    tune_malloc()
    _set_threads(spec.threads)
    t0 = time.perf_counter()
    lay = spec.layout
    raw = data if preread else data[lay.raw_index(block.padded)]
    region = lay.to_canonical(np.asarray(raw))
    del raw
    x = prepare_block(region, lay.ndim, lay.channel_axis is not None, spec.nchan, spec.channels)
    del region
    if spec.skip_below is not None and float(x.max(initial=-np.inf)) < spec.skip_below:
        return BlockOutcome(block.index, 0, True, time.perf_counter() - t0, peak_rss_mb())
    x = normalize_block(x, spec.lohi)
    with tile_lattice(block_lattice(spec, block, model)):
        seg = model.segment(x, channels=(0, 1 if spec.nchan > 1 else None), channel_axis=-1,
                            z_axis=0 if lay.ndim == 3 else None, normalize=False,
                            cancel=flag, check_memory=False,  # the plan sized the block
                            **spec.segment_kwargs)
    del x
    labels, n = keep_core_objects(seg.masks, block.core_in_padded)
    del seg
    check_cancel(flag)
    if n:
        spec.scratch.array[spec.scratch.region(block)] = labels
    return BlockOutcome(block.index, n, False, time.perf_counter() - t0, peak_rss_mb())


def block_lattice(spec: RunSpec, block: Block, model: Any) -> TileLattice | None:
    """The whole image's network tile grid for ``block`` (2D images and stacks segmented
    slice by slice): the block's core pixels then get the network outputs of an in-memory
    run wherever their tiles lie inside the padded block.  None for 3D segmentation (its
    ZX / ZY passes tile other planes)."""
    if spec.segment_kwargs.get("do_3d") and spec.layout.ndim == 3:
        return None
    full = spec.layout.spatial_shape[-2:]
    pad = block.padded[-2:]
    scale = float(model.diam_mean) / float(spec.segment_kwargs["diameter"])
    return TileLattice(origin=(pad[0].start, pad[1].start),
                       shape=(pad[0].stop - pad[0].start, pad[1].stop - pad[1].start),
                       full=(int(full[0]), int(full[1])), scale=scale)


def _intersection(a: Sequence[slice], b: Sequence[slice]) -> tuple[slice, ...] | None:
    out = []
    for s, t in zip(a, b):
        lo, hi = max(s.start, t.start), min(s.stop, t.stop)
        if hi <= lo:
            return None
        out.append(slice(lo, hi))
    return tuple(out)


def match_block(spec: RunSpec, block: Block, neighbours: Sequence[Block],
                threshold: float) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Pairs of the same object in ``block`` and each neighbour (IoU over their overlap).

    Returns
    -------
    list of (neighbour index, (k, 2) local-id pairs ``(id in block, id in neighbour)``)
    """
    check_cancel(FileFlag(spec.flag))
    mine = np.asarray(spec.scratch.array[spec.scratch.region(block)])
    out = []
    for nb in neighbours:
        common = _intersection(block.padded, nb.padded)
        if common is None:
            continue
        a = mine[tuple(slice(c.start - p.start, c.stop - p.start)
                       for c, p in zip(common, block.padded))]
        b = np.asarray(spec.scratch.array[spec.scratch.region(nb, common)])
        pairs = match_labels(a, b, threshold)
        if len(pairs):
            out.append((nb.index, pairs))
    return out


def write_block(spec: RunSpec, block: Block, lut: np.ndarray, target: OutputTarget) -> int:
    """Write ``block``'s core with final ids (``lut[local id]``); returns the pixels set."""
    check_cancel(FileFlag(spec.flag))
    local = np.asarray(spec.scratch.array[spec.scratch.region(block, block.core)])
    labels = np.asarray(lut, np.int32)[local]
    target.put(block.core, labels)
    return int(np.count_nonzero(labels))
