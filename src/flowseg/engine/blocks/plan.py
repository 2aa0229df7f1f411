"""The block plan: a regular grid of core blocks, each read with an overlap margin.

The image's spatial axes (``(Y, X)`` or ``(Z, Y, X)``) are cut into *core* blocks of
``block_size`` pixels (the last block of an axis may be smaller).  Every core block is
segmented inside its *padded* region, the core grown by ``overlap`` pixels on every side
(clipped to the image), so an object within ``overlap`` pixels of a core face is seen whole.
The cores tile the image exactly: each output pixel comes from one block.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_BLOCK_SIZE", "MIN_OVERLAP_DIAMETERS", "Block", "BlockPlan", "default_overlap",
           "make_plan"]

#: Default core block edge per number of spatial axes (2D: 1024 px; 3D: at most 256 voxels,
#: less when one block task would need too much memory: run.default_block_size).
DEFAULT_BLOCK_SIZE = {2: 1024, 3: 256}

#: Overlap must be at least this many object diameters (an object cut by a core face then
#: lies whole inside both neighbours' padded regions).
MIN_OVERLAP_DIAMETERS = 2.0

Size = int | Sequence[int]


@dataclass(frozen=True)
class Block:
    """One block of a :class:`BlockPlan`.

    Attributes
    ----------
    index : tuple of int
        Grid position.
    core : tuple of slice
        The pixels this block owns in the output (image coordinates).
    padded : tuple of slice
        The region it is segmented in: ``core`` grown by the overlap, clipped to the image.
    """

    index: tuple[int, ...]
    core: tuple[slice, ...]
    padded: tuple[slice, ...]

    @property
    def core_in_padded(self) -> tuple[slice, ...]:
        """``core`` in coordinates of the padded region."""
        return tuple(slice(c.start - p.start, c.stop - p.start)
                     for c, p in zip(self.core, self.padded))

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Shape of the padded region."""
        return tuple(p.stop - p.start for p in self.padded)


