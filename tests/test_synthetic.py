"""The synthetic data generator: deterministic, realistic enough, well-behaved on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from flowseg.engine.data import synthetic
from flowseg.engine.data.samples import load_sample, sample_names


def _touching_pairs(lab: np.ndarray) -> int:
    a, b = lab[:, :-1], lab[:, 1:]
    m = (a > 0) & (b > 0) & (a != b)
    return len(set(zip(a[m].tolist(), b[m].tolist())))


def test_deterministic_and_seed_dependent():
    a = synthetic.make_sample("cells", (128, 128), seed=3)
    b = synthetic.make_sample("cells", (128, 128), seed=3)
    c = synthetic.make_sample("cells", (128, 128), seed=4)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("kind,nch", [("cells", 2), ("phase", 2), ("nuclei", 1)])
def test_2d_sample_properties(kind, nch):
    s = synthetic.make_sample(kind, (192, 192), seed=1)
    assert s.image.shape == (192, 192, nch) and s.image.dtype == np.float32
    assert s.labels.dtype == np.int32
    ids = np.unique(s.labels)[1:]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))  # consecutive
    assert len(ids) > 20
    # every object is one connected piece
    for i, sl in enumerate(ndi.find_objects(s.labels)):
        assert ndi.label(s.labels[sl] == i + 1)[1] == 1
    # image carries the objects: foreground brighter (fluorescence) or different (phase)
    fg = s.labels > 0
    assert abs(s.image[..., 0][fg].mean() - s.image[..., 0][~fg].mean()) > 0.05
    expected = 17 if kind == "nuclei" else 30
    assert 0.6 * expected < s.diameter < 1.2 * expected


def test_cells_touch_and_nuclei_inside():
    s = synthetic.make_sample("cells", (192, 192), seed=2, with_nuclei=True)
    assert _touching_pairs(s.labels) > 20
    inside = s.nuclei > 0
    assert inside.any() and np.all(s.labels[inside] == s.nuclei[inside])


def test_elongation_changes_shape():
    from skimage.measure import regionprops

    def mean_ecc(lab):
        return np.mean([r.eccentricity for r in regionprops(lab) if r.area > 50])

    round_ = synthetic.make_labels((192, 192), 24, density=1.3, seed=0)
    long_ = synthetic.make_labels((192, 192), 24, density=1.3, elongation=3.0, seed=0)
    assert mean_ecc(long_) > mean_ecc(round_) + 0.2


def test_3d_sample():
    s = synthetic.make_sample("cells", (32, 64, 64), seed=5, diameter=20)
    assert s.image.shape == (32, 64, 64, 2) and s.labels.shape == (32, 64, 64)
    assert s.labels.max() >= 5


@pytest.mark.parametrize("shape", [(10,), (2, 3, 4, 5)])
def test_bad_shape(shape):
    with pytest.raises(ValueError, match="2 or 3 dimensions"):
        synthetic.make_labels(shape, 10)


def test_bad_kind_and_diameter():
    with pytest.raises(ValueError, match="unknown sample kind"):
        synthetic.make_sample("bacteria")
    with pytest.raises(ValueError, match="diameter"):
        synthetic.make_labels((64, 64), 0)


def test_bundled_samples():
    assert set(sample_names()) >= {"nuclei", "cells", "cells3d"}
    for name in sample_names():
        img, info = load_sample(name)
        assert img.dtype == np.uint16 and img.ndim == info["ndim"] + 1
        assert info["labels"].shape == img.shape[:-1]
        assert info["labels"].max() > 10
    img2, _ = load_sample("cells")
    img2[:] = 0  # the caller's copy; the cache must not change
    assert load_sample("cells")[0].max() > 0
    with pytest.raises(ValueError, match="unknown sample"):
        load_sample("nope")
