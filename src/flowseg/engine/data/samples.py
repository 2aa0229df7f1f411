"""Bundled sample images, made by the project's own synthetic renderer (never real data).

They are generated on demand from fixed seeds (a fraction of a second each) so the package
ships no image files, and they come with their ground truth so examples can be scored.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from .synthetic import make_sample

__all__ = ["SAMPLES", "load_sample", "sample_names"]

#: name -> (description, generator arguments)
SAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "nuclei": (
        "2D fluorescent nuclei (DAPI-like), 1 channel, ~17 px diameter",
        {"kind": "nuclei", "shape": (320, 320), "seed": 11, "noise": 1.2, "blur": 1.2},
    ),
    "cells": (
        "2D fluorescent cytoplasm + nuclear channel, ~30 px diameter",
        {"kind": "cells", "shape": (384, 384), "seed": 12, "with_nuclei": True, "noise": 1.0,
         "blur": 1.0},
    ),
    "cells3d": (
        "3D fluorescent cytoplasm + nuclear channel, 40x128x128, ~24 px diameter",
        {"kind": "cells", "shape": (40, 128, 128), "seed": 14, "with_nuclei": True,
         "diameter": 24.0, "noise": 1.0, "blur": 1.0},
    ),
}


def sample_names() -> list[str]:
    """Names accepted by :func:`load_sample`."""
    return list(SAMPLES)


@lru_cache(maxsize=8)
def _generate(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    desc, kwargs = SAMPLES[name]
    s = make_sample(**kwargs)
    img = s.image
    # store as a camera would: 16-bit, with an offset
    img = np.clip(img / max(float(img.max()), 1e-6) * 20000 + 100, 0, 65535).astype(np.uint16)
    return img, s.labels, s.diameter


def load_sample(name: str = "cells") -> tuple[np.ndarray, dict[str, Any]]:
    """Return a sample image and its description.

    Parameters
    ----------
    name : str
        One of :func:`sample_names` (``"nuclei"``, ``"cells"``, ``"cells3d"``).

    Returns
    -------
    image : np.ndarray
        uint16, channels last: ``(Y, X, C)`` or ``(Z, Y, X, C)``.
    info : dict
        ``name``, ``description``, ``channel_axis`` (-1), ``channels`` (indices of the
        cytoplasm and nuclear channel, the latter None when absent), ``diameter`` (true
        median diameter, pixels), ``labels`` (ground-truth int32 labels), ``ndim`` (spatial).
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
    img, labels, diam = _generate(name)
    nch = img.shape[-1]
    info = {
        "name": name,
        "description": SAMPLES[name][0],
        "channel_axis": -1,
        "channels": (0, 1 if nch > 1 else None),
        "diameter": diam,
        "labels": labels.copy(),
        "ndim": labels.ndim,
    }
    return img.copy(), info
