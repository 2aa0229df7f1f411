"""``flowseg segment`` / ``flowseg eval`` batches survive bad files (issue 23).

Each file is read and checked at its turn; a bad one is reported on one line and skipped;
the run ends with a summary and a non-zero exit code; outputs are written atomically.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from flowseg.cli import main
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference.model import Model


@pytest.fixture()
def model_file(tmp_path):
    return str(Model.new(width=4, seed=0).save(tmp_path / "tiny.pt"))


def _image(seed: int) -> np.ndarray:
    s = make_sample("nuclei", (48, 56), diameter=12, seed=seed)
    return (s.image[..., 0] * 1000).astype(np.uint16)


@pytest.fixture()
def folder(tmp_path):
    """Two good images among bad ones (and a blank one, which is not an error)."""
    d = tmp_path / "imgs"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", _image(1))
    np.save(d / "b.npy", _image(2))
    (d / "c.png").write_text("this is a text file, not a PNG\n")
    raw = (d / "a.tif").read_bytes()
    (d / "d.tif").write_bytes(raw[: len(raw) // 3])  # truncated
    nan = _image(3).astype(np.float32)
    nan[5:9, 5:9] = np.nan
    np.save(d / "e.npy", nan)
    np.save(d / "f.npy", np.zeros((2, 2, 2, 16, 16), np.float32))  # 5-D
    tifffile.imwrite(d / "g.tif", np.zeros((40, 40), np.uint16))  # blank: 0 objects
    return d


def _lines(text: str, name: str) -> list[str]:
    return [ln for ln in text.splitlines() if name in ln]


def test_bad_files_are_reported_and_skipped(folder, model_file, capsys):
    rc = main(["segment", str(folder), "--model", model_file, "--diameter", "12",
               "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1  # some failed
    for good in ("a", "b", "g"):
        assert (folder / f"{good}_masks.tif").is_file(), err
    assert tifffile.imread(folder / "g_masks.tif").max() == 0
    expected = {"c.png": "it is not a PNG file, it looks like a text file",
                "d.tif": "corrupt or truncated TIFF",
                "e.npy": "16 NaN",
                "f.npy": "5 axes"}
    for name, words in expected.items():
        lines = _lines(err, name)
        assert len(lines) == 1 and words in lines[0], (name, err)
        assert not (folder / f"{name.split('.')[0]}_masks.tif").exists()
    assert "3 segmented, 4 failed" in err
    assert "Traceback" not in err
    assert len(_lines(out, "objects")) == 3


def test_paths_lists_and_globs(folder, tmp_path, model_file, capsys):
    rc = main(["segment", str(folder / "*.tif"), str(tmp_path / "missing.tif"),
               str(folder / "nothing*.png"), "--model", model_file, "--diameter", "12",
               "--no-progress", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_masks.tif",
                                                                   "g_masks.tif"]
    assert "missing.tif: no such file or folder" in err
    assert "nothing*.png: no file matches this pattern" in err
    assert "2 segmented, 3 failed" in err  # a, g; d (truncated), missing, pattern


def test_absurd_diameters(folder, model_file, capsys):
    good = str(folder / "a.tif")
    assert main(["segment", good, "--model", model_file, "--diameter", "-5"]) == 2
    assert "diameter must be a finite number > 0" in capsys.readouterr().err
    assert main(["segment", good, "--model", model_file, "--diameter", "nan"]) == 2
    capsys.readouterr()
    rc = main(["segment", good, str(folder / "b.npy"), "--model", model_file,
               "--diameter", "1e9", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2  # nothing segmented
    assert len(_lines(err, "larger than the image")) == 2
    assert "0 segmented, 2 failed" in err
    assert not (folder / "a_masks.tif").exists()


def test_ctrl_c_leaves_no_half_written_mask(folder, model_file, capsys, monkeypatch):
    good = [str(folder / "a.tif"), str(folder / "g.tif")]
    assert main(["segment", *good, "--model", model_file, "--diameter", "12",
                 "--no-progress"]) == 0
    before = tifffile.imread(folder / "a_masks.tif")
    real = tifffile.imwrite
    calls = []

    def interrupted(path, data, **kw):  # Ctrl-C after half the bytes are on disk
        calls.append(path)
        real(path, data, **kw)
        with open(path, "r+b") as fh:
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(tifffile, "imwrite", interrupted)
    rc = main(["segment", *good, "--model", model_file, "--diameter", "20", "--no-progress"])
    monkeypatch.undo()
    assert rc == 130 and len(calls) == 1
    assert np.array_equal(tifffile.imread(folder / "a_masks.tif"), before)  # old, whole
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith(".") or "tmp" in n], names


def test_eval_skips_bad_pairs(tmp_path, model_file, capsys):
    d = tmp_path / "val"
    d.mkdir()
    for k in range(3):
        s = make_sample("nuclei", (48, 48), diameter=12, seed=k)
        tifffile.imwrite(d / f"im{k}.tif", (s.image[..., 0] * 1000).astype(np.uint16))
        tifffile.imwrite(d / f"im{k}_masks.tif", s.labels.astype(np.uint16))
    (d / "im1.tif").write_bytes(b"II*\x00" + b"\x00" * 10)  # a broken TIFF
    tifffile.imwrite(d / "im2_masks.tif", np.zeros((30, 30), np.uint16))  # wrong shape
    rc = main(["eval", "--dir", str(d), "--model", model_file, "--diameter", "12",
               "--csv", str(tmp_path / "scores.csv")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert len(_lines(err, "im1.tif: cannot read this file")) == 1
    assert len(_lines(err, "im2.tif: labels im2_masks.tif have shape (30, 30)")) == 1
    assert "1 evaluated, 2 failed" in err and "1 image(s)" in out
    with open(tmp_path / "scores.csv") as fh:
        assert [r["image"] for r in csv.DictReader(fh)] == ["im0.tif"]


def test_blockwise_batch_goes_on_after_a_bad_file(tmp_path, model_file, capsys):
    np.save(tmp_path / "a.npy", _image(4).astype(np.float32))
    (tmp_path / "bad.png").write_bytes(b"")
    rc = main(["segment", str(tmp_path / "a.npy"), str(tmp_path / "bad.png"),
               "--model", model_file, "--block-size", "32", "--workers", "1",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and (tmp_path / "a_masks.zarr").is_dir()
    assert len(_lines(err, "bad.png: cannot read this file: the file is empty")) == 1
    assert "1 segmented, 1 failed" in err
