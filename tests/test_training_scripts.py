"""The bundled models' training scripts (training/): data helpers and argument checks.

They read ../shared/data only when they train; these tests use small arrays instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

TRAINING = Path(__file__).resolve().parents[1] / "training"
sys.path.insert(0, str(TRAINING))

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
    two = {**data.RECIPES["nuclei"], "stages": [dict(recipe="finetune", epochs=2)]}
    monkeypatch.setitem(data.RECIPES, "nuclei", two)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        build_model.main(["nuclei", "--stage", "2", "--runs", str(tmp_path),
                          "--data", str(tmp_path / "missing")])
    assert "run stage 1 first" in capsys.readouterr().err


def test_widen_model_keeps_outputs_and_rejects_bad_widths():
    import torch

    import flowseg
    from widen import widen_model

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


def test_refresh_copies_separates_widened_channels_and_keeps_outputs():
    import torch

    import flowseg
    from widen import copy_similarity, refresh_copies, widen_model

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
    from flowseg.engine.synthetic import make_sample

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
