"""Running the network on images of any size: padding, overlapping tiles, taper blending.

An image (already normalised and resized to the model's diameter) is padded to a multiple of
16 plus an 8-pixel margin on every side, cut into ``bsize`` x ``bsize`` tiles overlapping by
``tile_overlap`` (as in the Cellpose method, so results match it), run through the network in
batches (tiles of several images share a batch), and blended back with a sigmoid taper that
down-weights tile borders.  ``augment=True`` uses tiles overlapping by half, each flipped in a
different direction, un-flipped (with the matching flow components negated) before blending.

Blocks of a bigger image (:mod:`flowseg.engine.blocks`) can share the bigger image's tile
grid: inside :func:`tile_lattice` the tiles are placed where the whole image's tiles are
(:class:`TileLattice`), so pixels whose tiles lie inside the block get the same network
outputs as in one run over the whole image.

CPU speed: the network runs in ``torch.inference_mode`` with channels-last tensors and its
BatchNorm layers folded into per-channel multiply-adds (:func:`inference_net`): the same
computation, results agree with the plain network to float rounding (~1e-6).
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..progress import CancelToken, ProgressCallback, check_cancel, report

__all__ = ["TileLattice", "forward", "inference_net", "input_tensor", "pad_amounts",
           "pad_channels_first", "run_tiled",
           "taper_mask", "tile_lattice", "tile_starts"]

_DIV = 16


def pad_amounts(L: int, div: int = _DIV, extra: int = _DIV // 2) -> tuple[int, int]:
    """Padding (before, after) making ``L`` a multiple of ``div`` plus ``extra`` on each side."""
    p = int(div * np.ceil(L / div) - L)
    return extra + p // 2, extra + p - p // 2


def tile_starts(L: int, bsize: int, overlap: float, augment: bool = False) -> np.ndarray:
    """Start offsets of tiles of size ``min(bsize, L)`` covering ``[0, L)``."""
    if augment:
        n = max(2, int(np.ceil(2.0 * L / bsize)))
        return np.linspace(0, max(L - bsize, 0), n).astype(int)
    overlap = min(0.5, max(0.05, float(overlap)))
    n = 1 if bsize >= L else int(np.ceil((1.0 + 2 * overlap) * L / bsize))
    return np.linspace(0, L - min(bsize, L), n).astype(int)


@dataclass(frozen=True)
class TileLattice:
    """Where an image sits in a bigger one whose tile grid :func:`run_tiled` should use.

    Attributes
    ----------
    origin : (int, int)
        ``(y, x)`` of the image's first pixel in the full image (image pixels).
    shape : (int, int)
        The image's own ``(H, W)`` (image pixels, before any resizing).
    full : (int, int)
        The full image's ``(H, W)`` (image pixels).
    scale : float
        Network scale / image scale (``diam_mean / diameter``): the images reaching
        :func:`run_tiled` were resized by it (``int(H * scale)`` pixels, as
        :func:`~flowseg.engine.inference.transforms.resize_image` makes them).
    """

    origin: tuple[int, int]
    shape: tuple[int, int]
    full: tuple[int, int]
    scale: float = 1.0

    def axes(self, hw: Sequence[int]) -> Optional[list[tuple[int, int]]]:
        """Per axis ``(offset, full length)`` at network scale for images of spatial shape
        ``hw``; None when ``hw`` is not this image at ``scale`` (then the lattice does not
        apply: another image, e.g. a 3D volume's ZX planes)."""
        out = []
        for n, o, s, f in zip(hw, self.origin, self.shape, self.full):
            resized = self.scale != 1.0
            if int(n) != (max(1, int(s * self.scale)) if resized else s):
                return None
            g = max(1, int(f * self.scale)) if resized else int(f)
            # pixel centres: this image's pixel 0 lies at o + 0.5 * s / n - 0.5 (image
            # pixels), the full image's pixel i at (i + 0.5) * f / g - 0.5
            off = int(round((o + 0.5 * s / int(n)) * g / f - 0.5))
            out.append((min(max(off, 0), max(g - int(n), 0)), g))
        return out


_LATTICE: ContextVar[Optional[TileLattice]] = ContextVar("flowseg_tile_lattice", default=None)


@contextlib.contextmanager
def tile_lattice(lattice: Optional[TileLattice]) -> Iterator[None]:
    """Within this context :func:`run_tiled` places tiles on ``lattice``'s grid (None: its
    own).  A context variable: it holds in this thread (or asyncio task) only."""
    token = _LATTICE.set(lattice)
    try:
        yield
    finally:
        _LATTICE.reset(token)


def _axis_grid(L: int, bsize: int, overlap: float, augment: bool, pad_extra: int,
               whole: Optional[int], geom: Optional[tuple[int, int]]
               ) -> tuple[int, int, np.ndarray, int, int]:
    """Tiling along one axis of length ``L``: ``(data start, canvas length, tile starts,
    tile length, index of the first tile in the full grid)``.

    ``geom``: ``(offset, full length)`` of the image in a bigger one whose grid is used;
    ``whole``: the tile length when the image runs as one tile.
    """
    if geom is None:
        p = pad_amounts(L, extra=pad_extra)
        Lp = L + sum(p)
        if augment:
            Lp = max(Lp, bsize)
        size = whole or bsize
        return p[0], Lp, tile_starts(Lp, size, overlap, augment), min(size, Lp), 0
    off, full = geom
    p = pad_amounts(full, extra=pad_extra)
    Lp = full + sum(p)
    if augment:
        Lp = max(Lp, bsize)
    starts = tile_starts(Lp, bsize, overlap, augment)
    ly = min(bsize, Lp)
    d0 = off + p[0]
    sel = np.flatnonzero((starts < d0 + L) & (starts + ly > d0))
    c0, c1 = int(starts[sel[0]]), int(starts[sel[-1]]) + ly
    # data outside the full image's canvas cannot happen for a block of the image
    return d0 - c0, c1 - c0, starts[sel] - c0, ly, int(sel[0])


def pad_channels_first(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    """``x`` ``(..., H, W, C)`` as float32 ``(..., C, Hp, Wp)``, zero-padded by
    :func:`pad_amounts` on each axis as a whole image is padded; returns it and the
    ``(before, after)`` pads of y and x."""
    *lead, H, W, C = x.shape
    py, px = pad_amounts(H), pad_amounts(W)
    padded = np.zeros((*lead, C, H + sum(py), W + sum(px)), np.float32)
    padded[..., py[0]:py[0] + H, px[0]:px[0] + W] = np.moveaxis(x, -1, -3)
    return padded, py, px


def taper_mask(ly: int, lx: int, sig: float = 7.5) -> np.ndarray:
    """Blending weights of a ``(ly, lx)`` tile: ~1 inside, sigmoid fall-off over ~20 px."""
    b = max(224, ly, lx)
    d = np.abs(np.arange(b) - (b - 1) / 2.0)
    w = 1.0 / (1.0 + np.exp((d - (b / 2.0 - 20.0)) / sig))
    y0, x0 = b // 2 - ly // 2, b // 2 - lx // 2
    return np.outer(w[y0:y0 + ly], w[x0:x0 + lx]).astype(np.float32)


def _net_device(net: torch.nn.Module) -> torch.device:
    return next(net.parameters()).device


def input_tensor(net: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """A batch ``(B, C, H, W)`` as float32 on ``net``'s device (channels-last on CPU, the
    layout of :func:`inference_net`)."""
    dev = _net_device(net)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)
    if dev.type == "cpu":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def forward(net: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``net`` on a batch ``(B, C, H, W)`` float32; returns ``(B, 3, H, W)``, ``(B, S)``."""
    t = input_tensor(net, x)
    with torch.inference_mode():
        y, style = net(t)
    return (y.float().contiguous().cpu().numpy(), style.float().cpu().numpy())


class _Affine(nn.Module):
    """Eval-mode BatchNorm as one fused multiply-add (about 2x faster than batch_norm on CPU)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        with torch.no_grad():
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
        self.register_buffer("scale", scale.reshape(1, -1, 1, 1).clone())
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


_FAST: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _weights_key(net: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version) for t in net.state_dict(keep_vars=True).values())


def inference_net(net: nn.Module) -> nn.Module:
    """An inference copy of ``net``: BatchNorm folded to affine maps, channels-last on CPU.

    Computes the same function (to float rounding, ~1e-6); the copy is cached until the
    weights of ``net`` change (in-place updates bump tensor versions), and ``net`` itself
    is left untouched (still trainable, same memory format).
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in net.modules()):
        net.eval()
        return net
    key = _weights_key(net)
    hit = _FAST.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    fast = copy.deepcopy(net).eval()
    for mod in list(fast.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(mod, name, _Affine(child))
    if _net_device(fast).type == "cpu":
        fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    _FAST[net] = (key, fast)
    return fast


def _prepare_net(net: nn.Module) -> nn.Module:
    return inference_net(net)


def _flip(t: np.ndarray, j: int, i: int) -> np.ndarray:
    """Flip pattern of tile (row j, column i) in augment mode (its own inverse on images)."""
    if j % 2 == 1:
        t = t[..., :, ::-1]
    if i % 2 == 1:
        t = t[..., ::-1, :]
    return t


def run_tiled(net: torch.nn.Module, x: np.ndarray, *, bsize: int = 224,
              tile_overlap: float = 0.1, batch_size: int = 8, augment: bool = False,
              whole_max: int = 0, pad_extra: int = _DIV // 2,
              progress: Optional[ProgressCallback] = None, cancel: CancelToken = None,
              stage: str = "tiles") -> tuple[np.ndarray, np.ndarray]:
    """Network outputs for a stack of prepared images.

    Parameters
    ----------
    net : torch.nn.Module
        A :class:`~flowseg.engine.network.unet.FlowNet` (or Cellpose ``CPnet``-like) network.
    x : np.ndarray
        ``(N, H, W, C)`` or ``(H, W, C)`` float32, normalised, at the model's scale.
    bsize : int
        Tile size (multiple of 16).
    tile_overlap : float
        Fraction of overlap between neighbouring tiles (clipped to [0.05, 0.5]).
    batch_size : int
        Tiles per network call.
    augment : bool
        Half-overlapping flipped tiles, averaged.
    whole_max : int
        If the padded image has at most this many pixels, run it as one tile (no overlap
        overhead: ~1.6x less work than 224-pixel tiles for a 512x512 image; the style vector
        is then that of the whole image).  0: always use ``bsize`` tiles, as Cellpose does.
    pad_extra : int
        Zero margin added on every side (Cellpose: 8).

    Returns
    -------
    y : np.ndarray
        float32 ``(N, 3, H, W)`` (or ``(3, H, W)``): dY, dX (5x flows), cell-probability logit.
    styles : np.ndarray
        float32 ``(N, S)`` (or ``(S,)``) L2-normalised sums of the tiles' styles.
    """
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"run_tiled expects (N, H, W, C) images, got shape {x.shape}")
    bsize = int(bsize)
    if bsize < _DIV or bsize % _DIV:
        raise ValueError(f"bsize must be a positive multiple of {_DIV}, got {bsize}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    N, H, W, C = x.shape
    net = _prepare_net(net)
    lattice = _LATTICE.get()
    geoms = None if lattice is None else lattice.axes((H, W))
    if geoms is not None and not augment and int(whole_max) > 0:
        full = [g + sum(pad_amounts(g, extra=pad_extra)) for _, g in geoms]
        if full[0] * full[1] <= int(whole_max):
            geoms = None  # the full image is one tile: nothing to share with it
    if geoms is None:
        geoms = [None, None]
        Hp = H + sum(pad_amounts(H, extra=pad_extra))
        Wp = W + sum(pad_amounts(W, extra=pad_extra))
        whole = max(Hp, Wp) if not augment and Hp * Wp <= int(whole_max) else None
    else:
        whole = None
    py0, Hp, ys, ly, j0 = _axis_grid(H, bsize, tile_overlap, augment, pad_extra, whole,
                                     geoms[0])
    px0, Wp, xs, lx, i0 = _axis_grid(W, bsize, tile_overlap, augment, pad_extra, whole,
                                     geoms[1])
    mask = taper_mask(ly, lx)
    # large (whole-image) tiles: fewer per batch, so a batch never holds more pixels than
    # batch_size tiles of 224 x 224 (bounded activation memory, as with Cellpose tiles)
    batch_size = max(1, min(int(batch_size), int(batch_size) * 224 * 224 // (ly * lx)))
    tiles = [(n, j, i) for n in range(N) for j in range(len(ys)) for i in range(len(xs))]
    ntot = len(tiles)
    nout = None
    yf: Optional[np.ndarray] = None
    wsum = np.zeros((Hp, Wp), np.float32)
    for j in range(len(ys)):
        for i in range(len(xs)):
            wsum[ys[j]:ys[j] + ly, xs[i]:xs[i] + lx] += mask
    styles = None
    cur_n, padded = -1, None
    report(progress, stage, 0, ntot, "running the network")
    for b0 in range(0, ntot, int(batch_size)):
        check_cancel(cancel)
        batch = tiles[b0:b0 + int(batch_size)]
        inp = np.empty((len(batch), C, ly, lx), np.float32)
        for k, (n, j, i) in enumerate(batch):
            if n != cur_n:
                padded = np.zeros((C, Hp, Wp), np.float32)
                padded[:, py0:py0 + H, px0:px0 + W] = np.moveaxis(x[n], -1, 0)
                cur_n = n
            t = padded[:, ys[j]:ys[j] + ly, xs[i]:xs[i] + lx]
            inp[k] = _flip(t, j + j0, i + i0) if augment else t
        out, st = forward(net, inp)
        if yf is None:
            nout = out.shape[1]
            yf = np.zeros((N, nout, Hp, Wp), np.float32)
            styles = np.zeros((N, st.shape[1]), np.float32)
        for k, (n, j, i) in enumerate(batch):
            o = out[k]
            if augment:
                o = _flip(o, j + j0, i + i0).copy()
                if (i + i0) % 2 == 1:
                    o[0] *= -1
                if (j + j0) % 2 == 1:
                    o[1] *= -1
            yf[n, :, ys[j]:ys[j] + ly, xs[i]:xs[i] + lx] += o * mask
            styles[n] += st[k]
        report(progress, stage, min(b0 + len(batch), ntot), ntot, "running the network")
    yf /= wsum
    yf = yf[:, :, py0:py0 + H, px0:px0 + W]
    styles /= np.sqrt((styles ** 2).sum(axis=1, keepdims=True)).clip(1e-12)
    if single:
        return np.ascontiguousarray(yf[0]), styles[0]
    return yf, styles
