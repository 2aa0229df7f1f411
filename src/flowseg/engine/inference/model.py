"""``Model``: a :class:`~flowseg.engine.inference.base.ModelBase` that segments images and
estimates object diameters.

Loading, saving and the metadata are in :mod:`flowseg.engine.inference.base`; segmentation
itself in :mod:`flowseg.engine.inference.segment` (2D, slice stacks) and
:mod:`flowseg.engine.inference.volume` (3D); the diameter estimate in
:mod:`flowseg.engine.inference.size`; the result is a
:class:`~flowseg.engine.inference.result.Segmentation`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import ModelBase
from .result import Segmentation
from .segment import segment
from .size import estimate_diameter

__all__ = ["Model"]


class Model(ModelBase):
    """A flow network with its metadata that segments images (see :class:`ModelBase`)."""

    # ------------------------------------------------------------------ inference
    def segment(self, image: np.ndarray, **kwargs: Any) -> Segmentation:
        """Segment a 2D image, a stack or a 3D volume; see :func:`flowseg.engine.inference.segment.segment`."""
        return segment(self, image, **kwargs)

    def estimate_diameter(self, image: np.ndarray, **kwargs: Any) -> float:
        """Estimate the object diameter; see :func:`flowseg.engine.inference.size.estimate_diameter`."""
        return estimate_diameter(self, image, **kwargs)
