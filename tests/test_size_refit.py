"""Size models fitted over a wide range of zooms (issues 19 and 24): fitting pieces, the
recipe's model-file writer, and the bundled size models on synthetic images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowseg import Model
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference.crops import mask_diameters
from flowseg.engine.inference.size import STYLE_TILES, estimate_diameter
from flowseg.engine.inference.size_fit import fit_ridge, fit_size_model, image_views, zoom_view

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))
refit = pytest.importorskip("refit_size")


def test_fit_ridge_chooses_the_penalty_on_held_out_groups():
    rng = np.random.default_rng(0)
    A_true = rng.normal(size=12)
    S = rng.normal(size=(200, 12))
    t = S @ A_true + 2.0 + 0.01 * rng.normal(size=200)
    groups = np.repeat(np.arange(50), 4)
    res = fit_ridge(S, t, ridge=(1e-3, 1e3), groups=groups, holdout=0.25, seed=1)
    # a tiny penalty recovers the exact linear relation; a huge one shrinks A towards 0
    assert res["ridge"] == 1e-3
    assert float(res["ridge_scores"]["0.001"]) < float(res["ridge_scores"]["1000.0"])
    assert np.allclose(res["A"], A_true, atol=0.01) and res["b"] == pytest.approx(2.0, abs=0.01)
    assert res["holdout_groups"] == 12 and res["n"] == 200
    single = fit_ridge(S, t, ridge=0.5)
    assert single["ridge"] == 0.5 and "ridge_scores" not in single
    with pytest.raises(ValueError, match="groups"):
        fit_ridge(S, t, ridge=(1.0, 2.0), groups=np.zeros(200), holdout=0.25)
    with pytest.raises(ValueError, match=">= 0"):
        fit_ridge(S, t, ridge=-1.0)


def test_zoom_view_applies_the_reported_zoom_and_bounds_the_view():
    rng = np.random.default_rng(0)
    x = rng.random((300, 200, 2)).astype(np.float32)
    for zoom in (0.2, 0.7, 1.0, 3.3, 12.0):
        v, z = zoom_view(x, zoom, 256, rng)
        assert v.shape[2] == 2 and max(v.shape[:2]) <= 256
        assert z == pytest.approx(zoom, rel=0.05)
    small, z = zoom_view(x, 0.5, 256, rng)  # the whole image, halved and smoothed first
    assert small.shape[:2] == (150, 100) and z == 0.5
    assert small.std() < 0.5 * x.std()  # anti-aliased: the noise is averaged away


def test_image_views_cover_the_requested_diameters():
    s = make_sample("nuclei", (160, 160), diameter=14, seed=1)
    m = Model.new(width=4, seed=0)
    x = np.concatenate([s.image, s.image], -1).astype(np.float32)
    d = mask_diameters(s.labels)[0]
    styles, targets = image_views(m, x, s.labels, np.random.default_rng(0), n=6, crop=160,
                                  diameters=(8.0, 150.0), tiles=STYLE_TILES)
    t = np.exp(targets)
    assert len(styles) == 6 and styles[0].shape == (32,)
    assert t.min() >= 8.0 * 0.97 and t.max() <= 150.0 * 1.03
    # stratified: one view in each sixth of the log range
    bins = np.floor(6 * np.log(t / 8.0) / np.log(150.0 / 8.0)).clip(0, 5)
    assert sorted(bins.astype(int)) == list(range(6))
    assert image_views(m, x, np.zeros_like(s.labels), np.random.default_rng(0)) == ([], [])
    with pytest.raises(ValueError, match="diameters"):
        image_views(m, x, s.labels, np.random.default_rng(0), diameters=(20.0, 10.0))
    assert d > 0


def test_fit_size_model_wide_range_with_chosen_ridge():
    m = Model.new(width=4, seed=0)
    imgs, labs = [], []
    for k, d in enumerate((12, 20, 30, 16, 24, 36, 14, 28)):
        s = make_sample("cells", (96, 96), diameter=d, seed=20 + k)
        imgs.append(s.image[..., 0])
        labs.append(s.labels)
    res = fit_size_model(m, imgs, labs, n_per_image=3, crop=128, diameters=(8.0, 80.0),
                         tiles=STYLE_TILES, ridge=(1e-3, 1e-1, 10.0), holdout=0.25, seed=0,
                         store=False)
    assert res["n"] == 24 and res["ridge"] in (1e-3, 1e-1, 10.0)
    assert set(res["ridge_scores"]) == {"0.001", "0.1", "10.0"}
    assert res["train_r"] > 0.5 and m.meta.get("size_model") is None


def test_replace_size_model_keeps_the_weights_and_other_metadata(tmp_path):
    m = Model.new(width=4, seed=0)
    m.meta["size_model"] = {"A": [0.0] * 32, "b": 3.0}
    src = tmp_path / "m.pt"
    m.save(src, half=True)
    before = torch.load(src, map_location="cpu", weights_only=True)
    new = {"A": [0.01] * 32, "b": 2.5, "fit": {"diameters": [8.0, 150.0]}}
    out = refit.replace_size_model(src, new, out=tmp_path / "out.pt")
    after = torch.load(out, map_location="cpu", weights_only=True)
    assert before["state_dict"].keys() == after["state_dict"].keys()
    for k, v in before["state_dict"].items():
        w = after["state_dict"][k]
        assert w.dtype == v.dtype and torch.equal(w, v), k
    assert after["meta"]["size_model"] == new
    rest = {k: v for k, v in before["meta"].items() if k != "size_model"}
    assert {k: v for k, v in after["meta"].items() if k != "size_model"} == rest
    assert refit.weights_key(src) == refit.weights_key(out)
    assert Model.load(out).size_model["b"] == 2.5
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(Exception, match="not a model file"):
        refit.replace_size_model(tmp_path / "bad.pt", new)


@pytest.mark.parametrize("name, kind, diameters", [
    ("nuclei", "nuclei", (14.0, 42.0)),
    ("cyto", "cells", (18.0, 63.0)),
])
def test_bundled_size_models_read_synthetic_objects_at_two_sizes(name, kind, diameters):
    m = Model.load(name)
    fit = m.size_model.get("fit", {})
    if fit.get("recipe") != "recipes/refit_size.py":
        pytest.skip(f"{name}: size model not refitted over the wide range")
    reads = []
    for d in diameters:
        side = int(min(768, max(256, 12 * d)))
        s = make_sample(kind, (side, side), diameter=d, seed=5)
        img = s.image[..., 0] if name == "nuclei" else s.image
        chans = None if name == "nuclei" else (0, 1)
        est = estimate_diameter(m, img, channels=chans, refine=False)
        true = mask_diameters(s.labels)[0]
        assert abs(est / true - 1) <= 0.25, (name, d, est, true)
        reads.append(est)
    assert reads[1] > 2 * reads[0]  # objects 3x larger read (much) larger
