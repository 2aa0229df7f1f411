"""The default path of Model.segment (diameter estimated): cheap style, the size measured on
crops of a large image, the estimate's own segmentation kept when it fits, progress, cancel,
the bound on enlarging; the style of a few tiles; the network work of the default path."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference import crops as crops_mod
from flowseg.engine.inference import segment as segment_mod
from flowseg.engine.inference import style as style_mod
from flowseg.engine.inference.crops import (
    SPREAD_MIN,
    CropEstimate,
    _run_crops,
    _whole_objects,
    crop_side,
    crop_windows,
    median_precision,
    refine_on_crops,
    spread_order,
    weighted_median,
)
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.prepare import WHOLE_MAX, prepare_input, run_2d
from flowseg.engine.inference.size import (
    MAX_UPSCALE,
    REUSE_FINER,
    REUSE_TOLERANCE,
    STYLE_FIRST,
    STYLE_TILES,
    UNCERTAIN,
    fitted_range,
    mask_diameters,
    min_estimate,
    pass_fits,
    refine_at,
    regression_diameter,
)
from flowseg.engine.inference.style import ENCODER_SHARE, spread, tiles_style
from flowseg.engine.inference.transforms import resize_image
from flowseg.engine.network import tiling as tiling_mod
from flowseg.engine.network.tiling import run_tiled
from flowseg.engine.progress import Cancelled, ProgressCollector


@pytest.fixture(scope="module")
def cyto() -> Model:
    return Model.load("cyto")


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return make_sample("cells", (256, 288), diameter=30, with_nuclei=True, seed=1).image


@pytest.fixture(scope="module")
def many() -> np.ndarray:
    """~600 cells of ~18 px: at diameter 20 about 9 crop areas at the network's scale."""
    return make_sample("cells", (512, 512), diameter=20, with_nuclei=True, seed=2).image


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
    assert pass_fits(d, seg.params["diameter_estimate"])
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


def test_estimate_far_from_the_size_model_segments_again(cyto, monkeypatch):
    cells = make_sample("cells", (176, 176), diameter=30, with_nuclei=True, seed=1).image
    m = _with_size(cyto, 15.0)  # half the real size: the refinement pass measures ~30
    calls = _count_passes(monkeypatch)
    seg = m.segment(cells)  # 352 x 352 at the network's scale: refined whole, no crops
    assert seg.params["diameter_crops"] is None
    est = seg.params["diameter_estimate"]
    assert seg.params["estimate_pass_kept"] is False and len(calls) == 2
    assert calls[0] == pytest.approx(cyto.diam_mean / 15.0)
    assert 22 < est < 40 and seg.diameter == est
    assert calls[1] == pytest.approx(cyto.diam_mean / est)
    assert m.estimate_diameter(cells) == pytest.approx(est)  # the same estimate
    same = cyto.segment(cells, diameter=est)
    assert np.array_equal(seg.masks, same.masks)


def test_pass_fits_is_asymmetric():
    assert pass_fits(30.0, 30.0)
    assert pass_fits(30.0 * (1 + REUSE_TOLERANCE), 30.0)
    assert not pass_fits(30.0 * (1 + REUSE_TOLERANCE) * 1.01, 30.0)
    assert pass_fits(30.0 * (1 - REUSE_FINER), 30.0)  # finer: objects drawn larger
    assert not pass_fits(30.0 * (1 - REUSE_FINER) * 0.99, 30.0)
    assert REUSE_FINER > REUSE_TOLERANCE


def test_finer_pass_is_kept_coarser_is_not(cyto, cells, monkeypatch):
    d, _ = mask_diameters(cyto.segment(cells, diameter=30).masks)
    calls = _count_passes(monkeypatch)
    fine = _with_size(cyto, 0.85 * d).segment(cells)  # 15 % finer than the objects
    p = fine.params
    assert p["estimate_pass_kept"] is True and len(calls) == 1, p
    assert fine.diameter == pytest.approx(0.85 * d) and p["diameter_estimate"] > fine.diameter
    calls.clear()
    coarse = _with_size(cyto, 1.2 * d).segment(cells)  # 20 % coarser: segmented again
    assert coarse.params["estimate_pass_kept"] is False and len(calls) == 2


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


