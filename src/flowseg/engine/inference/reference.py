"""The model zoo's frozen style reference: encoders of the bundled networks, frozen.

The zoo (:mod:`flowseg.engine.inference.zoo`) compares every model's stored style centroid in
the style space of fixed *reference networks* (:data:`DEFAULT_REFERENCE`).  They are not the
bundled models ``flowseg/models/nuclei.pt`` and ``cyto.pt`` themselves -- those are retrained
and replaced -- but frozen copies of their encoders (the ``downsample.*`` tensors: all
:func:`flowseg.engine.inference.style.encoder_styles` runs) as they were when the zoo was
introduced, in ``flowseg/models/reference/<name>.pt`` (:func:`reference_dir`), written once
by :func:`freeze_reference` (``recipes/freeze_reference.py``).

A reference file (``torch.save`` of a dict, read with ``weights_only=True``)::

    {"format": "flowseg-style-reference", "format_version": 1, "name": "nuclei",
     "fingerprint": "936be3248af69267",          # of the full network it was cut from
     "encoder_fingerprint": "...",               # of the stored tensors (checked on loading)
     "state_dict": {"downsample....": tensor},   # dtypes as in the model file (bitwise styles)
     "meta": {"nbase", "nchan", "normalize", "diam_mean", "channels", "frozen_from",
              "frozen_from_sha256"}}

``fingerprint`` is :func:`weights_fingerprint` of the full network as
:meth:`~flowseg.engine.inference.base.ModelBase.load` builds it -- the value the centroids
stored with that reference name carry -- so replacing a bundled model changes neither the
styles nor the fingerprints.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io.modelfile import (
    ModelFileError,
    _json_check,
    atomic_torch_save,
    infer_nbase,
    load_model_file,
    load_torch_file,
)
from ..network.unet import _Down
from .base import ModelBase, resolve_device

__all__ = ["DEFAULT_REFERENCE", "REFERENCE_FORMAT", "StyleReference", "StyleReferenceError",
           "freeze_reference", "load_style_reference", "reference_dir", "reference_models",
           "weights_fingerprint"]

#: the reference networks whose (concatenated) style space every model is compared in (frozen
#: encoders of the bundled models of that name, :func:`reference_dir`); chosen by
#: measurement (``recipes/zoo_centroids.py --compare``): on the held-out images both
#: networks together separate DSB fluorescence nuclei from Usiigaci phase-contrast cells
#: best (47/47, 6/6 at size 256; ``nuclei`` alone 44/47, ``cyto`` 46/47; size 512: 4x the cost)
DEFAULT_REFERENCE: tuple[str, ...] = ("nuclei", "cyto")
#: ``format`` of a frozen style reference file
REFERENCE_FORMAT = "flowseg-style-reference"
REFERENCE_FORMAT_VERSION = 1
_PREFIX = "downsample."
_FP_RE = re.compile(r"[0-9a-f]{16}")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class StyleReferenceError(ModelFileError):
    """A frozen style reference that is unknown, missing or damaged (a ``ValueError``)."""


def weights_fingerprint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 (first 16 hex digits) of a network's weights as float32, in key order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        v = state_dict[k].detach().to("cpu")
        if v.is_floating_point():
            v = v.float()
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]


def reference_dir() -> Path:
    """Folder of the frozen style references (``flowseg/models/reference``).

    Deliberately not :func:`flowseg.engine.io.registry.bundled_model_dir`: the references
    must not change when the bundled models do (module docstring).
    """
    return Path(__file__).resolve().parents[2] / "models" / "reference"


class _Encoder(nn.Module):
    """The encoder (``downsample``) of a flow network: all :func:`encoder_styles` runs."""

    def __init__(self, nbase: Sequence[int], sz: int = 3) -> None:
        super().__init__()
        self.nbase = [int(c) for c in nbase]
        self.downsample = _Down(self.nbase, int(sz))

    @property
    def nchan(self) -> int:
        """Number of input channels."""
        return self.nbase[0]


class StyleReference:
    """A frozen reference network: a flow network's encoder and what preparing an image for it
    needs; the ``model`` of :func:`reference_models`' ``(name, model, fingerprint)``.

    Attributes
    ----------
    name : str
        The reference's name (``"nuclei"``, ``"cyto"``).
    net : torch.nn.Module
        The encoder (a module with a ``downsample`` attribute, as a flow network has); styles
        by :func:`flowseg.engine.inference.style.encoder_styles`.
    meta : dict
        ``nbase``, ``nchan``, ``normalize`` and where the encoder was frozen from.
    fingerprint : str
        :func:`weights_fingerprint` of the *full* network it was cut from.
    path : pathlib.Path or None
        The reference file.
    """

    def __init__(self, name: str, net: _Encoder, meta: dict, fingerprint: str,
                 path: Path | None = None, device: Any = None) -> None:
        self.name = str(name)
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.meta = dict(meta)
        self.fingerprint = str(fingerprint)
        self.path = path

    @property
    def nchan(self) -> int:
        """Network input channels."""
        return int(self.net.nchan)

    @property
    def normalize(self) -> tuple[float, float]:
        """Normalisation percentiles ``(lo, hi)`` of the network it was cut from."""
        lo, hi = self.meta.get("normalize") or (1.0, 99.0)
        return float(lo), float(hi)

    def __repr__(self) -> str:
        return (f"StyleReference({self.name!r}, nbase={self.net.nbase}, "
                f"fingerprint={self.fingerprint}, device={self.device.type})")


def freeze_reference(model_path: str | os.PathLike, out_path: str | os.PathLike, *,
                     name: str | None = None, overwrite: bool = False) -> Path:
    """Write the encoder of the model file at ``model_path`` as a frozen style reference.

    Parameters
    ----------
    model_path : path-like
        A flowseg model file (or Cellpose 1-3 weight file).
    out_path : path-like
        The reference file to write (conventionally ``reference_dir() / f"{name}.pt"``).
    name : str, optional
        The reference's name (default: the stem of ``model_path``).
    overwrite : bool
        Replace an existing file; otherwise :class:`FileExistsError`.

    Returns
    -------
    pathlib.Path
        The written path.

    Notes
    -----
    The ``downsample.*`` tensors are stored as they are in ``model_path`` (same dtypes), with
    the :func:`weights_fingerprint` of the full network as :meth:`ModelBase.load` builds it
    (the fingerprint centroids computed with that model name) and that of the stored encoder
    (checked on loading).
    """
    model_path, out_path = Path(model_path), Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"style reference {out_path} exists (pass overwrite=True to "
                              "replace it)")
    name = model_path.stem if name is None else str(name)
    sd, meta = load_model_file(model_path)
    full = ModelBase.load(model_path, device="cpu")
    enc = {k: v.detach().to("cpu").clone() for k, v in sd.items() if k.startswith(_PREFIX)}
    if not enc:
        raise ModelFileError(f"{model_path}: no encoder ({_PREFIX}*) weights")
    with open(model_path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    payload = {"format": REFERENCE_FORMAT, "format_version": REFERENCE_FORMAT_VERSION,
               "name": name, "fingerprint": weights_fingerprint(full.net.state_dict()),
               "encoder_fingerprint": weights_fingerprint(enc), "state_dict": enc,
               "meta": _json_check({"nbase": list(full.net.nbase), "nchan": full.nchan,
                                    "normalize": list(full.normalize),
                                    "diam_mean": full.diam_mean,
                                    "channels": meta.get("channels"),
                                    "frozen_from": model_path.name,
                                    "frozen_from_sha256": digest})}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_torch_save(payload, out_path)


def load_style_reference(path: str | os.PathLike, device: Any = None) -> StyleReference:
    """Read a frozen style reference file (``weights_only=True``).

    Raises
    ------
    StyleReferenceError
        If the file is missing, is not a style reference, or its weights are not those it
        was written with.
    """
    path = Path(path)
    if not path.is_file():
        raise StyleReferenceError(f"style reference {path} is missing")
    obj = load_torch_file(path, StyleReferenceError, f"style reference {path} is damaged")
    bad = f"style reference {path} is damaged or not a style reference file"
    if not isinstance(obj, Mapping) or obj.get("format") != REFERENCE_FORMAT:
        what = obj.get("format") if isinstance(obj, Mapping) else type(obj).__name__
        raise StyleReferenceError(f"{bad} (format {what!r})")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > REFERENCE_FORMAT_VERSION:
        raise StyleReferenceError(f"style reference {path}: format version {version!r} is newer "
                                  f"than this flowseg supports ({REFERENCE_FORMAT_VERSION})")
    sd, meta, fp = obj.get("state_dict"), obj.get("meta"), obj.get("fingerprint")
    if (not isinstance(sd, Mapping) or not isinstance(meta, Mapping) or not sd
            or not all(isinstance(k, str) and k.startswith(_PREFIX)
                       and isinstance(v, torch.Tensor) for k, v in sd.items())
            or not isinstance(fp, str) or not _FP_RE.fullmatch(fp)):
        raise StyleReferenceError(f"{bad} (no encoder state dict, metadata or fingerprint)")
    if weights_fingerprint(sd) != obj.get("encoder_fingerprint"):
        raise StyleReferenceError(f"{bad} (its weights do not match their recorded "
                                  "fingerprint)")
    try:
        nbase = infer_nbase(sd)
        if meta.get("nbase") != nbase:
            raise ModelFileError(f"nbase {meta.get('nbase')} does not match the weights {nbase}")
        sz = int(sd[f"{_PREFIX}down.res_down_0.conv.conv_0.2.weight"].shape[-1])
        net = _Encoder(nbase, sz)
        net.load_state_dict(dict(sd))
    except (ModelFileError, KeyError, RuntimeError) as exc:
        raise StyleReferenceError(f"{bad} ({str(exc).splitlines()[0]})") from None
    return StyleReference(str(obj.get("name") or path.stem), net, dict(meta), fp, path,
                          device=device)


@functools.lru_cache(maxsize=8)
def _load_reference(path: str, mtime_ns: int, device: str) -> StyleReference:
    return load_style_reference(path, device=device)


def reference_models(reference: Sequence[str] = DEFAULT_REFERENCE, device: Any = None
                     ) -> list[tuple[str, StyleReference, str]]:
    """The reference networks ``[(name, model, fingerprint), ...]`` (frozen, cached).

    ``model`` is a :class:`StyleReference` (``.net``, ``.nchan``, ``.normalize``, as a
    model has) read from ``reference_dir() / f"{name}.pt"``; ``fingerprint`` that of the
    full network the reference was frozen from.

    Raises
    ------
    StyleReferenceError
        If a reference is unknown, or its file is missing or damaged.
    """
    dev = str(resolve_device(device))
    folder = reference_dir()
    out = []
    for name in reference:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise StyleReferenceError(f"style reference {name!r} is not a reference name")
        path = folder / f"{name}.pt"
        if not path.is_file():
            have = sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []
            why = ("the installation is incomplete: reinstall napari-flowseg (in a source "
                   "checkout: git checkout -- src/flowseg/models/reference)"
                   if name in DEFAULT_REFERENCE else
                   f"not a frozen style reference (have: {', '.join(have) or 'none'})")
            raise StyleReferenceError(f"style reference {name!r}: {path} is missing; {why}")
        model = _load_reference(str(path), path.stat().st_mtime_ns, dev)
        out.append((name, model, model.fingerprint))
    return out
