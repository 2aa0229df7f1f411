"""Intensity augmentation of training crops (engine/training/intensity.py) and its wiring."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.training.batches import BatchMaker
from flowseg.engine.training.intensity import (
    _PROBS,
    IntensityAug,
    augment_batch,
    augment_intensity,
)
from flowseg.engine.training.prep import prepare_samples
from flowseg.engine.training.stain import stain_gray


def _crop(seed: int = 0, nuclear: bool = True, size: int = 96) -> np.ndarray:
    """A normalised (C, H, W) crop of a synthetic cell image (channel 1 nuclei or zeros)."""
    s = make_sample("cells", (size, size), diameter=24, seed=seed, with_nuclei=True)
    sm = prepare_samples([s.image if nuclear else s.image[..., :1]], [s.labels], nchan=2)
    return np.asarray(sm.images[0], np.float32).copy(), s.labels


def _only(name: str) -> IntensityAug:
    return IntensityAug(**{**dict.fromkeys(_PROBS, 0.0), name: 1.0})


@pytest.mark.parametrize("name", _PROBS)
def test_each_step_keeps_shape_dtype_finite_and_is_seeded(name):
    x0, _ = _crop(1)
    aug = _only(name)
    a = augment_intensity(x0.copy(), np.random.default_rng(5), aug)
    b = augment_intensity(x0.copy(), np.random.default_rng(5), aug)
    c = augment_intensity(x0.copy(), np.random.default_rng(6), aug)
    assert a.shape == x0.shape and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # same seed, same crop
    assert not np.array_equal(a, x0)  # the step did something
    # (steps without a random amount, or few possible ones: lowres factors are 2 or 3)
    if name not in ("p_invert", "p_drop_nuclear", "p_swap", "p_saturate", "p_lowres"):
        assert not np.array_equal(a, c)  # its random draw matters


def test_none_is_identity_and_draws_nothing():
    x0, _ = _crop(2)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    for aug in (None, IntensityAug.none()):
        out = augment_intensity(x0.copy(), rng, aug)
        np.testing.assert_array_equal(out, x0)
        assert rng.bit_generator.state == state
    assert not IntensityAug.none().active and IntensityAug().active


def test_inversion_inverts_and_renormalises():
    x0, _ = _crop(4)
    out = augment_intensity(x0.copy(), np.random.default_rng(0), _only("p_invert"))
    assert np.corrcoef(out[0].ravel(), x0[0].ravel())[0, 1] < -0.99
    np.testing.assert_array_equal(out[1], x0[1])  # the nuclear channel is not inverted
    lo, hi = np.percentile(out[0], (1, 99))
    assert abs(lo) < 0.02 and abs(hi - 1) < 0.02  # 1-99 % again (of every 3rd pixel)


def test_nuclear_channel_drop_and_swap():
    x0, _ = _crop(5)
    drop = augment_intensity(x0.copy(), np.random.default_rng(0), _only("p_drop_nuclear"))
    assert not drop[1].any()
    sw = augment_intensity(x0.copy(), np.random.default_rng(0), _only("p_swap"))
    np.testing.assert_allclose(sw[0], x0[1], atol=2e-3)
    np.testing.assert_allclose(sw[1], x0[0], atol=2e-3)
    # a crop without a nuclear channel keeps its zeros (nothing to drop or swap)
    x1, _ = _crop(5, nuclear=False)
    assert not x1[1].any()
    out = augment_intensity(x1.copy(), np.random.default_rng(0), _only("p_swap"))
    np.testing.assert_array_equal(out, x1)


def test_noise_keeps_the_cells_visible():
    # strong augmentation still leaves foreground and background apart on average
    x0, lab = _crop(6)
    fg = lab > 0
    base = x0[0][fg].mean() - x0[0][~fg].mean()
    out = augment_intensity(x0.copy(), np.random.default_rng(1), _only("p_noise"))
    assert (out[0][fg].mean() - out[0][~fg].mean()) > 0.5 * base


def test_batches_targets_unchanged_and_off_by_default():
    ss = [make_sample("cells", (96, 96), diameter=20, seed=k) for k in range(3)]
    sm = prepare_samples([s.image for s in ss], [s.labels for s in ss], nchan=2)
    args = (sm.images, sm.flows, sm.fgs, [1.0] * 3, 64)
    order = np.array([0, 1, 2, 1])

    def run(workers, intensity):
        rng = np.random.default_rng(11)
        with BatchMaker(*args, workers=workers, intensity=intensity) as bm:
            return list(bm.epoch(rng, order, 2))

    for w in (0, 1):
        plain = run(w, None)
        off = run(w, IntensityAug.none())
        on = run(w, IntensityAug())
        for (_, x0, y0), (_, xo, yo), (_, xa, ya) in zip(plain, off, on):
            np.testing.assert_array_equal(x0, xo)  # none() == no augmentation at all
            np.testing.assert_array_equal(y0, yo)
            if w == 1:  # per-batch seeds: same crops, only the image intensities change
                np.testing.assert_array_equal(y0, ya)
            assert xa.shape == x0.shape and np.isfinite(xa).all()
            assert not np.array_equal(xa, x0)
    with pytest.raises(ValueError, match="IntensityAug"):
        BatchMaker(*args, intensity={"p_invert": 1.0})


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2 ** 31), c=st.integers(1, 2), h=st.integers(8, 72),
       w=st.integers(8, 72), scale=st.floats(0.0, 50.0), zero=st.booleans())
def test_property_random_crops(seed, c, h, w, scale, zero):
    rng = np.random.default_rng(seed)
    x = (rng.random((c, h, w), dtype=np.float32) * np.float32(scale))
    if zero:
        x[-1] = 0.0
    y = x.copy()
    out = augment_batch(x[None], np.random.default_rng(seed), IntensityAug())[0]
    again = augment_batch(y[None], np.random.default_rng(seed), IntensityAug())[0]
    assert out.shape == (c, h, w) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, again)


def test_settings_are_checked_and_parsed():
    with pytest.raises(ValueError, match="probability"):
        IntensityAug(p_invert=1.5)
    with pytest.raises(ValueError, match="low <= high"):
        IntensityAug(gamma=(2.0, 0.5))
    with pytest.raises(ValueError, match="> 0"):
        IntensityAug(photons=(0.0, 3.0))
    with pytest.raises(ValueError, match="unknown"):
        IntensityAug.from_config({"p_inverse": 0.5})
    assert IntensityAug.from_config(None) is None
    assert IntensityAug.from_config(True) == IntensityAug()
    aug = IntensityAug.from_config({"p_invert": 0.9, "gamma": [0.7, 1.4]})
    assert aug.p_invert == 0.9 and aug.gamma == (0.7, 1.4)
    assert IntensityAug.from_config(aug.to_dict()) == aug


def test_stain_gray_jitters_channel_weights():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (32, 40, 3)).astype(np.uint8)
    np.testing.assert_allclose(stain_gray(rgb), rgb.astype(np.float32).mean(-1))
    a = stain_gray(rgb, np.random.default_rng(1), 0.4)
    b = stain_gray(rgb, np.random.default_rng(1), 0.4)
    c = stain_gray(rgb, np.random.default_rng(2), 0.4)
    assert a.shape == (32, 40) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 255 * 1.001
    with pytest.raises(ValueError, match="RGB"):
        stain_gray(rgb[..., 0])


# ---------------------------------------------------------------- recipes (recipes/*.py)
def _recipes():
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parents[1] / "recipes"
    sys.path.insert(0, str(here))
    data = pytest.importorskip("data")
    ablation = pytest.importorskip("ablation")
    return data, ablation


def test_generalist_recipes_parse():
    data, _ = _recipes()
    for name in ("nuclei_generalist", "cyto_generalist", "nuclei_cpu_generalist",
                 "cyto_cpu_generalist"):
        cfg = data.stage_configs(name)[0]
        assert IntensityAug.from_config(cfg["intensity"]) == IntensityAug()
        lo, hi = cfg["scale_range"]
        assert 0 < lo < 1 < hi
        assert cfg["width"] == 32 and cfg["crop"] % 8 == 0
        assert set(data.synthetic_looks(name))
    # the existing recipes keep training without intensity augmentation
    for name in ("nuclei", "cyto"):
        assert all(IntensityAug.from_config(c.get("intensity")) is None
                   for c in data.stage_configs(name))
    img, lab, look = data._synthetic_one(("dic", 5, True, 0.3))
    assert img.shape == lab.shape + (2,) and look == "dic" and not img[..., 1].any()
    img, lab, look = data._synthetic_one(("stained", 6, False, 0.3))
    assert img.shape == lab.shape and img.dtype == np.float32


def test_ablation_holds_out_whole_kinds():
    _, ablation = _recipes()
    kinds = ["dsb/stained", "dsb/fluorescence", "dsb/small", "synthetic/stained",
             "usiigaci/phase", "dsb/stained"]
    names = ["a", "b", "c", "s1", "u", "a"]  # "a": two stain renderings of one image
    d = {"train_images": list(range(6)), "train_labels": list(range(6)),
         "train_names": names, "train_kinds": kinds,
         "val_images": [10, 11], "val_labels": [10, 11], "val_names": ["v1", "v2"],
         "val_kinds": ["dsb/stained", "dsb/fluorescence"]}
    train, held = ablation.split_by_kind(d, ablation.HOLD_GROUPS["stained"])
    assert not set(train["train_kinds"]) & set(ablation.HOLD_GROUPS["stained"])
    assert train["val_kinds"] == ["dsb/fluorescence"]
    assert sorted(held["names"]) == ["a", "s1", "v1"]  # every image of the kinds, once
    assert set(held["kinds"]) <= set(ablation.HOLD_GROUPS["stained"])
    assert len(train["train_images"]) + 2 + 1 == 6  # nothing else lost


def test_nearly_flat_crops_are_not_blown_up():
    """A crop of background (a small range in image-normalised units) keeps a small range
    through any chain: dividing by its own tiny percentile range gave values of 10^4, which
    poisoned BatchNorm's running statistics in a generalist training run."""
    rng = np.random.default_rng(3)
    aug = IntensityAug()
    for k in range(300):
        flat = (0.05 + 0.002 * rng.standard_normal((2, 96, 96))).astype(np.float32)
        flat[1] = 0.0 if k % 2 else flat[1]
        out = augment_intensity(flat.copy(), rng, aug)
        assert np.isfinite(out).all()
        for c in range(2):
            lo, hi = np.percentile(out[c], (1, 99))
            assert hi - lo < 0.05, (k, c)
        assert float(np.abs(out).max()) < 2.0, k
    x0, _ = _crop(6)  # a crop with cells: its range is kept (about 0-1 here)
    for k in range(50):
        out = augment_intensity(x0.copy(), np.random.default_rng(k), aug)
        lo, hi = np.percentile(out[0], (1, 99))
        assert 0.5 < hi - lo < 2.0, k