def test_spread_order_and_windows():
    order = spread_order(4, 4)
    assert order[0] == (1, 1) and order[1] == (3, 3) and sorted(order) == sorted(
        (j, i) for j in range(4) for i in range(4))
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) >= 2 for a in order[:4] for b in order[:4]
               if a != b)  # the first four are spread out
    win = crop_windows(500, 300, 200, 200)  # 3 x 2 grid, last crops flush with the border
    assert len(win) == 6 and {y for y, _ in win} == {0, 150, 300} and {x for _, x in win} == {
        0, 100}


def test_weighted_median_and_border_objects():
    assert weighted_median(np.array([1.0, 2.0, 3.0]), np.ones(3)) == 2.0
    assert weighted_median(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 5.0])) == 3.0
    assert weighted_median(np.zeros(0), np.zeros(0)) == 0.0
    m = np.zeros((100, 100), np.int32)
    m[0:10, 40:50] = 1      # touches the top border
    m[45:55, 45:55] = 2     # inside, 10 x 10
    m[30:70, 90:100] = 3    # touches the right border, 40 x 10
    d, w = _whole_objects(m, (True, True, True, True))  # every border inside the image
    assert d.size == 1 and d[0] == pytest.approx(2 * np.sqrt(100 / np.pi))
    assert w[0] == pytest.approx(1.0 / (90 * 90))  # Miles-Lantuejoul: 1 / ((Ly-h)(Lx-w))
    d, w = _whole_objects(m, (False, True, True, False))  # top and right are image borders
    assert d.size == 3  # objects cut by the image itself are kept, as in a whole pass
    assert w[2] == pytest.approx(1.0 / ((100 - 40) * (100 - 10)))
    d, w = _whole_objects(m, (False, False, True, False))  # only the left border is a cut
    assert w[0] == pytest.approx(1.0 / (100 * (100 - 10)))  # y not corrected


def test_crop_median_agrees_with_the_whole_image(cyto, many):
    x = many.astype(np.float32)
    whole = refine_at(cyto, x, 20.0).diameter
    ce = refine_on_crops(cyto, x, 20.0)
    assert ce.n_objects >= 100 and ce.fraction <= 0.3 and ce.n_crops >= 2
    assert abs(ce.diameter / whole - 1) < 0.05, (ce, whole)
    assert ce.diameter == refine_on_crops(cyto, x, 20.0).diameter  # the same crops each time


def _count_work(monkeypatch) -> dict:
    """Pixels through the whole network and through the encoder alone (styles)."""
    work = {"net": 0, "encoder": 0}
    fwd, enc, crp = tiling_mod.forward, style_mod.encoder_styles, crops_mod.crops_forward

    def fwd_spy(net, x):
        work["net"] += x.shape[0] * x.shape[2] * x.shape[3]
        return fwd(net, x)

    def crp_spy(net, x, pool=None):
        work["net"] += x.shape[0] * x.shape[2] * x.shape[3]
        return crp(net, x, pool)

    def enc_spy(net, x):
        work["encoder"] += x.shape[0] * x.shape[2] * x.shape[3]
        return enc(net, x)

    monkeypatch.setattr(tiling_mod, "forward", fwd_spy)
    monkeypatch.setattr(style_mod, "encoder_styles", enc_spy)
    monkeypatch.setattr(crops_mod, "crops_forward", crp_spy)
    return work


def test_default_path_network_work_is_at_most_1_5x_given(cyto, many, monkeypatch):
    m = _with_size(cyto, 20.0)
    work = _count_work(monkeypatch)
    seg = m.segment(many)
    default = work["net"] + ENCODER_SHARE * work["encoder"]
    p = seg.params
    assert p["diameter_crops"] is not None and p["estimate_pass_kept"] is True
    work.update(net=0, encoder=0)
    given = m.segment(many, diameter=p["diameter_estimate"])
    assert work["encoder"] == 0 and given.n_objects > 300
    ratio = default / work["net"]
    assert ratio <= 1.5, (ratio, p)
    assert np.array_equal(seg.masks, m.segment(many, diameter=seg.diameter).masks)


