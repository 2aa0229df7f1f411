"""Style vectors for the size model, from the network's encoder on a few tiles of a view.

The size model (:mod:`flowseg.engine.inference.size`) regresses the log object diameter on
the network's *style*: the L2-normalised global average of the encoder's deepest feature
map.  :func:`flowseg.engine.network.tiling.run_tiled` returns, for an image, the normalised
sum of its tiles' styles; computing that with the whole network on every tile of a big image
costs more than a segmentation.  Here the same quantity is computed

* from the **encoder alone** (the decoder does not change the style: about a third of the
  network's work), and
* on at most ``max_tiles`` tiles of the ``run_tiled`` grid, spread evenly over the image
  (all of them when there are fewer): the same padding, the same 224-pixel tiles and the
  same overlap, so with every tile the result equals ``run_tiled``'s style to float
  rounding.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ..network.tiling import inference_net, input_tensor, pad_channels_first, tile_starts
from ..progress import CancelToken, check_cancel

__all__ = ["ENCODER_SHARE", "encoder_styles", "spread", "tiles_style"]

#: the encoder's share of the network's floating-point work (0.41 for the standard
#: 32-64-128-256 and the 16-...-128 networks, ``torch.utils.flop_counter`` on 224 tiles)
ENCODER_SHARE = 0.41


def spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices in ``range(n)``, evenly spread (the centres of ``k`` equal parts)."""
    n, k = int(n), int(k)
    if k >= n:
        return np.arange(n)
    return np.unique(np.floor((np.arange(k) + 0.5) * n / k).astype(int))


def encoder_styles(net: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """L2-normalised styles ``(B, S)`` of a batch ``(B, C, H, W)`` (H, W multiples of 16)."""
    fast = inference_net(net)
    t = input_tensor(fast, batch)
    with torch.inference_mode():
        st = fast.downsample(t)[-1].mean(dim=(2, 3))
        st = st / st.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return st.float().cpu().numpy()


def tiles_style(net: torch.nn.Module, x: np.ndarray, *, max_tiles: Optional[int] = None,
                bsize: int = 224, tile_overlap: float = 0.1, batch_size: int = 8,
                cancel: CancelToken = None) -> tuple[np.ndarray, int]:
    """Style of a prepared image ``(H, W, C)`` from the encoder on (some of) its tiles.

    Parameters
    ----------
    net : torch.nn.Module
        The flow network.
    x : np.ndarray
        ``(H, W, C)`` float32, normalised, at the scale the style is wanted at.
    max_tiles : int, optional
        Use at most this many tiles of the grid (rows and columns picked evenly, about
        ``sqrt(max_tiles)`` of each); None: all.
    bsize, tile_overlap
        The tile grid (as :func:`flowseg.engine.network.tiling.run_tiled` with
        ``whole_max=0``).
    batch_size : int
        Tiles per encoder call.
    cancel : CancelToken
        Checked between batches.

    Returns
    -------
    style : np.ndarray
        float32 ``(S,)``: the L2-normalised sum of the tiles' styles.
    n_tiles : int
        Tiles used.
    """
    padded, _, _ = pad_channels_first(x)
    Hp, Wp = padded.shape[1:]
    ys, xs = tile_starts(Hp, bsize, tile_overlap), tile_starts(Wp, bsize, tile_overlap)
    rows, cols = np.arange(len(ys)), np.arange(len(xs))
    if max_tiles is not None and len(ys) * len(xs) > int(max_tiles):
        k = max(1, int(max_tiles))
        ky = int(np.clip(round(np.sqrt(k * len(ys) / len(xs))), 1, len(ys)))
        kx = int(np.clip(k // ky, 1, len(xs)))
        rows, cols = spread(len(ys), ky), spread(len(xs), kx)
    ly, lx = min(bsize, Hp), min(bsize, Wp)
    tiles = [(ys[j], xs[i]) for j in rows for i in cols]
    total = np.zeros(0, np.float64)
    for b0 in range(0, len(tiles), max(1, int(batch_size))):
        check_cancel(cancel)
        batch = np.stack([padded[:, y0:y0 + ly, x0:x0 + lx]
                          for y0, x0 in tiles[b0:b0 + max(1, int(batch_size))]])
        s = encoder_styles(net, batch).sum(0).astype(np.float64)
        total = s if total.size == 0 else total + s
    style = total / max(float(np.sqrt((total ** 2).sum())), 1e-12)
    return style.astype(np.float32), len(tiles)
