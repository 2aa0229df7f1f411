"""The mask parameters: how flows and cell probabilities become masks, defaults defined once.

:class:`MaskParams` is used by :func:`flowseg.engine.flows.masks.compute_masks`,
:meth:`flowseg.Model.segment` (its keyword defaults), :meth:`flowseg.Segmentation.recompute`,
the ``flowseg`` command's options and the napari widgets' controls.  This module imports
nothing heavy (no numba, no torch), so the widgets can read the defaults at start-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ..errors import InputError

__all__ = ["SAMPLINGS", "MaskParams", "check_sampling"]

#: 3D flow sampling of the dynamics, see :func:`flowseg.engine.flows.dynamics.flows_to_masks`
SAMPLINGS = ("exact", "cellpose3")


def check_sampling(sampling: str) -> str:
    """Validate a 3D flow sampling name (``"exact"`` or ``"cellpose3"``)."""
    if sampling not in SAMPLINGS:
        raise InputError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return sampling


def _number(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}")
    return v


def _integer(name: str, value: Any) -> int:
    v = _number(name, value)
    if v != int(v):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(v)


@dataclass(frozen=True)
class MaskParams:
    """How flows and cell probabilities become masks (validated on construction).

    Attributes
    ----------
    cellprob_threshold : float
        Pixels with a cell-probability logit above it are followed along the flows.
    flow_threshold : float
        Largest flow error a 2D mask may have (0 disables the check; 3D has none).
    min_size : int
        Masks with fewer pixels (voxels) are removed (0 or -1 disables).
    niter : int or None
        Euler steps of the dynamics; None: ``200 * diameter / diam_mean`` at image
        resolution (:func:`flowseg.engine.inference.prepare.default_niter`), or 200 when
        there is no diameter (:func:`flowseg.flows_to_masks`).
    stitch_threshold : float
        For a stack segmented slice by slice: masks of neighbouring slices overlapping by
        more than this IoU become one 3D object (0: slices labelled independently).
    sampling : {"exact", "cellpose3"}
        How the 3D dynamics sample the flows (see :func:`flowseg.flows_to_masks`).

    Raises
    ------
    InputError
        For a value out of range (the message names the parameter).
    """

    cellprob_threshold: float = 0.0
    flow_threshold: float = 0.4
    min_size: int = 15
    niter: Optional[int] = None
    stitch_threshold: float = 0.0
    sampling: str = "exact"

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("cellprob_threshold", _number("cellprob_threshold", self.cellprob_threshold))
        flow = _number("flow_threshold", 0.0 if self.flow_threshold is None
                       else self.flow_threshold)
        if flow < 0:
            raise InputError(f"flow_threshold must be >= 0 (0 disables the check), got {flow}")
        put("flow_threshold", flow)
        size = _integer("min_size", self.min_size)
        if size < -1:
            raise InputError(f"min_size must be an integer >= -1, got {self.min_size!r}")
        put("min_size", size)
        if self.niter is not None:
            n = _integer("niter", self.niter)
            if n < 1:
                raise InputError(f"niter must be >= 1 (or None), got {self.niter!r}")
            put("niter", n)
        stitch = _number("stitch_threshold", self.stitch_threshold)
        if not 0.0 <= stitch <= 1.0:
            raise InputError(f"stitch_threshold must be in [0, 1], got {self.stitch_threshold}")
        put("stitch_threshold", stitch)
        put("sampling", check_sampling(self.sampling))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MaskParams:
        """The parameters found in ``values`` (other keys ignored; missing: the defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes: Any) -> MaskParams:
        """A copy with ``changes`` applied; a change of None keeps the current value."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """``{name: value}`` of every parameter (the keyword arguments of
        :meth:`flowseg.Model.segment` of the same names)."""
        return dataclasses.asdict(self)