def test_crops_report_size_progress_and_cancel(cyto, many):
    m = _with_size(cyto, 20.0)
    pc = ProgressCollector()
    m.segment(many, progress=pc)
    crops = [(e.done, e.total) for e in pc.events if e.stage == "size" and "crops" in e.message]
    assert crops[0][0] == 0 and crops[-1][0] >= 1 and len(crops) >= 2
    stop = threading.Event()

    def progress(ev):
        if ev.stage == "size" and "crops" in ev.message:
            stop.set()

    calls = []
    orig = crops_mod.run_tiled
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crops_mod, "run_tiled", lambda *a, **k: calls.append(1) or orig(*a, **k))
        with pytest.raises(Cancelled):
            m.segment(many, progress=progress, cancel=stop)
    assert calls == []  # stopped before the first crop ran through the network
    with pytest.raises(Cancelled):
        m.estimate_diameter(many, cancel=lambda: True)


def test_median_precision():
    d, se = median_precision([], [])
    assert d == 0.0 and se == math.inf
    one = [np.full(25, 20.0)]  # identical objects: the spread is taken as SPREAD_MIN
    d, se = median_precision(one, [np.ones(25)])
    assert d == pytest.approx(20.0) and se == pytest.approx(1.2533 * SPREAD_MIN / 5.0)
    rng = np.random.default_rng(0)
    wide = [np.exp(rng.normal(np.log(20.0), 0.5, 400))]  # log-normal sizes, spread 0.5
    _, se_wide = median_precision(wide, [np.ones(400)])
    assert se_wide == pytest.approx(1.2533 * 0.5 / 20.0, rel=0.15)
    # the objects of several crops are pooled: two crops of 25 objects are 50 objects
    two = [np.full(25, 20.0), np.full(25, 20.0)]
    d, se_two = median_precision(two, [np.ones(25), np.ones(25)])
    assert d == pytest.approx(20.0) and se_two == pytest.approx(se / np.sqrt(2))
    # Miles-Lantuejoul weights count: a few heavy objects are few objects
    _, se_w = median_precision(one, [np.r_[np.full(5, 100.0), np.full(20, 1e-6)]])
    assert se_w == pytest.approx(1.2533 * SPREAD_MIN / np.sqrt(5), rel=1e-3)


def test_style_reads_few_tiles_when_crops_follow(cyto, many, monkeypatch):
    m = _with_size(cyto, 20.0)  # 512 x 512 at 20 px: ~9 crop areas, crops follow
    work = _count_work(monkeypatch)
    regression_diameter(m, many.astype(np.float32))
    assert work["encoder"] == STYLE_FIRST * 224 * 224
    small = make_sample("cells", (224, 224), diameter=20, with_nuclei=True, seed=2).image
    work.update(encoder=0)
    regression_diameter(m, small.astype(np.float32))  # refined whole: the budget decides
    assert work["encoder"] >= STYLE_FIRST * 224 * 224


