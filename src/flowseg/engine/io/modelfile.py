"""Model files: our own format and Cellpose 1-3 weight files.

Our format (``format_version`` 1) is a dict saved with :func:`torch.save`::

    {"format": "flowseg-model", "format_version": 1,
     "state_dict": {name: tensor, ...},          # FlowNet / Cellpose CPnet layout
     "meta": {...}}                               # json-able: nbase, diam_mean, nchan,
                                                  # channels, normalize, size_model, training

A Cellpose 1-3 file is a bare state dict (``downsample.down.res_down_0.conv.conv_0.0.weight``
... ``output.2.bias``, and since Cellpose 2 ``diam_mean`` / ``diam_labels``).  Both are read
only with ``torch.load(path, weights_only=True, map_location="cpu")``: no pickled code runs.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, short_reason
from .atomic import atomic_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelFileError",
    "atomic_torch_save",
    "save_model_file",
    "load_model_file",
    "infer_nbase",
    "check_state_dict",
    "export_cellpose",
]

FORMAT = "flowseg-model"
FORMAT_VERSION = 1
_FIRST_KEY = "downsample.down.res_down_0.conv.conv_0.0.weight"


class ModelFileError(InputError):
    """A file is not a model file we can read (wrong format, missing or mismatched tensors)."""


def _json_check(meta: Mapping[str, Any]) -> dict:
    try:
        return json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model metadata must be JSON-serialisable: {exc}") from None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``.

    A crash or a full disk never leaves a half-written file under ``path``.  The file gets
    the permissions of the file it replaces, or those of any new file (``0o666`` less the
    umask) -- not the owner-only mode of temporary files.
    """
    with atomic_path(Path(path)) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_model_file(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any], overwrite: bool = False,
                    half: bool = False) -> Path:
    """Write a model file atomically (temporary file in the same folder + ``os.replace``).

    Parameters
    ----------
    path : path-like
        Destination (conventionally ``*.pt``).
    state_dict : mapping of str to torch.Tensor
        Network weights (moved to CPU).
    meta : mapping
        JSON-serialisable metadata.
    overwrite : bool
        Replace an existing file; otherwise :class:`FileExistsError`.
    half : bool
        Store floating-point tensors as float16 (half the file size); they are read back
        as float32.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"model file {path} exists (pass overwrite=True to replace it)")
    if path.is_dir():
        raise ValueError(f"model path {path} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {str(k): v.detach().to("cpu").clone() for k, v in state_dict.items()}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": sd,
               "meta": _json_check(meta)}
    return atomic_torch_save(payload, path)


def infer_nbase(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    """Channel list ``[nchan, w, 2w, ...]`` read from the encoder's first-convolution shapes."""
    nbase: list[int] = []
    n = 0
    while True:
        key = f"downsample.down.res_down_{n}.conv.conv_0.2.weight"
        if key not in state_dict:
            break
        w = state_dict[key]
        if w.ndim != 4:
            raise ModelFileError(f"{key} has shape {tuple(w.shape)}; expected a 2D convolution "
                                 "(4-D weight); 3D-convolution Cellpose models are not supported")
        if n == 0:
            nbase.append(int(w.shape[1]))
        nbase.append(int(w.shape[0]))
        n += 1
    if len(nbase) < 3:
        raise ModelFileError(f"no encoder weights found (missing {_FIRST_KEY!r})")
    return nbase


def _describe(state_dict: Mapping[str, Any]) -> str:
    keys = list(state_dict)[:4]
    return f"{len(state_dict)} entries, first keys {keys}"


def check_state_dict(state_dict: Mapping[str, torch.Tensor],
                     reference: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Check ``state_dict`` against a network's own state dict; return a loadable copy.

    Missing ``num_batches_tracked`` counters, ``diam_mean`` and ``diam_labels`` are filled
    from ``reference``; anything else missing, unexpected or of the wrong shape raises
    :class:`ModelFileError` naming the offending keys.
    """
    optional = ("num_batches_tracked", "diam_mean", "diam_labels")
    out: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    for k, ref in reference.items():
        if k not in state_dict:
            if k.endswith(optional):
                out[k] = ref.detach().clone()
            else:
                missing.append(k)
            continue
        v = state_dict[k]
        if not isinstance(v, torch.Tensor):
            mismatched.append(f"{k} (not a tensor: {type(v).__name__})")
        elif tuple(v.shape) != tuple(ref.shape):
            mismatched.append(f"{k} (file {tuple(v.shape)}, network {tuple(ref.shape)})")
        else:
            out[k] = v.to(ref.dtype)
    unexpected = [k for k in state_dict if k not in reference]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if mismatched:
        problems.append(f"{len(mismatched)} with mismatched shapes (e.g. {mismatched[:3]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if problems:
        raise ModelFileError("state dict does not fit the flow network: " + "; ".join(problems))
    return out


def _cellpose_meta(sd: Mapping[str, torch.Tensor]) -> dict:
    nbase = infer_nbase(sd)
    nout = int(sd["output.2.weight"].shape[0]) if "output.2.weight" in sd else None
    if nout != 3:
        raise ModelFileError(f"the network head has {nout} outputs; only flow models with 3 "
                             "outputs (dY, dX, cell probability) are supported (this may be a "
                             "Cellpose denoising/restoration model)")

    def scalar(key: str, default: float) -> float:
        v = sd.get(key)
        if isinstance(v, torch.Tensor) and v.numel() == 1 and float(v) > 0:
            return float(v)
        return default

    diam_mean = scalar("diam_mean", 30.0)
    return {"nbase": nbase, "nchan": nbase[0], "diam_mean": diam_mean,
            "diam_labels": scalar("diam_labels", diam_mean),
            "channels": None, "normalize": [1.0, 99.0], "size_model": None,
            "source": "cellpose"}


def load_torch_file(path: Path, error: type[Exception], what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU (no pickled code runs); any failure
    is raised as ``error(f"{what}: <why, in one short line>")``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip, unsupported globals: one message
        raise error(f"{what}: {_load_failure(path, exc)}") from None


def _load_failure(path: Path, exc: BaseException) -> str:
    """Why ``torch.load`` failed, in one short line (PyTorch's own message runs to ~900
    characters of advice about ``weights_only`` that does not apply to a broken file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        return short_reason(err)
    if size == 0:
        return "the file is empty (0 bytes)"
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # the reason, without PyTorch's advice around it
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if any("global" in ln.lower() for ln in lines):
        return ("it holds pickled Python objects that are not plain weights (refused: "
                "loading them could run code)")
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):
        return f"it is neither a PyTorch zip nor a pickle file ({size} bytes)"
    if lines and lines[0].startswith("Weights only load failed") and len(lines) > 1:
        lines = lines[1:]  # PyTorch's advice about weights_only, not the reason
    reason = lines[0].split(". ")[0] if lines else type(exc).__name__
    return f"corrupt or truncated PyTorch file ({short_reason(ValueError(reason), 120)})"


def _number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and low <= value <= high)


