"""Model zoo: choose, per image, the model whose training images look most like it.

As in Cellpose 2.0, every image is described by a *style* vector computed by one fixed
**reference network** -- the same for all models, so that models of any width and any
training history are compared in one space -- and a model's training set by the centroid
of its images' styles.  :func:`choose_model` picks the model whose centroid is nearest
(Euclidean distance) to the image's style.

The style of an image (:func:`image_style`): its channels are selected and normalised as
for segmentation, it is shrunk (area-averaging) so its longer side is at most ``size``
pixels (default 256; never enlarged) and the reference network's encoder runs once on the
whole image; the style is the reference's L2-normalised style vector (the global average
of its deepest feature map).  With several reference
networks the styles are concatenated, each scaled by ``1/sqrt(k)`` (unit length overall).
This costs one small encoder pass per reference network and image.

A model stores its centroid in its metadata (written by :func:`training_style` at the end
of training, or by :func:`write_style` into an existing file without touching its weights)::

    meta["style"] = {
        "version": 1,
        "reference": ["nuclei", "cyto"],  # frozen reference network(s)
        "fingerprint": ["3f2a...", ...],  # sha256 (16 hex): full network each was frozen from
        "size": 256,                      # longest side of the style pass
        "centroid": [...],                # mean style of the training images (not unit length)
        "n": 544,                         # training images it averages
        "spread": 0.31,                   # mean distance of those styles to the centroid
    }

A centroid is only compared with styles computed by the same reference weights and size;
a model whose fingerprint does not match the installed reference is left out (with a
warning), never compared in a different space.

**The reference is frozen** (:mod:`flowseg.engine.inference.reference`).  The reference
networks are not the bundled models ``flowseg/models/nuclei.pt`` and ``cyto.pt`` themselves
but frozen copies of their encoders (the ``downsample`` part, all a style needs) as they were
when the zoo was introduced, ``flowseg/models/reference/<name>.pt``, written once by
``recipes/freeze_reference.py``.  Each tensor is stored in the dtype of the bundled file it
came from (``nuclei`` float16, ``cyto`` float32), so the styles are bitwise those of the full
networks, and each file records the fingerprint of the *full* network it was cut from -- the
value every centroid already stored names.  Retraining and replacing a bundled model
therefore changes neither the style space nor the fingerprints: the centroids stored in
users' models (and in the bundled files) stay comparable.  Were the reference read from the
bundled files, replacing one would leave every stored centroid out of the choice.  A missing
or damaged reference file raises :class:`~flowseg.engine.inference.reference.StyleReferenceError`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import registry
from ..io.modelfile import FORMAT, _json_check, atomic_torch_save, load_model_file
from ..network.tiling import pad_channels_first
from ..progress import CancelToken, ProgressCallback, check_cancel, report
from .base import ModelBase
from .prepare import prepare_input
from .reference import (
    DEFAULT_REFERENCE,
    StyleReference,
    StyleReferenceError,
    reference_models,
    weights_fingerprint,
)
from .style import encoder_styles
from .transforms import normalize_percentile

__all__ = ["DEFAULT_REFERENCE", "DEFAULT_SIZE", "STYLE_VERSION", "StyleReference",
           "StyleReferenceError", "choose_model", "image_style", "model_style",
           "reference_models", "training_style", "weights_fingerprint", "write_style",
           "zoo_centroids"]

#: longest image side of the style pass
DEFAULT_SIZE = 256
STYLE_VERSION = 1


def _shrink(x: np.ndarray, size: int | None) -> np.ndarray:
    """Area-average ``(H, W, C)`` down so that max(H, W) <= size (never enlarges)."""
    H, W = x.shape[:2]
    if size is None or max(H, W) <= int(size):
        return x
    f = int(size) / max(H, W)
    shape = (max(1, round(H * f)), max(1, round(W * f)))
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0), np.float32))[None]
    with torch.inference_mode():
        r = torch.nn.functional.interpolate(t, size=shape, mode="area")
    return np.ascontiguousarray(np.moveaxis(r[0].numpy(), 0, -1))


def _encoder_style(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """Style vector of a whole prepared image ``(H, W, C)``, as ``run_tiled`` computes it
    for one tile, from the encoder alone (the decoder does not change the style: ~3x less
    work)."""
    return encoder_styles(net, pad_channels_first(x)[0][None])[0]


def _reference_style(model: StyleReference | ModelBase, image: np.ndarray, *, channels=None,
                     channel_axis=None, z_axis=None, size: int | None = DEFAULT_SIZE
                     ) -> np.ndarray:
    """The unit-length style of ``image`` by one reference network (float32)."""
    x, sdim = prepare_input(model, image, channels=channels,  # type: ignore[arg-type]
                            channel_axis=channel_axis, z_axis=z_axis, normalize=False)
    if sdim == 3:
        x = x[x.shape[0] // 2]
    x = _shrink(normalize_percentile(x, *model.normalize, channel_axis=-1), size)
    return _encoder_style(model.net, x)


def image_style(image: np.ndarray, *, channels=None, channel_axis=None, z_axis=None,
                size: int | None = DEFAULT_SIZE, reference: Sequence[str] = DEFAULT_REFERENCE,
                device: Any = None, cancel: CancelToken = None) -> np.ndarray:
    """The style of one image in the reference space (unit length).

    Parameters
    ----------
    image : np.ndarray
        A 2D image (any channel layout ``Model.segment`` accepts); of a 3D volume or a stack
        (``z_axis`` given, or 4 axes) the middle slice is used (normalised on its own).
    channels, channel_axis, z_axis
        As for ``Model.segment``.
    size : int or None
        Longest side of the style pass (None: full resolution).
    reference : sequence of str
        Frozen reference network(s) whose style vectors are used (:func:`reference_models`).
    """
    parts = []
    refs = reference_models(reference, device)
    for _, model, _ in refs:
        check_cancel(cancel)
        st = _reference_style(model, image, channels=channels, channel_axis=channel_axis,
                              z_axis=z_axis, size=size)
        parts.append(st.astype(np.float64) / np.sqrt(len(refs)))
    return np.concatenate(parts)


def training_style(images: Sequence[np.ndarray], channels=None, channel_axis=None, *,
                   size: int | None = DEFAULT_SIZE, reference: Sequence[str] = DEFAULT_REFERENCE,
                   device: Any = None, progress: ProgressCallback | None = None,
                   cancel: CancelToken = None) -> dict:
    """The style centroid of a model's training images, for ``model.meta["style"]``.

    Parameters
    ----------
    images : sequence of np.ndarray
        The training images, as passed to ``train`` (a repeated image counts as often as it
        is repeated).
    channels, channel_axis
        As passed to ``train``.
    size, reference
        See :func:`image_style`.

    Returns
    -------
    dict
        ``{"version", "reference", "fingerprint", "size", "centroid", "n", "spread"}``
        (module docstring).
    """
    if len(images) == 0:
        raise ValueError("training_style needs at least one image")
    refs = reference_models(reference, device)
    styles: list[np.ndarray] = []
    cache: dict[tuple, np.ndarray] = {}  # repeated images (by content) are computed once
    for k, img in enumerate(images):
        arr = np.ascontiguousarray(img)
        key = (arr.shape, arr.dtype.str, hashlib.sha1(arr.view(np.uint8).ravel()).hexdigest())
        if key not in cache:
            cache[key] = image_style(img, channels=channels, channel_axis=channel_axis,
                                     size=size, reference=reference, device=device,
                                     cancel=cancel)
        styles.append(cache[key])
        report(progress, "style", k + 1, len(images), "style of the training images")
    S = np.asarray(styles)
    c = S.mean(0)
    return {"version": STYLE_VERSION, "reference": [r[0] for r in refs],
            "fingerprint": [r[2] for r in refs], "size": None if size is None else int(size),
            "centroid": [float(v) for v in c], "n": int(S.shape[0]),
            "spread": float(np.linalg.norm(S - c, axis=1).mean())}


def model_style(model_or_meta: ModelBase | dict) -> dict | None:
    """The ``meta["style"]`` of a model (or a metadata dict), or None if it has none."""
    meta = model_or_meta if isinstance(model_or_meta, dict) else model_or_meta.meta
    st = meta.get("style")
    if not isinstance(st, dict) or not st.get("centroid"):
        return None
    return st


@functools.lru_cache(maxsize=64)
def _file_style(path: str, mtime_ns: int) -> dict | None:
    _, meta = load_model_file(path)
    return model_style(meta)


def _resolve(spec: str | os.PathLike) -> tuple[str, Path]:
    s = os.fspath(spec)
    p = Path(s).expanduser()
    if p.is_file():
        return s, p
    if os.sep in s or "/" in s:
        raise FileNotFoundError(f"model file {p} not found")
    return s, registry.find_model(s).path


def zoo_centroids(candidates: Sequence[str | os.PathLike] | None = None,
                  reference: Sequence[str] = DEFAULT_REFERENCE, device: Any = None
                  ) -> dict[str, dict]:
    """The models that can be chosen, ``name -> meta["style"]``.

    Parameters
    ----------
    candidates : sequence of names or paths, optional
        Default: every bundled and user model (:func:`flowseg.engine.io.registry.model_entries`)
        that stores a style centroid; a user model whose name a bundled model takes is
        keyed by its path.  Named candidates must have a centroid.
    reference : sequence of str
        The reference networks of the current style space; centroids computed with other
        references or other weights are left out with a warning.
    """
    if candidates is None:
        items = [(e.name if e.label == e.name else str(e.path), e.path)
                 for e in registry.model_entries()]
    else:
        items = [_resolve(c) for c in candidates]
    fps = [fp for _, _, fp in reference_models(reference, device)]
    out: dict[str, dict] = {}
    for name, path in items:
        st = _file_style(str(path), path.stat().st_mtime_ns)
        if st is None:
            if candidates is not None:
                raise ValueError(f"model {name!r} ({path}) stores no style centroid; "
                                 "compute one with flowseg.engine.inference.zoo.write_style")
            continue
        if list(st.get("reference", [])) != list(reference) or list(st.get("fingerprint",
                                                                          [])) != fps:
            warnings.warn(f"model {name!r}: its style centroid was computed with another "
                          f"reference network ({st.get('reference')}, {st.get('fingerprint')})"
                          f"; left out of the choice", stacklevel=2)
            continue
        out[name] = st
    if not out:
        raise ValueError("no model with a style centroid to choose from (candidates: "
                         f"{', '.join(n for n, _ in items) or 'none'})")
    return out


def choose_model(image: np.ndarray, candidates: Sequence[str | os.PathLike] | None = None, *,
                 channels=None, channel_axis=None, z_axis=None,
                 reference: Sequence[str] = DEFAULT_REFERENCE, device: Any = None,
                 cancel: CancelToken = None) -> tuple[str, dict[str, float]]:
    """Pick the model whose training-style centroid is nearest to the image's style.

    Parameters
    ----------
    image : np.ndarray
        The image to segment (see :func:`image_style`).
    candidates : sequence of names or paths, optional
        See :func:`zoo_centroids` (default: bundled and user models with a centroid).
    channels, channel_axis, z_axis
        As for ``Model.segment``.

    Returns
    -------
    name : str
        The chosen model (loadable by ``Model.load``).
    distances : dict
        ``name -> distance`` of the image's style to every candidate's centroid.
    """
    zoo = zoo_centroids(candidates, reference, device)
    styles: dict[Any, np.ndarray] = {}
    dist: dict[str, float] = {}
    for name, st in zoo.items():
        size = st.get("size")
        if size not in styles:
            styles[size] = image_style(image, channels=channels, channel_axis=channel_axis,
                                       z_axis=z_axis, size=size, reference=reference,
                                       device=device, cancel=cancel)
        c = np.asarray(st["centroid"], np.float64)
        if c.shape != styles[size].shape:
            raise ValueError(f"model {name!r}: centroid of length {c.size}, styles of length "
                             f"{styles[size].size}")
        dist[name] = float(np.linalg.norm(styles[size] - c))
    return min(dist, key=dist.__getitem__), dist


def write_style(path: str | os.PathLike, style: dict) -> Path:
    """Store ``style`` as ``meta["style"]`` of the model file at ``path``.

    Only the metadata changes: the stored tensors are written back as they were read (same
    dtypes, bitwise the same); the file is replaced atomically.
    """
    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not a flowseg model file (a Cellpose file has no metadata "
                         "to store a style in: save it with Model.save first)")
    obj["meta"] = _json_check({**obj["meta"], "style": style})
    out = atomic_torch_save(obj, path)
    _file_style.cache_clear()
    return out
