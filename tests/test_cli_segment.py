"""``flowseg segment`` over files and folders."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from flowseg.cli import main
from flowseg.engine.model import Model
from flowseg.engine.synthetic import make_sample


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
    tifffile.imwrite(img, np.zeros((20, 20, 3), np.uint8) + np.arange(20, dtype=np.uint8)[:, None, None])
    assert main(["segment", str(img), "--model", model_file, "--channels", "0", "7"]) == 2
    assert "channel 7" in capsys.readouterr().err
