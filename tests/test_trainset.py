"""The on-disk training set of the correct-and-retrain loop (engine, no GUI)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from flowseg.engine.io.datasets import load_folder
from flowseg.engine.io.segfile import read_seg
from flowseg.engine.training.trainset import MANIFEST, TrainingSet, image_files, safe_name


def _pair(seed, shape=(40, 48), nchan=1):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 4000, (*shape, nchan) if nchan == 2 else shape).astype(np.uint16)
    lab = np.zeros(shape, np.int32)
    lab[5:15, 5:15] = 1
    lab[20:32, 25:40] = 2
    return img, lab


def test_add_writes_cellpose_layout_and_reopens(tmp_path):
    ts = TrainingSet(tmp_path / "set")  # created
    img, lab = _pair(0)
    pair, replaced = ts.add(img, lab, "first image", source="/data/a.tif", diameter=12.5)
    assert not replaced and pair.name == "first_image"
    folder = tmp_path / "set"
    assert {p.name for p in folder.iterdir()} == {
        "first_image.tif", "first_image_masks.tif", "first_image_seg.npy", MANIFEST}
    seg = read_seg(folder / "first_image_seg.npy")  # what the Cellpose GUI opens
    np.testing.assert_array_equal(seg["masks"], lab)
    assert seg["diameter"] == 12.5 and seg["filename"] == "first_image.tif"
    assert seg["masks"].dtype == np.uint16
    # the folder trains as it is: the CLI's / Cellpose's image + _masks reader finds the pair
    tf = load_folder(folder)
    assert tf.names == ["first_image.tif"]
    np.testing.assert_array_equal(tf.images[0], img)
    np.testing.assert_array_equal(tf.labels[0], lab)
    # a new session opens the same folder and lists the pair with its record
    again = TrainingSet(folder)
    (p,) = again.pairs()
    assert p.name == "first_image" and p.info["source"] == "/data/a.tif"
    assert p.info["objects"] == 2 and p.info["diameter"] == 12.5
    assert again.nchan == 1 and again.channels == (0, None)
    images, labels, names = again.load()
    assert names == ["first_image"]
    np.testing.assert_array_equal(images[0], img)
    np.testing.assert_array_equal(labels[0], lab)


def test_same_image_updates_other_image_gets_new_name(tmp_path):
    ts = TrainingSet(tmp_path)
    img, lab = _pair(0)
    ts.add(img, lab, "cells")
    other, olab = _pair(1)
    p2, replaced = ts.add(other, olab, "cells")  # a different image, same name
    assert not replaced and p2.name == "cells-2"
    fixed = lab.copy()
    fixed[35:39, 2:6] = 3  # a newer correction of the first image, under another layer name
    p3, replaced = ts.add(img, fixed, "renamed layer")
    assert replaced and p3.name == "cells"
    assert ts.names() == ["cells", "cells-2"]  # an update keeps the pair's place
    _, labels, _ = TrainingSet(tmp_path).load(["cells"])
    np.testing.assert_array_equal(labels[0], fixed)
    assert "updated" in TrainingSet(tmp_path).pairs()[0].info


def test_held_out_is_first_pair_and_stays(tmp_path):
    ts = TrainingSet(tmp_path)
    assert ts.held_out() is None and ts.training_names() == []
    for k in range(3):
        ts.add(*_pair(k), f"img{2 - k}")  # names sort against the order they were added
        if k == 0:
            assert ts.held_out() is None and ts.training_names() == ["img2"]
    assert ts.names() == ["img2", "img1", "img0"]
    assert TrainingSet(tmp_path).held_out() == "img2"
    assert TrainingSet(tmp_path).training_names() == ["img1", "img0"]


def test_two_channel_images_and_channel_mismatch(tmp_path):
    ts = TrainingSet(tmp_path)
    img, lab = _pair(0, nchan=2)
    ts.add(img, lab, "two")
    assert ts.nchan == 2 and ts.channels == (0, 1)
    images, _, _ = ts.load()
    assert images[0].shape == (40, 48, 2)
    np.testing.assert_array_equal(images[0], img)
    with pytest.raises(ValueError, match="cytoplasm \\+ nucleus images"):
        ts.add(*_pair(1), "one")
    assert ts.names() == ["two"]
    # a (Y, X, 1) image counts as one channel
    ts1 = TrainingSet(tmp_path / "one")
    ts1.add(img[..., :1], lab, "a")
    assert ts1.nchan == 1 and ts1.load()[0][0].shape == (40, 48)


@pytest.mark.parametrize("image, labels, match", [
    (np.zeros((10, 10, 3)), np.ones((10, 10), int), "must be \\(Y, X\\)"),
    (np.zeros((10, 10)), np.ones((10, 10), float), "integer"),
    (np.zeros((10, 10)), np.ones((12, 10), int), "do not match"),
    (np.zeros((10, 10)), np.zeros((10, 10), int), "hold no objects"),
    (np.zeros((10, 10)), -np.ones((10, 10), int), "negative"),
])
def test_bad_pairs_are_refused_and_nothing_written(tmp_path, image, labels, match):
    ts = TrainingSet(tmp_path)
    with pytest.raises(ValueError, match=match):
        ts.add(image, labels, "x")
    assert list(tmp_path.iterdir()) == []


def test_foreign_cellpose_folder_opens_and_keeps_its_order(tmp_path):
    import tifffile

    for name in ("b", "a"):
        img, lab = _pair(ord(name))
        tifffile.imwrite(tmp_path / f"{name}.tif", img)
        tifffile.imwrite(tmp_path / f"{name}_masks.tif", lab.astype(np.uint16))
    tifffile.imwrite(tmp_path / "unlabelled.tif", _pair(9)[0])
    ts = TrainingSet(tmp_path)
    assert ts.names() == ["a", "b"] and ts.held_out() == "a"
    assert ts.pairs()[0].info == {}
    ts.add(*_pair(5), "c")
    assert TrainingSet(tmp_path).names() == ["a", "b", "c"]  # held-out image unchanged
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert [e["name"] for e in manifest["pairs"]] == ["a", "b", "c"]


def test_interrupted_add_leaves_the_set_intact(tmp_path, monkeypatch):
    ts = TrainingSet(tmp_path)
    img, lab = _pair(0)
    ts.add(img, lab, "kept")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    from flowseg.engine.io import segfile

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(segfile, "write_seg", broken)
    with pytest.raises(OSError, match="disk full"):
        ts.add(img, lab + (lab > 0), "kept")  # an update that fails half-way
    with pytest.raises(OSError, match="disk full"):
        ts.add(*_pair(1), "new")  # a new pair whose labels cannot be written
    after = TrainingSet(tmp_path)
    assert after.names() == ["kept"]  # the half-written image is not listed as a pair
    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # nothing left over


def test_bad_manifest_and_file_paths(tmp_path):
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read"):
        TrainingSet(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a flowseg training-set manifest"):
        TrainingSet(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        TrainingSet(f)
    with pytest.raises(KeyError, match="nope"):
        TrainingSet(tmp_path / "new").load(["nope"])


def test_image_files_and_safe_name(tmp_path):
    for n in ("b.tif", "a.png", "a_masks.png", "a_seg.npy", "c_cp_masks.tif", ".hidden.tif",
              "notes.txt", "d_flows.tif"):
        (tmp_path / n).write_bytes(b"")
    os.mkdir(tmp_path / "sub.tif")
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.tif"]
    with pytest.raises(FileNotFoundError):
        image_files(tmp_path / "missing")
    assert safe_name("my cells/01.tif") == "my_cells_01"
    assert safe_name("nuclei masks") == "nuclei_masks_image"
    assert safe_name("...") == "image"
