"""The residual U-Net of the Cellpose method.

Parameter names follow the layout of Cellpose 1-3 model files (``downsample.down.res_down_0.
conv.conv_0.0.weight``, ..., ``output.2.bias``, ``diam_mean``, ``diam_labels``) so that a
Cellpose state dict loads as-is.  The architecture:

* encoder: 4 scales; each a residual stage of two residual units (BN -> ReLU -> conv3x3,
  twice), the first with a 1x1 BN+conv projection skip; 2x2 max-pool between scales;
* style: global average pool of the deepest map, L2-normalised;
* decoder: nearest upsampling, encoder features *added* (not concatenated), the style
  projected by a linear layer and added before each style-conditioned convolution;
* head: BN -> ReLU -> 1x1 conv to 3 maps (dY, dX, cell-probability logit).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FlowNet", "nbase_for_width"]


def nbase_for_width(width: int = 32, nchan: int = 2, depth: int = 4) -> list[int]:
    """Channel list ``[nchan, w, 2w, 4w, 8w]`` for base width ``w`` (Cellpose: w = 32)."""
    return [int(nchan)] + [int(width) * 2 ** k for k in range(depth)]


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.05)


def _batchconv(cin: int, cout: int, sz: int) -> nn.Sequential:
    """BN -> ReLU -> conv (keys ``.0`` BN, ``.2`` conv)."""
    return nn.Sequential(_bn(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, sz, padding=sz // 2))


def _batchconv0(cin: int, cout: int, sz: int) -> nn.Sequential:
    """BN -> conv, the projection skip (keys ``.0`` BN, ``.1`` conv)."""
    return nn.Sequential(_bn(cin), nn.Conv2d(cin, cout, sz, padding=sz // 2))


class _ResDown(nn.Module):
    def __init__(self, cin: int, cout: int, sz: int) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.proj = _batchconv0(cin, cout, 1)
        for t in range(4):
            self.conv.add_module(f"conv_{t}", _batchconv(cin if t == 0 else cout, cout, sz))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.conv[1](self.conv[0](x))
        return x + self.conv[3](self.conv[2](x))


class _Down(nn.Module):
    def __init__(self, nbase: Sequence[int], sz: int) -> None:
        super().__init__()
        self.down = nn.Sequential()
        self.maxpool = nn.MaxPool2d(2, stride=2)
        for n in range(len(nbase) - 1):
            self.down.add_module(f"res_down_{n}", _ResDown(nbase[n], nbase[n + 1], sz))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        xd: list[torch.Tensor] = []
        for n, block in enumerate(self.down):
            xd.append(block(x if n == 0 else self.maxpool(xd[-1])))
        return xd


class _StyleConv(nn.Module):
    """Add the projected style (and optionally a skip), then BN -> ReLU -> conv."""

    def __init__(self, cin: int, cout: int, style_channels: int, sz: int) -> None:
        super().__init__()
        self.conv = _batchconv(cin, cout, sz)
        self.full = nn.Linear(style_channels, cin)

    def forward(self, style: torch.Tensor, x: torch.Tensor, y: torch.Tensor | None = None
                ) -> torch.Tensor:
        if y is not None:
            x = x + y
        feat = self.full(style)[:, :, None, None]
        return self.conv(x + feat)


class _ResUp(nn.Module):
    def __init__(self, cin: int, cout: int, style_channels: int, sz: int) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.conv.add_module("conv_0", _batchconv(cin, cout, sz))
        for t in (1, 2, 3):
            self.conv.add_module(f"conv_{t}", _StyleConv(cout, cout, style_channels, sz))
        self.proj = _batchconv0(cin, cout, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = self.proj(x) + self.conv[1](style, self.conv[0](x), y=y)
        return x + self.conv[3](style, self.conv[2](style, x))


class _Up(nn.Module):
    def __init__(self, nbaseup: Sequence[int], sz: int) -> None:
        super().__init__()
        self.up = nn.Sequential()
        for n in range(1, len(nbaseup)):
            self.up.add_module(f"res_up_{n - 1}",
                               _ResUp(nbaseup[n], nbaseup[n - 1], nbaseup[-1], sz))

    def forward(self, style: torch.Tensor, xd: list[torch.Tensor]) -> torch.Tensor:
        x = self.up[-1](xd[-1], xd[-1], style)
        for n in range(len(self.up) - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = self.up[n](x, xd[n], style)
        return x


class FlowNet(nn.Module):
    """Residual U-Net with style vector; outputs ``(B, 3, H, W)`` maps and ``(B, S)`` styles.

    Parameters
    ----------
    nbase : sequence of int
        ``[input channels, w, 2w, 4w, 8w]``; Cellpose uses ``[2, 32, 64, 128, 256]``.
    nout : int
        Output maps (3: dY, dX, cell-probability logit).
    sz : int
        Convolution kernel size.
    diam_mean : float
        Mean object diameter the model is trained for (stored in the state dict).
    """

    def __init__(self, nbase: Sequence[int] = (2, 32, 64, 128, 256), nout: int = 3,
                 sz: int = 3, diam_mean: float = 30.0) -> None:
        super().__init__()
        self.nbase = [int(c) for c in nbase]
        self.nout = int(nout)
        self.sz = int(sz)
        self.downsample = _Down(self.nbase, self.sz)
        nbaseup = self.nbase[1:] + [self.nbase[-1]]
        self.upsample = _Up(nbaseup, self.sz)
        self.output = _batchconv(nbaseup[0], self.nout, 1)
        self.diam_mean = nn.Parameter(torch.full((1,), float(diam_mean)), requires_grad=False)
        self.diam_labels = nn.Parameter(torch.full((1,), float(diam_mean)), requires_grad=False)

    @property
    def nchan(self) -> int:
        """Number of input channels."""
        return self.nbase[0]

    @property
    def downsampling(self) -> int:
        """Total spatial downsampling factor; input sizes must be multiples of it."""
        return 2 ** (len(self.nbase) - 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, nchan, H, W)``; H and W multiples of :attr:`downsampling`.

        Returns
        -------
        out : torch.Tensor
            ``(B, 3, H, W)``: dY, dX (flows scaled by 5 in training) and cellprob logit.
        style : torch.Tensor
            ``(B, 8w)`` L2-normalised style vectors.
        """
        xd = self.downsample(x)
        style = xd[-1].mean(dim=(2, 3))
        style = style / torch.sqrt((style ** 2).sum(dim=1, keepdim=True)).clamp_min(1e-12)
        y = self.upsample(style, xd)
        return self.output(y), style
