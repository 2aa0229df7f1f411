"""The bundled models' recipes (recipes/): data helpers and argument checks.

They read ../shared/data only when they train; these tests use small arrays instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))

data = pytest.importorskip("data")


def test_image_kind_tells_stained_brightfield_and_fluorescence():
    rng = np.random.default_rng(0)
    fluo = np.zeros((64, 64), np.uint8)
    fluo[20:30, 20:30] = 200  # bright nuclei on a dark background
    bright = 255 - fluo  # dark nuclei on a bright background
    stained = np.stack([np.full((64, 64), 230), np.full((64, 64), 180),
                        np.full((64, 64), 220), np.full((64, 64), 255)], -1).astype(np.uint8)
    stained[20:30, 20:30, :3] = (90, 40, 150)  # purple nuclei on pink
    gray_rgba = np.repeat(fluo[..., None], 4, -1)
    gray_rgba[..., 3] = 255
    assert data.image_kind(fluo + rng.integers(0, 5, fluo.shape).astype(np.uint8)) == "fluorescence"
    assert data.image_kind(bright) == "brightfield"
    assert data.image_kind(stained) == "stained"
    assert data.image_kind(gray_rgba) == "fluorescence"


def test_oversample_rare_repeats_only_rare_training_images():
    d = {
        "train_images": ["f0", "s0", "f1", "b0"],
        "train_labels": ["lf0", "ls0", "lf1", "lb0"],
        "train_names": ["n_f0", "n_s0", "n_f1", "n_b0"],
        "train_kinds": ["fluorescence", "stained", "fluorescence", "brightfield"],
        "val_images": ["v"], "val_labels": ["lv"], "val_names": ["n_v"],
        "val_kinds": ["stained"],
    }
    out = data.oversample_rare(d, 3)
    assert out["train_images"].count("s0") == 3 and out["train_images"].count("b0") == 3
    assert out["train_images"].count("f0") == 1
    # images stay paired with their labels and names
    for img, lab, name in zip(out["train_images"], out["train_labels"], out["train_names"]):
        assert lab == "l" + img and name == "n_" + img
    assert out["val_images"] == ["v"]  # validation untouched
    assert d["train_images"] == ["f0", "s0", "f1", "b0"]  # input not modified
    assert data.oversample_rare(d, 1) is d


def test_build_model_rejects_unknown_stage_before_reading_data(tmp_path, monkeypatch, capsys):
    import build_model
    import data

    with pytest.raises(SystemExit):
        build_model.main(["cyto", "--stage", "2", "--runs", str(tmp_path),
                          "--data", str(tmp_path / "missing")])
    with pytest.raises(SystemExit):
        build_model.main(["nuclei", "--stage", "x", "--runs", str(tmp_path),
                          "--data", str(tmp_path / "missing")])
    # stage 2 needs stage 1's model first (a two-stage recipe)
    two = {**data.RECIPES["nuclei"], "stages": [{"recipe": "finetune", "epochs": 2}]}
    monkeypatch.setitem(data.RECIPES, "nuclei", two)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_model.main(["nuclei", "--stage", "2", "--runs", str(tmp_path),
                          "--data", str(tmp_path / "missing")])
    assert "run stage 1 first" in capsys.readouterr().err


def test_widen_model_keeps_outputs_and_rejects_bad_widths():
    import torch
    from widen import widen_model

    import flowseg

    torch.manual_seed(0)
    narrow = flowseg.Model.new(width=4, nchan=2, diam_mean=17.0)
    narrow.net.train()
    x = torch.randn(4, 2, 32, 32)
    with torch.no_grad():  # a few training-mode passes give non-trivial BN statistics
        for _ in range(3):
            narrow.net(x + torch.randn_like(x))
    narrow.net.eval()
    wide = widen_model(narrow, 8, noise=0.0)
    wide.net.eval()
    assert wide.net.nbase == [2, 8, 16, 32, 64]
    assert wide.size_model is None and wide.meta["widened_from"] == 4
    with torch.no_grad():
        (yn, sn), (yw, sw) = narrow.net(x), wide.net(x)
    assert torch.allclose(yn, yw, atol=1e-4 * float(yn.abs().max()))
    # the style vector repeats the narrow one, normalised over twice as many entries
    assert torch.allclose(sw[:, :32] * 2 ** 0.5, sn, atol=1e-5)
    noisy = widen_model(narrow, 8, noise=0.01, seed=1)
    noisy.net.eval()
    with torch.no_grad():
        yz = noisy.net(x)[0]
    assert not torch.equal(yz, yw)  # the copies differ, so training can separate them
    assert float((yz - yw).abs().max()) < 0.2 * float(yw.abs().max())
    with pytest.raises(ValueError, match="multiple"):
        widen_model(narrow, 6)


def test_rebase_model_keeps_the_network_and_drops_what_describes_the_old_size():
    import torch
    from build_model import rebase_model

    import flowseg

    start = flowseg.Model.new(width=4, nchan=2, diam_mean=17.0, seed=0)
    start.meta.update(size_model={"A": [0.0], "b": 1.0}, diam_labels=21.0, training={"x": 1},
                      style={"centroid": [0.0]})
    start.meta["normalize"] = [2.0, 98.0]
    new = rebase_model(start, 30.0)
    assert new.diam_mean == 30.0 and float(new.net.diam_mean) == 30.0
    assert new.meta["diam_labels"] == 30.0 and new.normalize == (2.0, 98.0)
    assert new.size_model is None and "training" not in new.meta and "style" not in new.meta
    assert start.diam_mean == 17.0  # the start is not changed
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(start.net(x)[0], new.net(x)[0])
    with torch.no_grad():  # a copy, not the start's network
        next(new.net.output.parameters()).add_(1.0)
        assert not torch.equal(start.net(x)[0], new.net(x)[0])


def test_refresh_copies_separates_widened_channels_and_keeps_outputs():
    import torch
    from widen import copy_similarity, refresh_copies, widen_model

    import flowseg

    torch.manual_seed(0)
    narrow = flowseg.Model.new(width=4, nchan=2, diam_mean=17.0)
    narrow.net.train()
    x = torch.randn(4, 2, 32, 32)
    with torch.no_grad():
        for _ in range(3):
            narrow.net(x + torch.randn_like(x))
    narrow.net.eval()
    wide = widen_model(narrow, 8, noise=0.0)
    fresh = refresh_copies(wide, seed=3)
    fresh.net.eval()
    assert fresh.net.nbase == wide.net.nbase and fresh.size_model is None
    with torch.no_grad():
        yn, yf = narrow.net(x)[0], fresh.net(x)[0]
    # the outputs stay those of the narrow model (new channels are read with zero weights)
    assert float((yf - yn).abs().max()) < 1e-2 * float(yn.abs().max())
    sw, sf = wide.net.state_dict(), fresh.net.state_dict()
    name = "downsample.down.res_down_1.conv.conv_1.2.weight"
    w, f = sw[name], sf[name]
    h, c = w.shape[0] // 2, w.shape[1] // 2
    assert torch.equal(w[:h], w[h:])  # widen_model without noise: exact copies
    assert torch.allclose(f[:h, :c], w[:h, :c] * 2)  # the two copies' reads folded into one
    assert torch.all(f[:h, c:] == 0)  # the old channels do not read the new ones yet
    cos = torch.nn.functional.cosine_similarity(f[:h].flatten(1), f[h:].flatten(1))
    assert float(cos.abs().mean()) < 0.5  # the new channels are not copies
    assert copy_similarity(wide) > 0.999 and abs(copy_similarity(fresh)) < 0.5
    # the zero weights that read the new channels get gradients from the first step
    fresh.net.train()
    y, _ = fresh.net(x)
    y.pow(2).mean().backward()
    g = dict(fresh.net.named_parameters())[name].grad
    assert float(g[:h, c:].abs().max()) > 0
    with pytest.raises(ValueError, match="factor"):
        refresh_copies(wide, factor=3)


def test_stored_as_half_reads_the_file_precision(tmp_path):
    import flowseg

    m = flowseg.Model.new(width=4, nchan=2, diam_mean=17.0, seed=0)
    assert data.stored_as_half(m.save(tmp_path / "half.pt", half=True))
    assert not data.stored_as_half(m.save(tmp_path / "full.pt"))


def test_pack_data_is_lossless_for_training(tmp_path):
    """Gray RGBA images become gray PNGs, colour ones RGB; training reads the same pixels."""
    from skimage import io as skio

    pack = pytest.importorskip("pack_data")
    src = tmp_path / "in" / "dsb2018" / "train"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (40, 50), dtype=np.uint8)
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    colour = rng.integers(0, 255, (40, 50, 4), dtype=np.uint8)
    masks = rng.integers(0, 300, (40, 50)).astype(np.uint16)
    for name, arr in [("a.png", rgba), ("b.png", colour), ("a_masks.png", masks),
                      ("b_masks.png", masks)]:
        skio.imsave(src / name, arr, check_contrast=False)
    assert pack.main([str(tmp_path / "out"), "--data", str(tmp_path / "in")]) == 0
    out = tmp_path / "out" / "dsb2018" / "train"
    assert skio.imread(out / "a.png").shape == (40, 50)
    assert skio.imread(out / "b.png").shape == (40, 50, 3)
    for n in ("a", "b"):
        np.testing.assert_array_equal(data.to_gray(skio.imread(out / f"{n}.png")),
                                      data.to_gray(skio.imread(src / f"{n}.png")))
        np.testing.assert_array_equal(skio.imread(out / f"{n}_masks.png"), masks)


def test_gpu_bench_and_snapshot_run_on_a_cpu(tmp_path, capsys):
    import flowseg
    from flowseg.engine.data.synthetic import make_sample

    bench = pytest.importorskip("gpu_bench")
    assert bench.main(["0.5", "--crop", "32", "--width", "8", "--workers", "2",
                       "--n-per-epoch", "16", "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "crop workers" in out and int(out.split("EPOCHS")[1]) >= 1

    snap = pytest.importorskip("gpu_snapshot")
    runs = tmp_path / "runs"
    runs.mkdir()
    s = [make_sample("nuclei", (96, 96), seed=k) for k in range(2)]
    flowseg.train(flowseg.Model.new(width=8, seed=0), [x.image for x in s], [x.labels for x in s],
                  val_images=[s[0].image], val_labels=[s[0].labels], epochs=2, crop=32,
                  n_per_epoch=4, val_every=1, seed=0, checkpoint_path=runs / "m.ckpt")
    (runs / "m.log").write_text("12:00 train 3/8 x\n12:00 epoch 1/2 loss=1\n")
    assert snap.main([str(runs), "m", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "m.log").read_text() == "12:00 epoch 1/2 loss=1\n"
    last = flowseg.Model.load(tmp_path / "out" / "snap_last.pt")
    assert last.meta["nbase"][1] == 8 and (tmp_path / "out" / "snap_best.pt").exists()
    assert data.stored_as_half(tmp_path / "out" / "snap_last.pt")


def _trained_pair(width: int = 4):
    """A small model and a copy of it trained a little further (so the weights differ)."""
    import copy

    import torch

    import flowseg

    a = flowseg.Model.new(width=width, nchan=2, diam_mean=17.0, seed=0)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for p in b.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
        b.net.train()
        b.net(torch.randn(2, 2, 32, 32))  # running statistics move too
        b.net.eval()
    return a, b


def test_average_weights_is_the_weighted_mean_of_the_two_models():
    import torch
    from soup import average_weights

    import flowseg

    a, b = _trained_pair()
    sa = {k: v.clone() for k, v in a.net.state_dict().items()}
    sb = {k: v.clone() for k, v in b.net.state_dict().items()}
    avg = average_weights(a, b, 0.25)
    assert avg is b and avg.meta["training"]["average"]["weight"] == 0.25
    moved = 0
    for k, v in avg.net.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.75 * sa[k] + 0.25 * sb[k])
            moved += int(not torch.equal(sa[k], sb[k]))
        else:
            assert torch.equal(v, sb[k])
    assert moved > 10  # weights and BatchNorm statistics both differed and were averaged
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        average_weights(a, b, 1.5)
    with pytest.raises(ValueError, match="architectures"):
        average_weights(flowseg.Model.new(width=8, nchan=2, seed=0), a)


def test_build_model_averages_a_stage_with_its_start(tmp_path, monkeypatch):
    """A two-stage recipe whose last stage has ``average``: the bundled file is the mean of
    stage 1 and the trained stage 2, stored as float16 with a refitted size model."""
    import build_model
    import torch

    import flowseg
    from flowseg.engine.data.synthetic import make_sample

    s = [make_sample("nuclei", (96, 96), seed=k) for k in range(6)]
    imgs, labs = [x.image for x in s], [x.labels for x in s]
    fake = {"train_images": imgs[:4], "train_labels": labs[:4],
            "train_names": [f"s{k}" for k in range(4)], "val_images": imgs[4:],
            "val_labels": labs[4:]}
    monkeypatch.setattr(build_model, "load_training_set", lambda *a, **k: fake)
    tiny = {"recipe": "from_scratch", "epochs": 2, "learning_rate": 0.05, "batch_size": 2,
            "crop": 32, "width": 4, "diam_mean": 17.0, "channels": None, "n_per_epoch": 4,
            "val_every": 1, "seed": 1, "half": True,
            # not "finetune": a checked fine-tune keeps its start's weights when its trained
            # states score no better (all AP 0 here), and then there would be nothing to average
            "stages": [{"recipe": "from_scratch", "epochs": 2, "seed": 2, "average": 0.5}]}
    monkeypatch.setitem(data.RECIPES, "nuclei", tiny)
    out = tmp_path / "final.pt"
    assert build_model.main(["nuclei", "--runs", str(tmp_path), "--out", str(out)]) == 0
    stage1 = tmp_path / "nuclei_stage1.pt"
    assert data.stored_as_half(stage1) and data.stored_as_half(out)
    final, start = flowseg.Model.load(out), flowseg.Model.load(stage1)
    rec = final.meta["training"]
    assert rec["average"]["weight"] == 0.5 and rec["average"]["with"].endswith("stage1.pt")
    assert final.size_model is not None
    sf, ss = final.net.state_dict(), start.net.state_dict()
    assert any(not torch.equal(sf[k], ss[k]) for k in sf if sf[k].is_floating_point())
    assert "averaged with the stage's start" in (tmp_path / "nuclei.log").read_text()


def test_write_card_renders_every_stage_of_the_bundled_recipe(tmp_path, monkeypatch):
    """The card is written from the model file, the recipe and an evaluation file alone."""
    import json
    import shutil

    import write_card

    models = tmp_path / "src" / "flowseg" / "models"
    models.mkdir(parents=True)
    (tmp_path / "runs").mkdir()
    shutil.copy(write_card.ROOT / "src" / "flowseg" / "models" / "nuclei.pt", models)
    ev = {"n_images": 60, "ap_true_diameter": {"0.5": 0.9, "0.75": 0.8, "0.9": 0.4},
          "ap_estimated_diameter": {"0.5": 0.88, "0.75": 0.7, "0.9": 0.3},
          "size_within_20pct": 0.9, "size_median_rel_error": 0.03,
          "ap_by_kind": {"stained": {"n": 11, "ap": [0.8, 0.5, 0.1]}}}
    (tmp_path / "runs" / "nuclei_eval.json").write_text(json.dumps(ev))
    monkeypatch.setattr(write_card, "ROOT", tmp_path)
    text = write_card.main("nuclei").read_text()
    stages = data.stage_configs("nuclei")
    for k, st in enumerate(stages, 1):
        assert f"- Stage {k} (" in text and f"{st['crop']}x{st['crop']} crops" in text
    if any(st.get("average") for st in stages):
        assert "averaged in weight space" in text
    assert "**0.900** / 0.800" in text and "stained 0.800 (11 images)" in text
    assert "Hardware: " in text and "`recipes/splits/dsb2018_val.txt`" in text


def test_refit_size_distinct_training_images_drops_repeats_and_thins_evenly():
    refit = pytest.importorskip("refit_size")
    names = ["a", "b", "a", "c", "b", "d", "e"]
    data = {"train_names": names, "train_images": list(range(7)), "train_labels": list(range(7)),
            "val_names": ["v"]}
    one = refit.distinct_training_images(data)
    assert one["train_names"] == ["a", "b", "c", "d", "e"]
    assert one["train_images"] == [0, 1, 3, 5, 6]
    assert one["val_names"] == ["v"]
    few = refit.distinct_training_images(data, 3)
    assert few["train_names"] == ["a", "c", "e"] and few["train_labels"] == [0, 3, 6]


def test_synthetic_cells_render_at_the_asked_size_and_stages_set_the_data():
    import data

    from flowseg.engine.training.prep import median_diameter

    img, lab, look = data._synthetic_one(("cells", 3, True, 0.0, (100.0, 101.0)))
    assert look == "cells" and img.shape[-1] == 2 and img.shape[0] >= 800
    assert 60 < median_diameter(lab) < 160  # big cells drawn at their size, not at <= 70 px
    small, _, _ = data._synthetic_one(("cells", 3, True, 0.0, data.CELL_DIAMETER))
    assert small.shape[0] <= 448
    # a later stage's data settings are its own (the recipe's stage 2 draws larger cells)
    st = data.stage_configs("cyto_cpu_generalist")
    assert tuple(st[-1]["syn_cell_diameter"])[1] > data.CELL_DIAMETER[1]
    assert "syn_cell_diameter" not in st[0]
