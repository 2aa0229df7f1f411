"""Layer -> engine argument helpers of the plugin (pure functions, no viewer)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from flowseg._inputs import (
    Axes,
    check_axes,
    default_anisotropy,
    diameter_from_shapes,
    file_voxel,
    guess_axes,
    zyx_scale,
)
from flowseg._layers import flow_vectors


@pytest.mark.parametrize("shape, rgb, expected", [
    ((64, 64), False, Axes()),
    ((2, 64, 64), False, Axes(channel_axis=0)),
    ((64, 64, 3), False, Axes(channel_axis=2)),
    ((30, 64, 64), False, Axes(z_axis=0)),
    ((64, 64, 3), True, Axes(channel_axis=2)),
    ((2, 30, 64, 64), False, Axes(channel_axis=0, z_axis=1)),
    ((30, 3, 64, 64), False, Axes(channel_axis=1, z_axis=0)),
    ((5, 6, 64, 64), False, Axes()),
])
def test_guess_axes(shape, rgb, expected):
    assert guess_axes(shape, rgb) == expected


def test_check_axes_messages():
    check_axes((2, 30, 64, 64), Axes(0, 1))
    with pytest.raises(ValueError, match="4 dimensions"):
        check_axes((5, 6, 64, 64), Axes())
    with pytest.raises(ValueError, match="must be different"):
        check_axes((5, 6, 64, 64), Axes(0, 0))
    with pytest.raises(ValueError, match="does not exist"):
        check_axes((64, 64), Axes(z_axis=4))
    with pytest.raises(ValueError, match="fewer than two"):
        check_axes((3, 64), Axes(channel_axis=0))


def test_default_anisotropy():
    assert default_anisotropy((1, 2.0, 0.5, 0.5), Axes(0, 1), 4) == pytest.approx(4.0)
    assert default_anisotropy((3.0, 1.0, 1.0), Axes(z_axis=0), 3) == pytest.approx(3.0)
    assert default_anisotropy((1.0, 1.0), Axes(), 2) == 1.0


def test_zyx_scale():
    assert zyx_scale((1, 2.0, 0.5, 0.4), Axes(0, 1), 4) == (2.0, 0.5, 0.4)
    assert zyx_scale((2.0, 1, 0.5, 0.4), Axes(1, 0), 4) == (2.0, 0.5, 0.4)
    assert zyx_scale((2.0, 0.5, 0.4), Axes(3, 0), 4, rgb=True) == (2.0, 0.5, 0.4)
    assert zyx_scale((1.0, 1.0), Axes(), 2) is None


def test_file_voxel(tmp_path):
    """The voxel size of a layer's file; None (never an error) for no file, a plain TIFF
    (told from its first page), a missing or damaged file."""
    import tifffile

    vol = np.zeros((3, 8, 8), np.uint8)
    ij, plain, bad = tmp_path / "ij.tif", tmp_path / "plain.tif", tmp_path / "bad.tif"
    tifffile.imwrite(ij, vol, imagej=True, resolution=(1 / 0.5, 1 / 0.5),
                     metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"})
    tifffile.imwrite(plain, vol)
    bad.write_bytes(b"II*\0garbage")

    def layer(path):
        return SimpleNamespace(source=SimpleNamespace(path=path))

    assert file_voxel(layer(str(ij))) == pytest.approx((2.0, 0.5, 0.5))
    for path in (None, str(plain), str(bad), str(tmp_path / "gone.tif"), str(tmp_path), 3):
        assert file_voxel(layer(path)) is None
    assert file_voxel(SimpleNamespace()) is None


def test_diameter_from_shapes():
    circle = np.array([[0, 0], [0, 10], [10, 10], [10, 0]], float)
    square = circle * 2
    tri = np.array([[0, 0], [0, 4], [4, 0]], float)
    layer = SimpleNamespace(data=[circle, square, tri], scale=(1.0, 1.0), name="s",
                            shape_type=["ellipse", "rectangle", "polygon"])
    d = diameter_from_shapes(layer)
    expected = np.mean([10.0, 2 * np.sqrt(400 / np.pi), 2 * np.sqrt(8 / np.pi)])
    assert d == pytest.approx(expected)
    assert diameter_from_shapes(layer, pixel_size=0.5) == pytest.approx(2 * expected)
    empty = SimpleNamespace(data=[np.zeros((2, 2))], scale=(1, 1), name="e", shape_type=["line"])
    with pytest.raises(ValueError, match="no ellipse"):
        diameter_from_shapes(empty)


def test_flow_vectors_grid_and_length():
    flows = np.zeros((2, 40, 40), np.float32)
    flows[1] = 1.0  # everything flows along +x at unit speed
    vec, colors = flow_vectors(flows, step=5)
    assert vec.shape == (64, 2, 2) and colors.shape == (64, 4)
    np.testing.assert_allclose(vec[:, 1, 1], 4.5)  # 0.9 * step
    np.testing.assert_allclose(vec[:, 1, 0], 0.0)
    assert set(np.unique(vec[:, 0, 0])) == set(range(2, 40, 5))
    stack = np.zeros((2, 3, 20, 20), np.float32)  # slice-by-slice flows have no dz
    stack[0] = 1.0
    v3, _ = flow_vectors(stack, step=4)
    assert v3.shape[1:] == (2, 3) and np.allclose(v3[:, 1, 0], 0)
