"""Training: learning from scratch, fine-tuning to a new style, resume, cancel, bad input."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.flows.diffusion import masks_to_flows
from flowseg.engine.flows.metrics import average_precision
from flowseg.engine.inference.model import Model
from flowseg.engine.progress import ProgressCollector
from flowseg.engine.training.augment import random_transform, warp_sample
from flowseg.engine.training.checkpoint import load_checkpoint
from flowseg.engine.training.prep import prepare_samples
from flowseg.engine.training.schedule import RECIPES, lr_schedule, resolve_recipe
from flowseg.engine.training.train import train


def _data(seeds, kind="cells", shape=(160, 160), **kw):
    s = [make_sample(kind, shape, seed=k, **kw) for k in seeds]
    return [x.image for x in s], [x.labels for x in s], [x.diameter for x in s]


def _ap(model, images, labels, diams) -> float:
    return float(np.mean([average_precision(g, model.segment(i, diameter=d).masks)[0]
                          for i, g, d in zip(images, labels, diams)]))


@pytest.fixture(scope="session")
def scratch():
    """A width-8 model trained from scratch on 6 synthetic fluorescence images (~40 s)."""
    ti, tl, _ = _data(range(6))
    vi, vl, vd = _data(range(100, 102))
    pc = ProgressCollector()
    t0 = time.monotonic()
    res = train(Model.new(width=8, diam_mean=30.0, seed=0), ti, tl, val_images=vi,
                val_labels=vl, recipe="from_scratch", epochs=30, crop=96, n_per_epoch=16,
                val_every=10, seed=0, progress=pc)
    return res, pc, time.monotonic() - t0


def test_from_scratch_loss_falls_and_ap_rises(scratch):
    res, pc, seconds = scratch
    model, hist = res  # unpacks as (model, history)
    loss = np.asarray(hist["loss"])
    assert len(loss) == 30 and np.all(np.isfinite(loss))
    assert loss[-5:].mean() < 0.3 * loss[:3].mean()
    hi, hl, hd = _data(range(200, 203))
    untrained = Model.new(width=8, diam_mean=30.0, seed=0)
    assert _ap(untrained, hi, hl, hd) < 0.2
    ap = _ap(model, hi, hl, hd)
    assert ap > 0.75, f"held-out AP@0.5 {ap:.3f} after training ({seconds:.0f} s)"
    # validation ran at epochs 10, 20, 30 and the best one was kept
    assert hist["val_epoch"] == [10, 20, 30]
    assert res.best_epoch in hist["val_epoch"]
    assert max(v for v in hist["val_ap"] if v is not None) > 0.5
    stages = pc.stages()
    assert {"flows", "train", "epoch", "validate"} <= set(stages)
    assert res.crops_per_second > 0


def test_model_record_and_save(scratch, tmp_path):
    res, _, _ = scratch
    path = res.model.save(tmp_path / "m.pt")
    m = Model.load(path)
    rec = m.meta["training"]
    assert rec["config"]["recipe"] == "from_scratch" and rec["epochs_done"] == 30
    assert len(rec["loss"]) == 30 and rec["val_epoch"] == [10, 20, 30]
    assert rec["images"] == [f"image {k}" for k in range(6)]
    assert rec["device"].split(":")[0] == res.model.device.type  # "cpu" or "cuda: <GPU>"
    assert rec["config"]["batch_seeds"] is False  # workers=0: one random stream
    assert m.meta["diam_mean"] == 30.0 and 20 < m.meta["diam_labels"] < 40
    sm = m.meta["size_model"]
    assert sm is not None and len(sm["A"]) == m.net.nbase[-1]


def test_finetune_to_a_new_style(scratch):
    """3 images of elongated phase-contrast cells without nuclear channel: AP +0.3."""
    base = scratch[0].model
    kw = {"kind": "phase", "elongation": 3.0, "with_nuclei": False}
    fi, fl, _ = _data(range(200, 203), **kw)
    vi, vl, vd = _data(range(300, 304), **kw)
    before = _ap(base, vi, vl, vd)
    res = train(base, fi, fl, recipe="finetune", epochs=50, crop=96, seed=0)
    after = _ap(res.model, vi, vl, vd)
    assert after >= before + 0.3, f"AP@0.5 {before:.3f} -> {after:.3f}"
    # the starting model is not modified in place
    assert _ap(base, vi, vl, vd) == pytest.approx(before)


def _tiny(n=3, shape=(128, 128)):
    ti, tl, _ = _data(range(n), shape=shape)
    return ti, tl


def test_resume_continues_exactly(tmp_path):
    ti, tl = _tiny()
    kw = {"recipe": "finetune", "epochs": 4, "crop": 64, "batch_size": 4, "n_per_epoch": 4,
          "seed": 1, "checkpoint_every": 0}
    m0 = Model.new(width=8, seed=0)
    full = train(m0, ti, tl, checkpoint_path=tmp_path / "a.ckpt", **kw)
    done = {"n": 0}

    def prog(ev):
        if ev.stage == "epoch":
            done["n"] = ev.done

    part = train(m0, ti, tl, checkpoint_path=tmp_path / "b.ckpt", progress=prog,
                 cancel=lambda: done["n"] >= 2, **kw)
    assert part.cancelled and part.history["epoch"] == [1, 2]
    rest = train(m0, ti, tl, checkpoint_path=tmp_path / "c.ckpt", resume=tmp_path / "b.ckpt",
                 **kw)
    assert rest.history["epoch"] == [1, 2, 3, 4]
    # the training time counts the interrupted run too
    ck = load_checkpoint(tmp_path / "b.ckpt")
    assert ck["seconds"] >= sum(part.history["seconds"])
    assert rest.seconds >= ck["seconds"] + sum(rest.history["seconds"][2:])
    np.testing.assert_allclose(rest.history["loss"], full.history["loss"], rtol=1e-6)
    a, c = full.model.net.state_dict(), rest.model.net.state_dict()
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), c[k].numpy(), rtol=1e-5, atol=1e-6)


def test_worker_processes_give_the_same_batches_and_weights(tmp_path):
    """workers >= 1: per-batch seeds, so forked workers and in-process give one result; a
    run resumed at an epoch boundary with workers continues exactly."""
    from flowseg.engine.training.batches import BatchMaker

    ti, tl = _tiny()
    sm = prepare_samples(ti, tl, nchan=2)
    imgs, flows, fgs = sm.images, sm.flows, sm.fgs
    order = np.array([0, 1, 1, 0, 0, 1, 1])
    out = {}
    for w in (0, 1, 2):
        with BatchMaker(imgs, flows, fgs, [1.0] * len(imgs), 64, workers=w) as bm:
            out[w] = list(bm.epoch(np.random.default_rng(5), order, 3))
        assert [len(b[0]) for b in out[w]] == [3, 3, 1]
        assert out[w][0][1].shape == (3, 2, 64, 64) and out[w][0][2].shape == (3, 3, 64, 64)
    for a, b in zip(out[1], out[2]):
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(out[0][0][1], out[1][0][1])  # a different random stream
    with pytest.raises(ValueError, match="workers"):
        BatchMaker(imgs, flows, fgs, [1.0, 1.0], 64, workers=-1)

    kw = {"recipe": "finetune", "epochs": 3, "crop": 64, "batch_size": 4, "n_per_epoch": 8,
          "seed": 1, "checkpoint_every": 0}
    m0 = Model.new(width=8, seed=0)
    one = train(m0, ti, tl, checkpoint_path=tmp_path / "a.ckpt", workers=1, **kw)
    two = train(m0, ti, tl, checkpoint_path=tmp_path / "b.ckpt", workers=2, **kw)
    np.testing.assert_allclose(one.history["loss"], two.history["loss"], rtol=1e-6)
    assert load_checkpoint(tmp_path / "b.ckpt")["config"]["batch_seeds"] is True
    n = {"e": 0}

    def prog(ev):
        if ev.stage == "epoch":
            n["e"] = ev.done

    part = train(m0, ti, tl, checkpoint_path=tmp_path / "c.ckpt", workers=2, progress=prog,
                 cancel=lambda: n["e"] >= 1, **kw)
    assert part.cancelled
    rest = train(m0, ti, tl, checkpoint_path=tmp_path / "d.ckpt", workers=2,
                 resume=tmp_path / "c.ckpt", **kw)
    np.testing.assert_allclose(rest.history["loss"], one.history["loss"], rtol=1e-6)
    with pytest.warns(UserWarning, match="workers=0"):
        train(m0, ti, tl, checkpoint_path=tmp_path / "e.ckpt", workers=0,
              resume=tmp_path / "c.ckpt", **kw)


def test_cancel_keeps_best_and_saves(tmp_path):
    ti, tl = _tiny()
    vi, vl, _ = _data([50], shape=(128, 128))
    n = {"batches": 0}

    def prog(ev):
        if ev.stage == "train":
            n["batches"] += 1

    out = tmp_path / "m.pt"
    res = train(Model.new(width=8, seed=0), ti, tl, val_images=vi, val_labels=vl, epochs=10,
                crop=64, val_every=1, n_per_epoch=8, seed=0, save_path=out, progress=prog,
                cancel=lambda: n["batches"] >= 3)
    assert res.cancelled and len(res.history["epoch"]) == 3
    assert res.best_epoch in (1, 2, 3) and out.is_file()
    assert Model.load(out).meta["training"]["cancelled"] is True
    assert (tmp_path / "m.pt.ckpt").is_file()


def test_deterministic_with_seed():
    ti, tl = _tiny(2)
    kw = {"epochs": 2, "crop": 64, "batch_size": 2, "n_per_epoch": 2, "seed": 3}
    a = train(Model.new(width=8, seed=0), ti, tl, **kw).history["loss"]
    b = train(Model.new(width=8, seed=0), ti, tl, **kw).history["loss"]
    assert a == b


def test_3d_volume_trains_through_slices():
    s = make_sample("cells", (8, 64, 64), diameter=20, seed=0)
    pc = ProgressCollector()
    res = train(Model.new(width=8, seed=0), [s.image], [s.labels], epochs=1, crop=64,
                anisotropy=2.0, seed=0, progress=pc)
    n = res.model.meta["training"]["n_samples"]
    assert 8 < n <= 8 + 64 + 64  # XY slices plus XZ / YZ slices (those with objects)


def test_augmentation_rotates_flow_vectors():
    lab = make_sample("cells", (128, 128), elongation=2.0, seed=4).labels
    flows = masks_to_flows(lab)
    img = lab[None].astype(np.float32)
    rng = np.random.default_rng(0)
    for _ in range(4):
        t = random_transform(rng, lab.shape, 96, 1.0, scale_range=(1.0, 1.0))
        x, y = warp_sample(img, flows, lab > 0, t, 96)
        # labels warped with nearest neighbour (through the image channel: order 1 is exact
        # inside objects away from borders), then flows recomputed in the crop's frame
        wl = np.zeros((96, 96), np.int32)
        from scipy import ndimage as ndi

        ndi.affine_transform(lab, t.matrix, t.offset, output=wl, order=0)
        ref = masks_to_flows(wl)
        edge = np.unique(np.concatenate([wl[0], wl[-1], wl[:, 0], wl[:, -1]]))
        inner = (ndi.binary_erosion(wl > 0, iterations=2) & (np.hypot(*ref) > 0.5)
                 & ~np.isin(wl, edge))  # objects cut by the crop have other flows
        cos = (y[0] * ref[0] + y[1] * ref[1])[inner] / np.maximum(np.hypot(y[0], y[1])[inner], 1e-6)
        assert cos.mean() > 0.95, cos.mean()
        np.testing.assert_array_equal(y[2] > 0.5, wl > 0)


def test_lr_schedule_and_recipes():
    lr = lr_schedule(100, 0.2, warmup=10)
    assert lr[0] == pytest.approx(0.02) and lr[9] == pytest.approx(0.2)
    assert lr[50] == pytest.approx(0.2) and lr[-1] < 0.2 / 100
    assert np.all(np.diff(lr[-14:]) <= 0)
    assert set(RECIPES) == {"from_scratch", "finetune"}
    assert resolve_recipe("finetune", epochs=7)["epochs"] == 7
    with pytest.raises(ValueError, match="unknown training recipe"):
        resolve_recipe("fast")


def _no_training(pc: ProgressCollector) -> bool:
    return "train" not in pc.stages()


@pytest.mark.parametrize("case", ["shape", "float", "empty", "mismatch_count", "crop",
                                  "optimizer", "val_only"])
def test_bad_input_fails_before_training(case):
    ti, tl = _tiny(2, (64, 64))
    kw: dict = {}
    if case == "shape":
        tl = [tl[0][:60], tl[1]]
        msg = "shape"
    elif case == "float":
        tl = [tl[0].astype(np.float32) + 0.5, tl[1]]
        msg = "integer"
    elif case == "empty":
        tl = [np.zeros_like(t) for t in tl]
        msg = "no training image has at least 1"
    elif case == "mismatch_count":
        tl = tl[:1]
        msg = "label images"
    elif case == "crop":
        kw["crop"] = 50
        msg = "multiple of 8"
    elif case == "optimizer":
        kw["optimizer"] = "adam"
        msg = "optimizer"
    else:
        kw["val_images"] = ti
        msg = "both val_images and val_labels"
    pc = ProgressCollector()
    with pytest.raises(ValueError, match=msg):
        train(Model.new(width=8, seed=0), ti, tl, epochs=1, crop=kw.pop("crop", 64),
              progress=pc, **kw)
    assert _no_training(pc)


def test_images_without_objects_are_skipped_with_a_warning():
    ti, tl = _tiny(2, (64, 64))
    tl[1] = np.zeros_like(tl[1])
    with pytest.warns(UserWarning, match="skipped 1 training sample"):
        res = train(Model.new(width=8, seed=0), ti, tl, epochs=1, crop=64, seed=0)
    assert res.model.meta["training"]["images"] == ["image 0"]


def test_bad_save_paths(tmp_path):
    ti, tl = _tiny(1, (64, 64))
    m = Model.new(width=8, seed=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(m, ti, tl, epochs=1, crop=64, save_path=tmp_path / "missing" / "m.pt")
    (tmp_path / "old.pt").write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="already exists"):
        train(m, ti, tl, epochs=1, crop=64, save_path=tmp_path / "old.pt")
    assert (tmp_path / "old.pt").read_bytes() == b"keep me"
    if os.geteuid() != 0:  # root ignores folder permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            with pytest.raises(PermissionError, match="read-only"):
                train(m, ti, tl, epochs=1, crop=64, save_path=ro / "m.pt")
        finally:
            ro.chmod(stat.S_IRWXU)
