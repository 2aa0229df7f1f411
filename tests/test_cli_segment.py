"""``flowseg segment`` over files and folders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from flowseg.cli import main
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference.model import Model


@pytest.fixture()
def model_file(tmp_path):
    return str(Model.new(width=4, seed=0).save(tmp_path / "tiny.pt"))


def test_segment_folder_and_formats(tmp_path, model_file, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    s = make_sample("cells", (64, 72), diameter=20, with_nuclei=True, seed=1)
    tifffile.imwrite(d / "a.tif", (s.image * 1000).astype(np.uint16))
    d2 = tmp_path / "gray"
    d2.mkdir()
    np.save(d2 / "b.npy", s.image[..., 0])
    tifffile.imwrite(d / "old_masks.tif", np.zeros((4, 4), np.uint16))  # outputs are skipped
    rc = main(["segment", str(d), "--model", model_file, "--diameter", "30",
               "--channels", "0", "1", "--save-flows", "--no-progress"])
    assert rc == 0
    m = tifffile.imread(d / "a_masks.tif")
    assert m.shape == (64, 72) and m.dtype == np.uint16
    assert (d / "a_flows.tif").exists()
    assert tifffile.imread(d / "a_flows.tif").shape == (3, 64, 72)
    assert not (d / "old_masks_masks.tif").exists()
    out = capsys.readouterr().out
    assert "a.tif" in out and "objects" in out
    o = tmp_path / "out"
    rc = main(["segment", str(d2 / "b.npy"), "--model", model_file, "--out", str(o),
               "--format", "npy", "--no-progress"])
    assert rc == 0 and np.load(o / "b_masks.npy").dtype == np.int32


def test_segment_sample_and_errors(tmp_path, model_file, capsys):
    rc = main(["segment", "--sample", "--model", model_file, "--out", str(tmp_path),
               "--no-progress"])
    assert rc == 0
    assert tifffile.imread(tmp_path / "sample_cells_masks.tif").shape == (384, 384)
    assert "AP@0.5" in capsys.readouterr().out
    assert main(["segment", str(tmp_path / "missing.tif"), "--model", model_file]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["segment", "--model", model_file]) == 2
    assert main(["segment", "--sample", "--model", "no_such_model"]) == 2
    assert "no bundled model" in capsys.readouterr().err
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.zeros((20, 20, 3), np.uint8)
                     + np.arange(20, dtype=np.uint8)[:, None, None])
    assert main(["segment", str(img), "--model", model_file, "--channels", "0", "7"]) == 2
    assert "channel 7" in capsys.readouterr().err


def test_segment_auto_chooses_per_image(tmp_path, monkeypatch, capsys):
    from flowseg.engine.inference import zoo
    from flowseg.engine.io import registry

    bundled = tmp_path / "bundled"  # tiny bundled models without centroids: no candidates
    bundled.mkdir()
    Model.new(width=4, seed=0).save(bundled / "nuclei.pt")
    Model.new(width=3, seed=1).save(bundled / "cyto.pt")
    monkeypatch.setattr(registry, "bundled_model_dir", lambda: bundled)
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(user))
    d = tmp_path / "imgs"
    d.mkdir()
    a = make_sample("nuclei", (80, 80), seed=1).image[..., 0]
    b = make_sample("phase", (80, 80), seed=2, with_nuclei=False).image[..., 0]
    for name, img in (("for-a", a), ("for-b", b)):
        tifffile.imwrite(d / f"{name[-1]}.tif", (img * 1000).astype(np.uint16))
    assert main(["segment", str(d), "--model", "auto", "--no-progress"]) == 2
    assert "no model with a style centroid" in capsys.readouterr().err
    for name, img in (("for-a", a), ("for-b", b)):
        m = Model.new(width=2, seed=0)
        m.meta["style"] = zoo.training_style([img])
        m.save(user / f"{name}.pt")
    rc = main(["segment", str(d), "--model", "auto", "--diameter", "20", "--no-progress"])
    assert rc == 0 and (d / "a_masks.tif").exists() and (d / "b_masks.tif").exists()
    lines = capsys.readouterr().out.splitlines()
    assert "model 'for-a' (auto" in next(ln for ln in lines if "a.tif" in ln)
    assert "model 'for-b' (auto" in next(ln for ln in lines if "b.tif" in ln)


def test_segment_auto_with_the_bundled_models(tmp_path, monkeypatch, capsys):
    from flowseg.engine.inference import zoo
    from flowseg.engine.io import registry

    if not all(n in registry.bundled_models() and zoo.model_style(Model.load(n))
               for n in ("nuclei", "cyto")):
        pytest.skip("bundled models without style centroids")
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(tmp_path / "none"))
    rc = main(["segment", "--sample", "nuclei", "--model", "auto", "--out", str(tmp_path),
               "--no-progress"])
    assert rc == 0 and "model 'nuclei' (auto" in capsys.readouterr().out
