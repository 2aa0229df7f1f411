"""Pieces shared by the ``flowseg`` sub-commands (segment, blockwise, track, train).

Reading images and folders, the ``--channels`` argument, the mask-parameter options (their
defaults are :class:`~flowseg.engine.flows.params.MaskParams`'), the anisotropy of a ``--3d``
run taken from the file's voxel size, the default model and the tqdm progress bars.  Nothing
torch-heavy is imported at module level: ``flowseg --help`` stays quick; :func:`load_model`
imports the model code when it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .engine.flows.params import MaskParams

__all__ = ["IMAGE_SUFFIXES", "OUTPUT_MARKERS", "ProgressBars", "add_mask_args",
           "collect_images", "file_anisotropy", "is_output", "load_model", "mask_params",
           "parse_channels", "read_image"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy")
OUTPUT_MARKERS = ("_masks", "_flows", "_cellprob", "_seg", "_cp_masks")


def parse_channels(values: list[str] | None) -> tuple[int | None, ...] | None:
    """``--channels C N`` as 0-based ``(cyto, nucleus)`` indices (N: ``none`` / ``-``)."""
    if values is None:
        return None
    out: list[int | None] = []
    for v in values:
        if v.lower() in ("none", "-"):
            out.append(None)
            continue
        try:
            out.append(int(v))
        except ValueError:
            raise ValueError(f"--channels takes two 0-based indices (nucleus may be 'none'), "
                             f"got {values}") from None
    return tuple(out)


def is_output(p: Path) -> bool:
    """Whether ``p`` looks like an output of ours (``*_masks``, ``*_seg``, ...)."""
    stem = p.name.split(".")[0]
    return any(stem.endswith(m) for m in OUTPUT_MARKERS)


def collect_images(paths: list[str]) -> list[Path]:
    """Image files named by ``paths`` (files, or folders scanned non-recursively)."""
    files: list[Path] = []
    for s in paths:
        p = Path(s).expanduser()
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.suffix.lower() in IMAGE_SUFFIXES and not is_output(q)
                           and not q.name.startswith("."))
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            files += found
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ValueError(f"{p}: unsupported image type {p.suffix!r} "
                                 f"(use {', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return files


def read_image(path: Path) -> np.ndarray:
    """Read a TIFF, PNG/JPEG or ``.npy`` image (``.npy`` without pickles); any reader
    failure is one :class:`~flowseg.engine.errors.FileReadError` naming the file (see
    :func:`flowseg.engine.io.images.read_image`)."""
    from .engine.io.images import read_image as _read

    return _read(path)


def _is_volume(shape: tuple[int, ...] | None, args: argparse.Namespace) -> bool:
    """Whether an image of ``shape`` is a 3D volume for ``--3d`` (unknown shape: yes)."""
    if shape is None:
        return True
    from types import SimpleNamespace

    from .engine.inference.prepare import spatial_ndim

    try:
        return spatial_ndim(SimpleNamespace(ndim=len(shape), shape=tuple(shape)),
                            getattr(args, "channel_axis", None), getattr(args, "z_axis", None),
                            True, 0.0) == 3
    except ValueError:  # not a volume: the run says why
        return False


def file_anisotropy(args: argparse.Namespace, path: Path | None, label: str,
                    shape: tuple[int, ...] | None = None) -> float | None:
    """The anisotropy of a run on the file ``path``.

    ``--anisotropy`` when given (and whatever it is without ``--3d``); else the file's voxel
    size (:func:`flowseg.engine.io.voxel.read_voxel_size`), saying so on one line; else None
    (1), saying so when the image (of ``shape``: one 3D image, without a time axis) is a
    volume.
    """
    if not getattr(args, "do_3d", False) or args.anisotropy is not None or path is None:
        return args.anisotropy
    from tqdm import tqdm

    from .engine.io.voxel import anisotropy_from_voxel, format_voxel, read_voxel_size

    voxel = read_voxel_size(path)
    aniso = anisotropy_from_voxel(voxel)
    if aniso is not None and voxel is not None:
        msg = (f"anisotropy {aniso:.3g} from the file's voxel size ({format_voxel(voxel)}); "
               "--anisotropy overrides it")
    elif not _is_volume(shape, args):
        return None
    elif voxel is not None:
        msg = (f"the file's voxel size ({format_voxel(voxel)}) gives an implausible "
               "anisotropy; using 1 (--anisotropy sets it)")
    else:
        msg = "the file states no voxel size; anisotropy 1 (--anisotropy sets it)"
    tqdm.write(f"{label}: {msg}", file=sys.stderr)
    return aniso


class ProgressBars:
    """Progress callback: one tqdm bar per stage of the current image."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.stage = ""

    def __call__(self, ev) -> None:
        if not self.enabled or ev.total <= 1:
            return
        from tqdm import tqdm

        if ev.stage != self.stage or self.bar is None:
            self.close()
            self.stage = ev.stage
            self.bar = tqdm(total=ev.total, desc=f"  {ev.stage}", leave=False, file=sys.stderr)
        self.bar.n = ev.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def load_model(name: str | None, device: str | None) -> Any:
    """``--model``: a name or file (:meth:`flowseg.Model.load`); None: the bundled ``cyto``."""
    from .engine.inference.base import available_models
    from .engine.inference.model import Model

    if name is None:
        if "cyto" not in available_models():
            raise ValueError("no model given and the bundled 'cyto' model is not installed "
                             f"(bundled: {', '.join(available_models()) or 'none'}); pass "
                             "--model FILE (a flowseg model or a Cellpose 1-3 weight file, "
                             "e.g. ~/.cellpose/models/cyto3) or train one with `flowseg train`")
        name = "cyto"
    return Model.load(name, device=device)


_MASK_HELP = {
    "cellprob_threshold": "cell-probability logit above which pixels are followed",
    "flow_threshold": "largest flow error of a 2D mask (0: no check)",
    "min_size": "smallest mask in pixels (voxels); -1 or 0: keep all",
}


def add_mask_args(p: argparse.ArgumentParser,
                  names: tuple[str, ...] = ("cellprob_threshold", "flow_threshold", "min_size")
                  ) -> None:
    """Options ``--cellprob-threshold``, ``--flow-threshold``, ``--min-size`` (or those in
    ``names``) with :class:`MaskParams`' defaults."""
    defaults = MaskParams()
    for name in names:
        value = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value,
                       help=f"{_MASK_HELP[name]} (default {value})")


def mask_params(args: argparse.Namespace) -> MaskParams:
    """The :class:`MaskParams` the options ask for (``--stitch`` included where there is
    one); ``ValueError`` naming the parameter for a value out of range."""
    values = {k: getattr(args, k) for k in _MASK_HELP if hasattr(args, k)}
    if hasattr(args, "stitch"):
        values["stitch_threshold"] = args.stitch
    return MaskParams(**values)
