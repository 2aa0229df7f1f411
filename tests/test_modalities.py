"""Synthetic microscope looks (engine/data/modalities.py): phase halos, DIC, brightfield, H&E."""

from __future__ import annotations

import numpy as np
import pytest

from flowseg.engine.data import synthetic
from flowseg.engine.data.modalities import MODALITIES, make_modality_sample, render_modality


@pytest.mark.parametrize("kind", MODALITIES)
def test_modality_sample(kind):
    a = make_modality_sample(kind, (128, 128), diameter=24, elongation=1.8, seed=3)
    b = make_modality_sample(kind, (128, 128), diameter=24, elongation=1.8, seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    nch = 3 if kind == "stained" else 1
    assert a.image.shape == (128, 128, nch) and a.image.dtype == np.float32
    assert np.isfinite(a.image).all() and a.labels.max() >= 5
    fg = a.labels > 0
    gray = a.image.mean(-1)
    if kind == "dic":  # relief: the cells differ from the background in local contrast
        from scipy import ndimage as ndi

        mean = ndi.uniform_filter(gray, 5)
        sd = np.sqrt(np.clip(ndi.uniform_filter(gray ** 2, 5) - mean ** 2, 0, None))
        assert sd[fg].mean() > 1.5 * sd[~fg].mean()
    else:  # dark cells (phase bodies, absorption, hematoxylin) on a brighter background
        assert gray[fg].mean() < gray[~fg].mean() - 0.05


def test_existing_kinds_unchanged_by_the_new_module():
    # the older renderings are untouched: same pixels with and without the new module used
    before = synthetic.make_sample("phase", (64, 64), seed=2).image
    make_modality_sample("phase_halo", (64, 64), seed=2)
    np.testing.assert_array_equal(before, synthetic.make_sample("phase", (64, 64), seed=2).image)


def test_bad_modality_inputs():
    with pytest.raises(ValueError, match="unknown modality"):
        make_modality_sample("confocal")
    with pytest.raises(ValueError, match="2D"):
        render_modality(np.zeros((4, 8, 8), int), "dic")
