"""Intensity augmentation of training crops: what users' microscopes do to an image.

A crop ``(C, H, W)`` (channel 0 cytoplasm, channel 1 nucleus or zeros), already normalised
1-99 % like inference input, is changed by a random chain drawn from one seeded
:class:`numpy.random.Generator`; each step is taken with its own probability
(:class:`IntensityAug`):

1. **inversion** of channel 0 (``1 - x``): dark cells on a bright background and back;
2. **gamma** (``x ** g`` on the clipped crop);
3. **uneven illumination**: a smooth random multiplicative field and an additive one
   (a few low cosine modes, separable, so cheap);
4. **contrast / offset**: the signal scaled by ``c`` on a background ``o`` before noise, so a
   low-contrast image gets relatively more noise;
5. **blur** (Gaussian) or **resolution loss** (down- then up-sampled);
6. **noise**: Gaussian and signal-dependent (Poisson-like shot noise, few photons);
7. **bit range**: the signal quantised to a few grey levels (a dim 16-bit or 8-bit image),
   optionally saturated, with a few very bright pixels (hot pixels, debris);
8. **channels**: the nuclear channel dropped (zeros, as when a user has none) or the two
   channels swapped;
9. **re-normalisation**: each changed channel's 1st-99th percentiles mapped back onto the
   crop's own before the chain.  The crops come from images normalised as
   :func:`flowseg.engine.inference.transforms.normalize_percentile` normalises a whole image
   at inference, so a crop of background keeps its small range instead of being blown up to
   a full one (which gave values of 10^4 that poisoned BatchNorm's running statistics).

Only the image is changed: flows and foreground (the targets) never are, so every step must
keep the cells where they are (no geometric change).  :meth:`IntensityAug.none` changes
nothing and draws nothing from the generator, so training streams without intensity
augmentation are unchanged.

Stain colour of RGB images (H&E, brightfield) cannot be jittered per crop: training samples
are already reduced to the network's (cytoplasm, nucleus) channels when cached.
:func:`flowseg.engine.training.stain.stain_gray` jitters the RGB -> gray channel weights
instead, where the raw RGB still exists (the recipes' loader renders each stained image
several times with different weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import ndimage as ndi

__all__ = ["IntensityAug", "augment_intensity", "augment_batch"]

_PROBS = ("p_invert", "p_gamma", "p_illumination", "p_contrast", "p_blur", "p_lowres",
          "p_noise", "p_shot", "p_bits", "p_saturate", "p_hot", "p_drop_nuclear", "p_swap")
_PER_CHANNEL = ("p_gamma", "p_illumination", "p_contrast", "p_blur", "p_lowres", "p_noise",
                "p_shot", "p_bits", "p_saturate", "p_hot")
_RANGES = ("gamma", "contrast", "offset", "blur", "lowres", "noise", "photons", "levels",
           "saturate", "hot_fraction", "hot_value", "illumination")


@dataclass(frozen=True)
class IntensityAug:
    """Probabilities and ranges of the intensity augmentation (see the module text).

    The default is the setting of the generalist recipes; :meth:`none` switches every step
    off.  Ranges are ``(low, high)``; scale-like ranges (photons, levels, hot pixels) are
    drawn log-uniformly, the others uniformly.

    Attributes
    ----------
    p_invert : float
        Invert channel 0.
    p_gamma, gamma : float, (float, float)
        Gamma ``g`` (``x ** g`` on the crop clipped to ``>= 0``).
    p_illumination, illumination : float, (float, float)
        Uneven illumination: strength of the multiplicative field (``exp(s * f)``, ``f`` of
        unit amplitude) and of the additive field (half of it), ``s`` in the range.
    p_contrast, contrast, offset : float, (float, float), (float, float)
        Signal scaled by ``contrast`` on a background ``offset`` (relative to the 0-1
        normalised signal) before noise.
    p_blur, blur : float, (float, float)
        Gaussian blur sigma (pixels).
    p_lowres, lowres : float, (float, float)
        Resolution loss: down-sampling factor, then back up (bilinear).
    p_noise, noise : float, (float, float)
        Gaussian noise sigma (relative to the signal range 0-1; log-uniform).
    p_shot, photons : float, (float, float)
        Poisson shot noise with this many photons at signal 1 (log-uniform; few = noisy).
    p_bits, levels : float, (float, float)
        Quantisation of the signal range 0-1 to this many grey levels (log-uniform).
    p_saturate, saturate : float, (float, float)
        Clip the signal at this level (saturated bright cells).
    p_hot, hot_fraction, hot_value : float, (float, float), (float, float)
        A fraction of pixels (log-uniform) set very bright (log-uniform value, signal = 1).
    p_drop_nuclear : float
        Set channel 1 to zeros (no nuclear channel), for crops whose channel 1 is not empty.
    p_swap : float
        Swap channels 0 and 1 (channels given in the wrong order), same crops.
    """

    p_invert: float = 0.3
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.5, 2.0)
    p_illumination: float = 0.3
    illumination: tuple[float, float] = (0.1, 0.7)
    p_contrast: float = 0.5
    contrast: tuple[float, float] = (0.15, 1.0)
    offset: tuple[float, float] = (0.0, 1.0)
    p_blur: float = 0.2
    blur: tuple[float, float] = (0.6, 2.0)
    p_lowres: float = 0.15
    lowres: tuple[float, float] = (1.5, 3.0)
    p_noise: float = 0.4
    noise: tuple[float, float] = (0.01, 0.25)
    p_shot: float = 0.3
    photons: tuple[float, float] = (3.0, 300.0)
    p_bits: float = 0.3
    levels: tuple[float, float] = (6.0, 256.0)
    p_saturate: float = 0.1
    saturate: tuple[float, float] = (0.5, 0.95)
    p_hot: float = 0.2
    hot_fraction: tuple[float, float] = (1e-5, 1e-3)
    hot_value: tuple[float, float] = (3.0, 100.0)
    p_drop_nuclear: float = 0.15
    p_swap: float = 0.05

    def __post_init__(self) -> None:
        for name in _PROBS:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise ValueError(f"IntensityAug.{name} must be a probability in [0, 1], "
                                 f"got {v!r}")
        for name in _RANGES:
            v = getattr(self, name)
            ok = (isinstance(v, (tuple, list)) and len(v) == 2
                  and all(isinstance(a, (int, float)) and np.isfinite(a) for a in v)
                  and float(v[0]) <= float(v[1]))
            if not ok:
                raise ValueError(f"IntensityAug.{name} must be a (low, high) pair of finite "
                                 f"numbers with low <= high, got {v!r}")
            object.__setattr__(self, name, (float(v[0]), float(v[1])))
        positive = ("gamma", "blur", "lowres", "noise", "photons", "levels", "hot_fraction",
                    "hot_value", "contrast", "saturate")
        for name in positive:
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"IntensityAug.{name} must be > 0, got {getattr(self, name)}")
        if self.lowres[0] < 1.0:
            raise ValueError(f"IntensityAug.lowres factors must be >= 1, got {self.lowres}")
        if self.hot_fraction[1] > 0.01:
            raise ValueError("IntensityAug.hot_fraction must stay <= 0.01 (a few pixels), got "
                             f"{self.hot_fraction}")

    @classmethod
    def none(cls) -> IntensityAug:
        """Every step off: :func:`augment_intensity` returns the crop unchanged."""
        return cls(**dict.fromkeys(_PROBS, 0.0))

    @property
    def active(self) -> bool:
        """Whether any step can happen."""
        return any(getattr(self, name) > 0 for name in _PROBS)

    def to_dict(self) -> dict[str, Any]:
        """Plain settings (for training records and checkpoints)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_config(cls, value: Any) -> IntensityAug | None:
        """``None`` / ``False`` -> None (off); ``True`` / ``"default"`` -> the default;
        a dict -> the default with those settings; an :class:`IntensityAug` as it is."""
        if value is None or value is False:
            return None
        if isinstance(value, IntensityAug):
            return value
        if value is True or value == "default":
            return cls()
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            bad = sorted(set(value) - known)
            if bad:
                raise ValueError(f"unknown intensity augmentation setting(s) {bad}; known: "
                                 f"{sorted(known)}")
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
        raise ValueError(f"intensity augmentation must be None, True, 'default', a dict or an "
                         f"IntensityAug, got {value!r}")


