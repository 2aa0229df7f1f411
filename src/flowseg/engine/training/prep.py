"""Turning (image, labels) pairs into cached training samples.

Each pair is checked (clear :class:`ValueError` on bad input, before any training time
is spent), brought to the network's channels with the same functions as inference
(:func:`flowseg.engine.inference.transforms.prepare_channels` and
:func:`~flowseg.engine.inference.transforms.normalize_percentile`, 1-99 % per channel), and its
targets -- unit flows from :func:`flowseg.engine.flows.diffusion.masks_to_flows` and the foreground
-- are computed **once** and kept (float16) for all epochs.  3D volumes are cut into their
XY slices and, optionally, XZ / YZ slices resampled by the anisotropy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as connected_regions  # regions of equal value

from ..errors import InputError
from ..flows.diffusion import check_labels, masks_to_flows
from ..inference.checks import check_image
from ..inference.transforms import normalize_percentile, prepare_channels
from ..progress import check_cancel, report

__all__ = ["SampleSet", "median_diameter", "check_pairs", "prepare_samples", "split_binary_masks"]


@dataclass
class SampleSet:
    """Cached training samples (all lists have one entry per 2D sample).

    Attributes
    ----------
    images : list of np.ndarray
        ``(nchan, H, W)`` float16 normalised images.
    flows : list of np.ndarray
        ``(2, H, W)`` float16 unit flows (dY, dX).
    fgs : list of np.ndarray
        ``(H, W)`` uint8 foreground.
    diameters : np.ndarray
        Median object diameter of each sample (pixels).
    names : list of str
        Source name of each sample (``name[z=3]`` for slices).
    sources : list of (int, int or None)
        Input index and z of each sample (z None for 2D inputs, -1 for XZ / YZ slices).
    """

    images: list = field(default_factory=list)
    flows: list = field(default_factory=list)
    fgs: list = field(default_factory=list)
    diameters: list = field(default_factory=list)
    names: list = field(default_factory=list)
    sources: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def median_diameter(labels: np.ndarray) -> float:
    """Median equivalent-circle diameter ``2 sqrt(area / pi)`` of the objects (0 if none)."""
    counts = np.bincount(np.asarray(labels).ravel())[1:]
    counts = counts[counts > 0]
    if counts.size == 0:
        return 0.0
    return float(np.median(2.0 * np.sqrt(counts / np.pi)))


def check_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], what: str = "training"
                ) -> None:
    """Validate lengths, label dtypes and spatial shapes; raise :class:`ValueError` if bad."""
    if isinstance(images, np.ndarray) or isinstance(labels, np.ndarray):
        raise ValueError(f"{what} images and labels must be lists of arrays (one per image), "
                         "not a single array")
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} {what} images but {len(labels)} label images")
    if len(images) == 0:
        raise ValueError(f"no {what} images given")
    for k, (img, lab) in enumerate(zip(images, labels)):
        lab = np.asarray(lab)
        check_labels(lab, name=f"{what} labels #{k}")
        img = np.asarray(img)
        sp = lab.shape
        if img.shape != sp and img.shape[:-1] != sp and img.shape[1:] != sp:
            raise ValueError(f"{what} image #{k} has shape {img.shape} but its labels have "
                             f"shape {sp}; the spatial shapes must match")


def split_binary_masks(labels: Sequence[np.ndarray], what: str = "training") -> list:
    """Label images as instance labels: a *binary* mask (one id covering several separate
    regions, e.g. a semantic mask saved as labels) is split into its connected regions.

    Flows need one id per object: trained as one object, a mask of 40 separate cells would
    teach the network flows towards a single centre.  Each split image is named in a
    warning.  In an image with several ids, ids that cover separate regions (e.g. a brush
    stroke with the same label away from its cell) are only warned about: those are kept as
    drawn.

    Parameters
    ----------
    labels : sequence of np.ndarray
        Label images (checked by :func:`check_pairs`).
    what : str
        ``"training"`` or ``"validation"``, for the messages.

    Returns
    -------
    list of np.ndarray
    """
    out, split, scattered = [], [], []
    for k, lab in enumerate(labels):
        lab = check_labels(lab, name=f"{what} labels #{k}")
        ids = np.unique(lab)
        ids = ids[ids > 0]
        if ids.size == 0:
            out.append(lab)
            continue
        comp = connected_regions(lab, background=0, connectivity=1)
        n = int(comp.max())
        if ids.size == 1 and n > 1:
            out.append(comp.astype(lab.dtype if n < np.iinfo(lab.dtype).max else np.int64))
            split.append(f"#{k} ({n} regions)")
            continue
        if n > ids.size:
            scattered.append(f"#{k} ({n - ids.size} extra region(s))")
        out.append(lab)
    if split:
        warnings.warn(f"{what} labels {', '.join(split)} had one id for several separate "
                      "regions (a binary mask?): each region was made its own object",
                      stacklevel=3)
    if scattered:
        warnings.warn(f"{what} labels {', '.join(scattered[:5])}: some ids cover separate "
                      "regions; each such id is trained as one object", stacklevel=3)
    return out


def _channels_first(image: np.ndarray, spatial_ndim: int, channels, nchan: int,
                    normalize: Sequence[float]) -> np.ndarray:
    x = prepare_channels(image, channels, nchan=nchan, spatial_ndim=spatial_ndim)
    x = normalize_percentile(x, normalize[0], normalize[1], channel_axis=-1)
    return np.ascontiguousarray(np.moveaxis(x, -1, 0))


def _slices_3d(x: np.ndarray, lab: np.ndarray, anisotropy: Optional[float], name: str):
    """2D (image (C,H,W), labels (H,W), name) slices of a volume ``x`` (C,Z,Y,X)."""
    for z in range(lab.shape[0]):
        yield x[:, z], lab[z], f"{name}[z={z}]", z
    if anisotropy is None:
        return
    a = float(anisotropy)
    if not a > 0:
        raise ValueError(f"anisotropy must be > 0, got {anisotropy}")
    # resample z so that voxels are isotropic in the XZ / YZ planes
    zx = ndi.zoom(x, (1, a, 1, 1), order=1, prefilter=False) if a != 1 else x
    zl = ndi.zoom(lab, (a, 1, 1), order=0, prefilter=False) if a != 1 else lab
    for y in range(lab.shape[1]):
        yield zx[:, :, y], zl[:, y], f"{name}[y={y}]", -1
    for xx in range(lab.shape[2]):
        yield zx[:, :, :, xx], zl[:, :, xx], f"{name}[x={xx}]", -1


def prepare_samples(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    nchan: int = 2,
    channels=None,
    normalize: Sequence[float] = (1.0, 99.0),
    min_masks: int = 1,
    names: Optional[Sequence[str]] = None,
    anisotropy: Optional[float] = None,
    what: str = "training",
    progress=None,
    cancel=None,
) -> SampleSet:
    """Check, normalise and compute flow targets for a list of image / label pairs.

    Parameters
    ----------
    images, labels : sequences of np.ndarray
        2D images (optionally with a channel axis) and 2D labels, or 3D volumes and labels.
    nchan : int
        Network input channels.
    channels : (int, int or None), optional
        0-based (cyto, nucleus) channels, as in inference.
    normalize : (float, float)
        Percentiles mapped to 0 and 1.
    min_masks : int
        Samples with fewer objects are skipped with a warning.
    names : sequence of str, optional
        Names for messages and the model's training record.
    anisotropy : float, optional
        For 3D volumes: z-step / xy-step; when given, XZ and YZ slices are used too.
    what : str
        "training" or "validation", for messages.
    progress, cancel
        Progress protocol (stage ``"flows"``).

    Returns
    -------
    SampleSet

    Raises
    ------
    ValueError
        On mismatched shapes, non-integer labels, or when no sample has ``min_masks`` objects.
    """
    check_pairs(images, labels, what)
    names = [f"image {k}" for k in range(len(images))] if names is None else list(names)
    out = SampleSet()
    skipped = []
    for k, (img, lab) in enumerate(zip(images, labels)):
        check_cancel(cancel)
        lab = check_labels(lab, name=f"{what} labels #{k}")
        try:  # NaN / Inf, dtype, axes, channel indices: the checks of Model.segment
            info = check_image(img, channels=channels, nchan=nchan, spatial=lab.ndim)
        except InputError as exc:
            raise InputError(f"{what} image #{k} ({names[k]}): {exc}") from None
        if info.constant:
            raise InputError(f"{what} image #{k} ({names[k]}): {info.constant_message()}: "
                             "nothing to learn from (check the image and its channels)")
        x = _channels_first(info.array, lab.ndim, channels, nchan, normalize)
        if x.shape[1:] != lab.shape:
            raise ValueError(f"{what} image #{k} ({names[k]}) gives shape {x.shape[1:]} after "
                             f"channel selection but its labels have shape {lab.shape}")
        parts = ([(x, lab, names[k], None)] if lab.ndim == 2
                 else _slices_3d(x, lab, anisotropy, names[k]))
        for xs, ls, nm, z in parts:
            n_obj = int(np.count_nonzero(np.bincount(ls.ravel())[1:]))
            if n_obj < int(min_masks):
                skipped.append(nm)
                continue
            out.images.append(np.ascontiguousarray(xs, dtype=np.float16))
            out.flows.append(masks_to_flows(ls).astype(np.float16))
            out.fgs.append((ls > 0).astype(np.uint8))
            out.diameters.append(median_diameter(ls))
            out.names.append(nm)
            out.sources.append((k, z))
        report(progress, "flows", k + 1, len(images), names[k])
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} {what} sample(s) with fewer than {min_masks} "
                      f"object(s): {shown}", stacklevel=3)
    if not out.images:
        raise ValueError(f"no {what} image has at least {min_masks} labelled object(s); "
                         "nothing to train on")
    out.diameters = np.asarray(out.diameters, np.float64)
    return out