def test_crops_share_the_image_style(cyto):
    """Cells on one half, blank on the other: a crop among the cells has its own style far
    from the image's, so its network outputs differ from the whole-image pass; decoded with
    the style pooled over the crops they are close to it (the per-crop style made crops
    measure objects 3-4 % smaller than the pass on dense DSB images)."""
    img = make_sample("cells", (384, 768), diameter=20, with_nuclei=True, seed=3).image.copy()
    img[:, 384:] = img[:, 384:].mean(axis=(0, 1))
    x, _ = prepare_input(cyto, img, channels=(0, 1), channel_axis=-1)
    at, r = 20.0, cyto.diam_mean / 20.0
    c = crop_side(at, cyto.diam_mean)
    win = crop_windows(x.shape[0], x.shape[1], c, c)
    n = int(round(c * r))
    stack = resize_image(np.stack([x[y0:y0 + c, x0:x0 + c] for y0, x0 in win]), (n, n))
    own, _ = _run_crops(cyto, stack, None, False, batch_size=8, augment=False, cancel=None)
    shared, _ = _run_crops(cyto, stack, None, True, batch_size=8, augment=False, cancel=None)
    whole, _ = run_2d(cyto, x[None], r, bsize=224, tile_overlap=0.1, batch_size=8,
                      augment=False, progress=None, cancel=None, whole_max=WHOLE_MAX)
    b, d_own, d_shared = 30, [], []
    for k, (y0, x0) in enumerate(win):
        if x0 + c > 384:
            continue  # crops reaching the blank half
        w = whole[0, :, y0 + b:y0 + c - b, x0 + b:x0 + c - b]
        for y, out in ((own, d_own), (shared, d_shared)):
            yk = resize_image(y[k:k + 1], (c, c), channels_last=False)[0]
            out.append(float(np.abs(yk[:, b:-b, b:-b] - w).mean()))
    assert len(d_own) >= 4 and np.mean(d_shared) < 0.6 * np.mean(d_own), (d_own, d_shared)
    single, _ = _run_crops(cyto, stack[:1], None, True, batch_size=8, augment=False,
                           cancel=None)  # one crop: its own style, as the plain network
    assert np.abs(single[0] - own[0]).max() < 1e-3


def test_far_tiles_follow_the_fitted_range(cyto, many, monkeypatch):
    m = _with_size(cyto, 75.0)  # 2.5 x diam_mean
    assert fitted_range(m) == (15.0, 60.0)  # no recorded range: diam_mean / 2 .. 2 diam_mean
    work = _count_work(monkeypatch)
    regression_diameter(m, many.astype(np.float32))
    assert work["encoder"] == (STYLE_FIRST + STYLE_TILES) * 224 * 224  # outside: all tiles
    m.meta["size_model"]["fit"] = {"diameters": [6.0, 200.0]}
    assert fitted_range(m) == (6.0, 200.0)
    work.update(encoder=0)
    regression_diameter(m, many.astype(np.float32))
    assert work["encoder"] == STYLE_FIRST * 224 * 224  # inside the range it was fitted on


@pytest.mark.parametrize("se, expected", [(0.05, 14.0), (2 * UNCERTAIN, 20.0)])
def test_uncertain_crops_do_not_make_the_pass_finer(cyto, many, monkeypatch, se, expected):
    """Crops that say 14 px where the size model says 20: a precise median sets the pass, an
    uncertain one cannot make it finer (dearer) than the size model's."""
    import flowseg.engine.inference.size as size_mod

    monkeypatch.setattr(size_mod, "refine_on_crops", lambda *a, **k: CropEstimate(
        diameter=14.0, at=20.0, n_objects=9, n_crops=4, fraction=0.25, se=se))
    calls = _count_passes(monkeypatch)
    seg = _with_size(cyto, 20.0).segment(many)
    assert seg.params["diameter_crops"] == 14.0 and seg.params["crops_se"] == se
    assert calls[0] == pytest.approx(cyto.diam_mean / expected)


@pytest.mark.parametrize("value, expect", [(None, None), (24.0, 24.0), (float("nan"), None),
                                           (-3.0, None), ("abc", None), (0.0, None)])
def test_a_model_without_a_size_model_starts_from_its_training_diameter(value, expect):
    """``meta["diam_train"]`` (a fine-tuned model whose size model was dropped) is where an
    estimate starts; a missing or unusable value leaves the model at ``diam_mean`` with no
    estimate (``diameter=None`` then segments at ``diam_mean``)."""
    from flowseg.engine.inference.size import can_estimate, start_diameter

    m = Model.load("cyto")
    m.meta["size_model"] = None
    m.meta["diam_train"] = value
    assert can_estimate(m) == (expect is not None)
    assert start_diameter(m) == pytest.approx(m.diam_mean if expect is None else expect)
    if expect is None:
        seg = m.segment(np.zeros((64, 64), np.float32) + np.arange(64, dtype=np.float32))
        assert seg.params["diameter_source"].startswith("model diam_mean")
