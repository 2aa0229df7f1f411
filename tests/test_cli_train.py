"""``flowseg train`` and ``flowseg eval`` on a tiny synthetic folder."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from flowseg.cli import main
from flowseg.engine.data.synthetic import make_sample


@pytest.fixture
def folder(tmp_path):
    import imageio.v3 as iio

    d = tmp_path / "data"
    d.mkdir()
    for k in range(3):
        s = make_sample("cells", (96, 96), seed=k)
        tifffile.imwrite(d / f"img{k}.tif", (s.image * 1000).astype(np.uint16))
        iio.imwrite(d / f"img{k}_masks.png", s.labels.astype(np.uint16))
    return d


def test_train_then_eval(folder, tmp_path, capsys):
    import imageio.v3

    from flowseg.engine.flows.metrics import average_precision
    from flowseg.engine.inference.model import Model
    from flowseg.engine.training.prep import median_diameter

    out = tmp_path / "m.pt"
    rc = main(["train", "--dir", str(folder), "--width", "8", "--crop", "64", "--epochs", "2",
               "--val-fraction", "0.34", "--out", str(out), "--seed", "1"])
    assert rc == 0 and out.is_file() and (tmp_path / "m.pt.ckpt").is_file()
    rec = Model.load(out).meta["training"]
    assert rec["epochs_done"] == 2 and rec["config"]["recipe"] == "from_scratch"
    assert len(rec["images"]) == 2 and rec["val_epoch"] == [1, 2]
    assert rec["config"]["precision"] == "fp32"  # the suite's FLOWSEG_PRECISION (conftest)
    # resuming a finished run with more epochs continues from the checkpoint (here in bf16)
    with pytest.warns(UserWarning, match="resuming with precision='bf16'"):
        rc = main(["train", "--dir", str(folder), "--width", "8", "--crop", "64", "--epochs",
                   "3", "--val-fraction", "0.34", "--out", str(out), "--overwrite", "--seed",
                   "1", "--resume", str(tmp_path / "m.pt.ckpt"), "--precision", "bf16"])
    rec = Model.load(out).meta["training"]
    assert rc == 0 and rec["epochs_done"] == 3 and rec["config"]["precision"] == "bf16"
    assert "crops/s, bf16)" in capsys.readouterr().err
    capsys.readouterr()
    rc = main(["eval", "--dir", str(folder), "--model", str(out), "--csv",
               str(tmp_path / "ap.csv"), "--true-diameter"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 image(s)" in text and "AP@0.5 =" in text and "AP@0.9 =" in text
    with open(tmp_path / "ap.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows] == ["img0.tif", "img1.tif", "img2.tif"]
    # the reported AP is the AP of the model's masks, image by image, and their mean
    model = Model.load(out)
    for r in rows:
        img = tifffile.imread(folder / r["image"])
        gt = imageio.v3.imread(folder / r["image"].replace(".tif", "_masks.png"))
        seg = model.segment(img, diameter=median_diameter(gt))
        res = average_precision(gt, seg.masks, thresholds=(0.5,))
        want = float(np.ravel(res[0] if isinstance(res, tuple) else res)[0])
        assert float(r["ap50"]) == pytest.approx(want, abs=6e-5), r  # CSV: 4 decimals
        assert int(r["n_true"]) == len(np.unique(gt)) - 1
    mean = np.mean([float(r["ap50"]) for r in rows])
    assert f"AP@0.5 = {mean:.3f}" in text, text


def test_train_errors(folder, tmp_path, capsys):
    rc = main(["train", "--dir", str(tmp_path / "nope"), "--epochs", "1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    (tmp_path / "old.pt").write_bytes(b"x")
    rc = main(["train", "--dir", str(folder), "--epochs", "1", "--out", str(tmp_path / "old.pt")])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    rc = main(["train", "--dir", str(folder), "--epochs", "1", "--crop", "50", "--width", "8",
               "--out", str(tmp_path / "new.pt")])
    assert rc == 2 and "multiple of 8" in capsys.readouterr().err
    rc = main(["eval", "--dir", str(folder), "--model", str(tmp_path / "none.pt")])
    assert rc == 2 and "not found" in capsys.readouterr().err