def _check_meta(path: Path, meta: dict, sd: Mapping[str, Any]) -> None:
    """Refuse metadata that does not describe the stored weights (a network built from a
    hostile ``nbase`` could take all memory before the weights are compared)."""
    problems = []
    if meta.get("nbase") != infer_nbase(sd) or meta.get("nchan") != meta["nbase"][0]:
        problems.append(f"nbase/nchan {meta.get('nbase')}/{meta.get('nchan')} do not match "
                        f"the weights ({infer_nbase(sd)})")
    if not _number(meta.get("diam_mean"), 1e-3, 1e5):
        problems.append(f"diam_mean {meta.get('diam_mean')!r} is not a diameter in pixels")
    norm = meta.get("normalize")
    if not (isinstance(norm, (list, tuple)) and len(norm) == 2 and _number(norm[0], 0, 100)
            and _number(norm[1], 0, 100) and norm[0] < norm[1]):
        problems.append(f"normalize {norm!r} is not a pair of percentiles lo < hi")
    sm = meta.get("size_model")
    if sm is not None and not (isinstance(sm, Mapping) and isinstance(sm.get("A"), list)
                               and all(_number(a) for a in sm["A"]) and _number(sm.get("b"))):
        problems.append("size_model is not {'A': [numbers], 'b': number}")
    if problems:
        raise ModelFileError(f"{path}: bad model metadata: " + "; ".join(problems))


def load_model_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read our model file or a Cellpose 1-3 weight file (``weights_only=True``).

    Returns
    -------
    state_dict : dict of str to torch.Tensor
    meta : dict
        Always has ``nbase``, ``nchan``, ``diam_mean``, ``normalize``, ``size_model`` and
        ``source`` (``"flowseg"`` or ``"cellpose"``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ModelFileError
        If the file is not a readable model file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} not found")
    obj = load_torch_file(path, ModelFileError, f"{path} is not a model file")
    if not isinstance(obj, Mapping):
        raise ModelFileError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(f"{path}: model format version {version!r} is newer than this "
                                 f"flowseg supports ({FORMAT_VERSION}); upgrade flowseg")
        sd, meta = obj.get("state_dict"), obj.get("meta")
        if not isinstance(sd, Mapping) or not isinstance(meta, Mapping):
            raise ModelFileError(f"{path}: flowseg model file without state_dict/meta")
        sd = dict(sd)
        meta = dict(meta)
        meta.setdefault("nbase", infer_nbase(sd))
        meta.setdefault("nchan", meta["nbase"][0])
        meta.setdefault("diam_mean", 30.0)
        meta.setdefault("normalize", [1.0, 99.0])
        meta.setdefault("size_model", None)
        meta["source"] = "flowseg"
        _check_meta(path, meta, sd)
        return sd, meta
    if _FIRST_KEY in obj:
        sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        return sd, _cellpose_meta(sd)
    if any(str(k).startswith(("encoder.", "sam.", "image_encoder")) for k in obj):
        raise ModelFileError(f"{path} looks like a Cellpose-SAM (Cellpose 4) model, which uses a "
                             "different (transformer) network; only Cellpose 1-3 models load")
    raise ModelFileError(f"{path} is neither a flowseg model nor a Cellpose 1-3 state dict "
                         f"(no {_FIRST_KEY!r}; {_describe(obj)})")


def export_cellpose(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                    overwrite: bool = False) -> Path:
    """Write weights as a bare Cellpose-format state dict (loadable by Cellpose 3 ``CPnet``)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {str(k): v.detach().to("cpu").clone() for k, v in state_dict.items()}
    return atomic_torch_save(sd, path)
