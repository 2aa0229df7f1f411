"""The default path of Model.segment (diameter estimated): cheap style, the estimate's own
segmentation kept when it fits, progress, the bound on enlarging; the style of a few tiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference import segment as segment_mod
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.size import (
    MAX_UPSCALE,
    REUSE_TOLERANCE,
    mask_diameters,
    min_estimate,
    regression_diameter,
)
from flowseg.engine.inference.style import spread, tiles_style
from flowseg.engine.network.tiling import run_tiled
from flowseg.engine.progress import ProgressCollector


@pytest.fixture(scope="module")
def cyto() -> Model:
    return Model.load("cyto")


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return make_sample("cells", (256, 288), diameter=30, with_nuclei=True, seed=1).image


def _with_size(model: Model, diameter: float) -> Model:
    """A copy whose size model predicts ``diameter`` for every image (A = 0)."""
    m = model.copy()
    m.meta["size_model"] = {"A": [0.0] * m.net.nbase[-1], "b": float(np.log(diameter))}
    return m


def _count_passes(monkeypatch) -> list:
    """Record the ``rescale`` of every 2D network pass of ``segment`` (estimate included)."""
    calls: list = []
    import flowseg.engine.inference.size as size_mod

    for mod in (segment_mod, size_mod):
        orig = mod.run_2d

        def spy(model, x, rescale, *a, _orig=orig, **k):
            calls.append(rescale)
            return _orig(model, x, rescale, *a, **k)

        monkeypatch.setattr(mod, "run_2d", spy)
    return calls


def test_spread_picks_evenly():
    assert spread(6, 3).tolist() == [1, 3, 5]
    assert spread(5, 1).tolist() == [2]
    assert spread(3, 5).tolist() == [0, 1, 2]
    assert spread(10, 4).tolist() == [1, 3, 6, 8]


def test_tiles_style_matches_the_tiled_network(cyto):
    x = np.random.default_rng(0).random((400, 530, 2)).astype(np.float32)
    _, full = run_tiled(cyto.net, x)
    st, n = tiles_style(cyto.net, x)
    assert n == 9 and np.abs(st - full).max() < 1e-5  # 3 x 3 grid of 224 tiles, encoder only
    few, k = tiles_style(cyto.net, x, max_tiles=4)
    assert k == 4 and abs(float(np.linalg.norm(few)) - 1.0) < 1e-5
    one, k = tiles_style(cyto.net, x, max_tiles=1)
    assert k == 1 and not np.allclose(one, full)  # really fewer tiles


def test_estimate_pass_is_kept_when_it_fits(cyto, cells, monkeypatch):
    ref = cyto.segment(cells, diameter=30)
    d, _ = mask_diameters(ref.masks)
    m = _with_size(cyto, d)
    calls = _count_passes(monkeypatch)
    seg = m.segment(cells)
    assert seg.params["estimate_pass_kept"] is True and len(calls) == 1  # one network pass
    assert seg.diameter == pytest.approx(d)  # segmented at the size model's diameter
    assert abs(math.log(seg.params["diameter_estimate"] / d)) <= math.log1p(REUSE_TOLERANCE)
    same = cyto.segment(cells, diameter=seg.diameter)  # exactly what a given diameter gives
    assert np.array_equal(seg.masks, same.masks) and np.array_equal(seg.flows, same.flows)
    assert np.array_equal(seg.cellprob, same.cellprob)
    assert seg.params["niter"] == same.params["niter"]
    # other thresholds: masks from the same flows with the caller's parameters
    calls.clear()
    loose = m.segment(cells, cellprob_threshold=-2.0, min_size=5)
    assert len(calls) == 1 and loose.params["diameter_estimate"] == seg.params[
        "diameter_estimate"]
    assert np.array_equal(loose.masks, seg.recompute(cellprob_threshold=-2.0, min_size=5).masks)


def test_estimate_far_from_the_size_model_segments_again(cyto, cells, monkeypatch):
    m = _with_size(cyto, 15.0)  # half the real size: the refinement pass measures ~30
    calls = _count_passes(monkeypatch)
    seg = m.segment(cells)
    est = seg.params["diameter_estimate"]
    assert seg.params["estimate_pass_kept"] is False and len(calls) == 2
    assert calls[0] == pytest.approx(cyto.diam_mean / 15.0)
    assert 22 < est < 40 and seg.diameter == est
    assert calls[1] == pytest.approx(cyto.diam_mean / est)
    assert m.estimate_diameter(cells) == pytest.approx(est)  # the same estimate
    same = cyto.segment(cells, diameter=est)
    assert np.array_equal(seg.masks, same.masks)


def test_estimate_reports_size_progress_through_the_pass(cyto, cells):
    m = _with_size(cyto, 30.0)
    pc = ProgressCollector()
    m.segment(cells, whole_max=0, batch_size=2, progress=pc)  # 224 tiles: several batches
    size = [(e.done, e.total) for e in pc.events if e.stage == "size"]
    inner = [d for d, t in size if t > 1 and 0 < d < t]
    assert inner, f"no progress inside the pass: {size}"
    assert size[-1][0] == size[-1][1]


def test_tiny_estimate_is_bounded(cyto, cells, monkeypatch):
    m = _with_size(cyto, 1.0)  # an absurd regression: 1-pixel objects
    assert regression_diameter(m, cells.astype(np.float32)) == pytest.approx(min_estimate(m))
    assert min_estimate(m) == pytest.approx(cyto.diam_mean / MAX_UPSCALE)
    calls = _count_passes(monkeypatch)
    seg = m.segment(cells)
    assert max(calls) <= MAX_UPSCALE + 1e-9
    assert seg.diameter >= min_estimate(m) and seg.params["diameter_size_model"] >= 10.0
