"""Channel selection, percentile normalisation and resizing."""

from __future__ import annotations

import numpy as np
import pytest

from flowseg.engine.inference.transforms import (
    find_channel_axis,
    from_cellpose_channels,
    normalize_percentile,
    prepare_channels,
    resize_image,
    to_channels_last,
)


def test_normalize_percentile_per_channel_and_constant():
    rng = np.random.default_rng(0)
    img = np.stack([rng.uniform(100, 200, (64, 64)), np.full((64, 64), 7.0)], -1)
    out = normalize_percentile(img, 1, 99)
    assert out.dtype == np.float32 and out.shape == img.shape
    lo, hi = np.percentile(out[..., 0], [1, 99])
    assert lo == pytest.approx(0.0, abs=1e-5) and hi == pytest.approx(1.0, abs=1e-5)
    assert np.all(out[..., 1] == 0)  # constant channel -> zeros, not inf/nan
    assert np.all(normalize_percentile(np.zeros((5, 5)), channel_axis=None) == 0)
    assert img[0, 0, 1] == 7.0  # input untouched
    with pytest.raises(ValueError, match="percentiles"):
        normalize_percentile(img, 99, 1)


def test_normalize_percentile_large_uses_subsample_consistently():
    x = np.arange(5_000_000, dtype=np.float32).reshape(1000, 5000)
    out = normalize_percentile(x, 1, 99, channel_axis=None)
    assert out.min() == pytest.approx(-1 / 98, rel=1e-2)
    assert out.max() == pytest.approx(1 + 1 / 98, rel=1e-2)


def test_resize_image_shapes_and_values():
    img = np.random.default_rng(1).random((40, 60, 2)).astype(np.float32)
    assert resize_image(img, scale=0.5).shape == (20, 30, 2)
    assert resize_image(img, (80, 90)).shape == (80, 90, 2)
    assert resize_image(img[..., 0], (10, 10), channels_last=False).shape == (10, 10)
    stack = np.stack([img, img])
    assert resize_image(stack, scale=2).shape == (2, 80, 120, 2)
    const = np.full((30, 30, 1), 3.0, np.float32)
    np.testing.assert_allclose(resize_image(const, (77, 41)), 3.0, rtol=1e-6)
    # upsampling by 2 then back keeps a smooth image nearly unchanged
    yy, xx = np.mgrid[0:40, 0:60]
    smooth = np.sin(yy / 6.0)[..., None] + np.cos(xx / 7.0)[..., None]
    back = resize_image(resize_image(smooth, scale=2), (40, 60))
    assert np.abs(back - smooth)[2:-2, 2:-2].max() < 0.02
    with pytest.raises(ValueError, match="positive"):
        resize_image(img, scale=0)


def test_channel_axis_detection():
    assert find_channel_axis((100, 120), 2) is None
    assert find_channel_axis((100, 120, 3), 2) == 2
    assert find_channel_axis((2, 100, 120), 2) == 0
    assert find_channel_axis((10, 100, 120, 2), 3) == 3
    with pytest.raises(ValueError, match="channel_axis"):
        find_channel_axis((10, 100, 120), 2)
    x = np.zeros((5, 2, 30, 40))  # Z, C, Y, X
    assert to_channels_last(x, 3, channel_axis=1).shape == (5, 30, 40, 2)
    assert to_channels_last(x, 3, channel_axis=1, z_axis=3).shape == (40, 5, 30, 2)
    with pytest.raises(ValueError, match="z_axis"):
        to_channels_last(x, 3, channel_axis=1, z_axis=1)
    with pytest.raises(ValueError, match="out of range"):
        to_channels_last(x, 3, channel_axis=7)


def test_prepare_channels_conventions():
    rng = np.random.default_rng(2)
    gray = rng.random((20, 30)).astype(np.float32)
    out = prepare_channels(gray)
    assert out.shape == (20, 30, 2) and np.all(out[..., 1] == 0)
    np.testing.assert_array_equal(out[..., 0], gray)
    two = np.stack([gray, 2 * gray])
    out = prepare_channels(two)  # channels first, auto-detected: (cyto, nucleus) = (0, 1)
    np.testing.assert_array_equal(out[..., 1], 2 * gray)
    rgb = rng.random((20, 30, 3)).astype(np.float32)
    np.testing.assert_allclose(prepare_channels(rgb)[..., 0], rgb.mean(-1), rtol=1e-6)
    out = prepare_channels(rgb, channels=(1, 2))
    np.testing.assert_array_equal(out[..., 0], rgb[..., 1])
    np.testing.assert_array_equal(out[..., 1], rgb[..., 2])
    assert prepare_channels(rgb, channels=(2, None), nchan=1).shape == (20, 30, 1)
    multi = rng.random((6, 20, 30))
    with pytest.raises(ValueError, match="channels"):
        prepare_channels(multi, channel_axis=0)
    assert prepare_channels(multi, channels=(4, 5), channel_axis=0).shape == (20, 30, 2)
    with pytest.raises(ValueError, match="nucleus channel 3"):
        prepare_channels(rgb, channels=(0, 3))
    with pytest.raises(ValueError, match="cyto channel -1"):
        prepare_channels(rgb, channels=(-1, None))
    assert from_cellpose_channels([2, 3], 3) == (1, 2)
    assert from_cellpose_channels([0, 0], 1) == (None, None)