@dataclass(frozen=True)
class BlockPlan:
    """A grid of blocks over an image of spatial ``shape``.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape of the image.
    block_size : tuple of int
        Core block size per axis.
    overlap : tuple of int
        Margin per axis around each core.
    """

    shape: tuple[int, ...]
    block_size: tuple[int, ...]
    overlap: tuple[int, ...]

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of blocks per axis."""
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block_size))

    @property
    def n_blocks(self) -> int:
        """Total number of blocks."""
        return math.prod(self.grid)

    @property
    def padded_max(self) -> tuple[int, ...]:
        """The largest padded block shape (``block_size + 2 * overlap``, clipped)."""
        return tuple(min(s, b + 2 * o) for s, b, o in
                     zip(self.shape, self.block_size, self.overlap))

    def block(self, index: Sequence[int]) -> Block:
        """The block at grid position ``index``."""
        idx = tuple(int(i) for i in index)
        if len(idx) != len(self.shape) or any(not 0 <= i < g for i, g in zip(idx, self.grid)):
            raise IndexError(f"block index {idx} outside the grid {self.grid}")
        core, padded = [], []
        for i, s, b, o in zip(idx, self.shape, self.block_size, self.overlap):
            c0, c1 = i * b, min(s, (i + 1) * b)
            core.append(slice(c0, c1))
            padded.append(slice(max(0, c0 - o), min(s, c1 + o)))
        return Block(idx, tuple(core), tuple(padded))

    def __iter__(self) -> Iterator[Block]:
        for idx in itertools.product(*(range(g) for g in self.grid)):
            yield self.block(idx)

    def __len__(self) -> int:
        return self.n_blocks

    def forward_neighbours(self, index: Sequence[int]) -> list[tuple[int, ...]]:
        """Neighbours (faces, edges and corners) that come after ``index`` in grid order.

        Visiting every block's forward neighbours visits each neighbouring pair once.
        """
        idx = tuple(int(i) for i in index)
        out = []
        for off in itertools.product((-1, 0, 1), repeat=len(idx)):
            if off <= (0,) * len(idx):  # lexicographic: only the "later" half
                continue
            j = tuple(i + d for i, d in zip(idx, off))
            if all(0 <= v < g for v, g in zip(j, self.grid)):
                out.append(j)
        return out

    def faces(self) -> list[tuple[int, int]]:
        """Internal core faces as ``(axis, coordinate)`` pairs."""
        return [(ax, k * b) for ax, (s, b) in enumerate(zip(self.shape, self.block_size))
                for k in range(1, math.ceil(s / b))]


def _per_axis(value: Size, ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        vals = (value,) * ndim
    else:
        try:
            vals = tuple(value)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(f"{name} must be an integer or one integer per spatial axis, "
                             f"got {value!r}") from None
        if len(vals) != ndim:
            raise ValueError(f"{name} has {len(vals)} values but the image has {ndim} "
                             f"spatial axes")
    out = []
    for v in vals:
        if isinstance(v, bool) or not float(v).is_integer():
            raise ValueError(f"{name} must be whole numbers of pixels, got {value!r}")
        out.append(int(v))
    return tuple(out)


def default_overlap(diameter: float, ndim: int, anisotropy: float | None = None
                    ) -> tuple[int, ...]:
    """``ceil(2 * diameter)`` per axis; along z of a 3D volume divided by ``anisotropy``."""
    o = math.ceil(MIN_OVERLAP_DIAMETERS * float(diameter))
    if ndim == 3:
        oz = math.ceil(MIN_OVERLAP_DIAMETERS * float(diameter) / float(anisotropy or 1.0))
        return (oz, o, o)
    return (o,) * ndim


def make_plan(shape: Sequence[int], block_size: Size, overlap: Size | None = None, *,
              diameter: float, anisotropy: float | None = None) -> BlockPlan:
    """Check the block geometry against the object size and build the plan.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape ``(Y, X)`` or ``(Z, Y, X)``.
    block_size : int or sequence of int
        Core block size (pixels), one value or one per axis.
    overlap : int or sequence of int, optional
        Margin around each core; default :func:`default_overlap` (2 diameters).
    diameter : float
        Object diameter in pixels (in z: ``diameter / anisotropy`` slices).
    anisotropy : float, optional
        Z step / pixel size of a 3D volume.

    Raises
    ------
    ValueError
        A block smaller than one diameter (most likely a diameter or block size in the
        wrong unit), an overlap under 2 diameters, or bad values.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3) or min(shape) < 1:
        raise ValueError(f"blockwise segmentation needs a 2D or 3D spatial shape, got {shape}")
    bs = _per_axis(block_size, nd, "block_size")
    need = default_overlap(diameter, nd, anisotropy)
    ov = need if overlap is None else _per_axis(overlap, nd, "overlap")
    axes = "ZYX"[-nd:]
    for ax, b, o, n, s in zip(axes, bs, ov, need, shape):
        if b < 1 or o < 0:
            raise ValueError(f"block_size must be >= 1 and overlap >= 0, got block_size={bs}, "
                             f"overlap={ov}")
        d_ax = n / MIN_OVERLAP_DIAMETERS  # one diameter along this axis
        if b < min(d_ax, s):
            raise ValueError(f"block_size {b} along {ax} is smaller than one object diameter "
                             f"({d_ax:g} px at diameter {diameter:g}); check both are in "
                             f"pixels, and use blocks of at least {max(4 * n, 256)} px "
                             "(bigger blocks waste less time on overlaps)")
        if o < min(n, s):
            raise ValueError(f"overlap {o} along {ax} is under 2 object diameters ({n} px at "
                             f"diameter {diameter:g}); objects cut by a block face would not "
                             f"be seen whole: use overlap >= {n} (or leave it at the default)")
    return BlockPlan(shape, bs, tuple(min(o, s) for o, s in zip(ov, shape)))