def _loguniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    lo, hi = lo_hi
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _smooth_field(rng: np.random.Generator, h: int, w: int, modes: int = 3) -> np.ndarray:
    """A smooth random field of unit peak amplitude: ``By @ G @ Bx.T`` with low cosine modes."""
    ky = np.arange(modes)[None, :]
    by = np.cos(np.pi * ky * (np.arange(h)[:, None] + rng.uniform(0, h)) / max(h, 1))
    bx = np.cos(np.pi * ky * (np.arange(w)[:, None] + rng.uniform(0, w)) / max(w, 1))
    g = rng.standard_normal((modes, modes)) / (1.0 + np.add.outer(ky[0], ky[0]))
    g[0, 0] = 0.0
    f = (by @ g @ bx.T).astype(np.float32)
    peak = float(np.abs(f).max())
    return f / peak if peak > 0 else f


@lru_cache(maxsize=32)
def _upsample_index(n: int, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear interpolation from ``ceil(n / f)`` block centres back to ``n`` pixels:
    left / right block index and the right weight of each pixel."""
    m = -(-n // f)
    pos = np.clip((np.arange(n) + 0.5) / f - 0.5, 0, m - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, m - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def _lowres(ch: np.ndarray, factor: float) -> np.ndarray:
    """Average ``f x f`` blocks (``f`` = ``factor`` rounded, >= 2), then back up bilinearly."""
    h, w = ch.shape
    f = max(2, int(round(factor)))
    hh, ww = -(-h // f) * f, -(-w // f) * f
    if hh // f < 2 or ww // f < 2:
        return ch
    padded = np.pad(ch, ((0, hh - h), (0, ww - w)), mode="edge") if (hh, ww) != (h, w) else ch
    small = padded.reshape(hh // f, f, ww // f, f).mean((1, 3), dtype=np.float32)
    a0, a1, ta = _upsample_index(h, f)
    rows = small[a0] * (1 - ta)[:, None] + small[a1] * ta[:, None]
    b0, b1, tb = _upsample_index(w, f)
    return rows[:, b0] * (1 - tb) + rows[:, b1] * tb


#: the renormalisation divides by at least this fraction of the crop's whole span (so a nearly
#: flat crop with a few bright pixels cannot be amplified without bound)
MIN_RANGE_OF_SPAN = 0.01


def _percentile_range(ch: np.ndarray) -> tuple[float, float]:
    """1st and 99th percentiles of a channel (from every 3rd pixel)."""
    lo, hi = np.percentile(ch.reshape(-1)[::3], (1.0, 99.0))
    return float(lo), float(hi)


def _renormalise(ch: np.ndarray, before: tuple[float, float]) -> None:
    """Map a changed channel's 1st-99th percentiles back onto those it had ``before``.

    The crops are cut from images normalised as inference normalises a whole image, so a crop
    of background spans a small range; giving every changed crop its *own* 1st-99th range
    would blow a nearly flat crop up (values of 10^4 after a division by a tiny range, which
    poison BatchNorm's running statistics).  The range is also kept at least
    :data:`MIN_RANGE_OF_SPAN` of the channel's span.
    """
    lo, hi = _percentile_range(ch)
    span = float(ch.max() - ch.min())
    den = max(hi - lo, MIN_RANGE_OF_SPAN * span)
    if den <= 1e-6:
        ch[...] = np.float32(before[0])
        return
    ch -= np.float32(lo)
    ch *= np.float32((before[1] - before[0]) / den)
    ch += np.float32(before[0])


def augment_intensity(x: np.ndarray, rng: np.random.Generator, aug: IntensityAug | None
                      ) -> np.ndarray:
    """Apply a random intensity chain to one normalised crop, in place.

    Parameters
    ----------
    x : np.ndarray
        ``(C, H, W)`` float32 crop (C = 1 or 2), normalised 1-99 % per channel.
    rng : np.random.Generator
        The only source of randomness (a seeded generator gives the same result).
    aug : IntensityAug or None
        Settings; None or :meth:`IntensityAug.none` leave ``x`` as it is and draw nothing.

    Returns
    -------
    np.ndarray
        ``x`` (changed in place), finite, same shape and dtype.

    Raises
    ------
    ValueError
        If ``x`` is not a ``(C, H, W)`` float32 array.
    """
    if aug is None or not aug.active:
        return x
    if x.ndim != 3 or x.dtype != np.float32:
        raise ValueError(f"expected a (C, H, W) float32 crop, got {x.dtype} of shape {x.shape}")
    nchan, h, w = x.shape
    # every decision is drawn up front, in a fixed order, so the stream does not depend on
    # the pixel values
    u = rng.random(len(_PROBS))
    take = {name: bool(u[k] < getattr(aug, name)) for k, name in enumerate(_PROBS)}
    has_nuc = nchan > 1 and bool(np.any(x[1] != 0))
    per_channel = any(take[name] for name in _PER_CHANNEL)
    changed = [per_channel and (c != 1 or has_nuc) or (c == 0 and take["p_invert"])
               for c in range(nchan)]
    # the range each changed channel is mapped back onto (only those: a hot path)
    before = {c: _percentile_range(x[c]) for c in range(nchan) if changed[c]}
    if take["p_invert"]:
        x[0] = 1.0 - x[0]
    for c in range(nchan):
        if not per_channel or (c == 1 and not has_nuc):
            continue
        ch = x[c]
        if take["p_gamma"]:
            np.clip(ch, 0.0, 1e3, out=ch)
            ch **= np.float32(np.exp(rng.uniform(np.log(aug.gamma[0]), np.log(aug.gamma[1]))))
        if take["p_illumination"]:
            s = rng.uniform(*aug.illumination)
            ch *= np.exp(s * _smooth_field(rng, h, w))
            ch += np.float32(0.5 * s) * (_smooth_field(rng, h, w) + 1.0)
        if take["p_contrast"]:
            ch *= np.float32(rng.uniform(*aug.contrast))
            ch += np.float32(rng.uniform(*aug.offset))
        if take["p_blur"]:
            x[c] = ndi.gaussian_filter(ch, rng.uniform(*aug.blur))
        elif take["p_lowres"]:
            x[c] = _lowres(ch, rng.uniform(*aug.lowres))
        ch = x[c]
        if take["p_shot"]:
            photons = _loguniform(rng, aug.photons)
            # Poisson-like: variance = signal / photons (Gaussian approximation, cheap)
            ch += np.sqrt(np.clip(ch, 0.0, 1e4) / np.float32(photons)) * rng.standard_normal(
                (h, w), dtype=np.float32)
        if take["p_noise"]:
            ch += np.float32(_loguniform(rng, aug.noise)) * rng.standard_normal(
                (h, w), dtype=np.float32)
        if take["p_saturate"]:
            np.minimum(ch, np.float32(rng.uniform(*aug.saturate)), out=ch)
        if take["p_bits"]:
            levels = np.float32(_loguniform(rng, aug.levels))
            ch *= levels
            np.round(ch, out=ch)
            ch /= levels
        if take["p_hot"]:
            n_hot = int(rng.binomial(h * w, _loguniform(rng, aug.hot_fraction)))
            if n_hot:
                where = rng.integers(0, h * w, n_hot)
                ch.reshape(-1)[where] = np.float32(_loguniform(rng, aug.hot_value))
    for c in range(nchan):  # channels left as they were keep their exact values
        if changed[c]:
            _renormalise(x[c], before[c])
    if has_nuc and take["p_drop_nuclear"]:
        x[1] = 0.0
    elif has_nuc and take["p_swap"]:
        x[[0, 1]] = x[[1, 0]]
    return x


def augment_batch(x: np.ndarray, rng: np.random.Generator, aug: IntensityAug | None
                  ) -> np.ndarray:
    """:func:`augment_intensity` on each crop of a ``(B, C, H, W)`` batch, in place, in order."""
    if aug is None or not aug.active:
        return x
    for b in range(x.shape[0]):
        augment_intensity(x[b], rng, aug)
    return x
