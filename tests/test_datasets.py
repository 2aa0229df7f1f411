"""Reading Cellpose-style training folders (image + NAME_masks.* or NAME_seg.npy)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.io.datasets import find_pairs, load_folder, read_labels, split_validation


@pytest.fixture
def folder(tmp_path):
    import imageio.v3 as iio

    from flowseg.engine.io.segfile import write_seg

    for k in range(3):
        s = make_sample("cells", (64, 64), diameter=16, seed=k)
        tifffile.imwrite(tmp_path / f"img{k}.tif", (s.image * 1000).astype(np.uint16))
        if k < 2:
            iio.imwrite(tmp_path / f"img{k}_masks.png", s.labels.astype(np.uint16))
        else:
            write_seg(tmp_path / f"img{k}_seg.npy", s.labels)
    tifffile.imwrite(tmp_path / "lonely.tif", np.zeros((64, 64), np.uint16))  # no labels
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_pairs_masks_and_seg_files(folder):
    pairs = find_pairs(folder)
    assert [(a.name, b.name) for a, b in pairs] == [
        ("img0.tif", "img0_masks.png"), ("img1.tif", "img1_masks.png"),
        ("img2.tif", "img2_seg.npy")]
    data = load_folder(folder)
    assert data.names == ["img0.tif", "img1.tif", "img2.tif"]
    for img, lab in zip(data.images, data.labels):
        assert img.shape == (64, 64, 2) and lab.shape == (64, 64)
        assert lab.max() > 3 and np.issubdtype(lab.dtype, np.integer)
    assert load_folder(folder, max_images=1).names == ["img0.tif"]


def test_other_mask_filter_and_errors(folder, tmp_path_factory):
    (folder / "img0_masks.png").rename(folder / "img0_cp_masks.png")
    found = [a.name for a, _ in find_pairs(folder, mask_filter="_cp_masks")]
    assert found == ["img0.tif", "img2.tif"]  # img2 still has its _seg.npy
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ValueError, match="no training pairs"):
        load_folder(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_pairs(empty / "nope")


def test_shape_mismatch_is_reported(folder):
    import imageio.v3 as iio

    iio.imwrite(folder / "img1_masks.png", np.ones((32, 64), np.uint16))
    with pytest.raises(ValueError, match="img1.tif: image shape"):
        load_folder(folder)


class _Evil:
    """Unpickling this creates a file: proof that code from the file ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_seg_file_is_refused(folder, tmp_path):
    from flowseg.engine.io.segfile import UnsafeFileError

    target = tmp_path / "created_by_pickle.txt"
    np.save(folder / "img2_seg.npy", np.array({"masks": _Evil(str(target))}, dtype=object),
            allow_pickle=True)
    np.load(folder / "img2_seg.npy", allow_pickle=True)  # the payload does run when trusted
    assert target.exists()
    target.unlink()
    with pytest.raises(UnsafeFileError, match="could execute code"):
        read_labels(folder / "img2_seg.npy")
    assert not target.exists()


def test_split_validation():
    tr, va = split_validation(10, 0.2, seed=0)
    assert len(va) == 2 and sorted(tr + va) == list(range(10))
    assert split_validation(10, 0.2, seed=0) == (tr, va)
    assert split_validation(2, 0.1)[1] and split_validation(1, 0.5) == ([0], [])
    with pytest.raises(ValueError, match="fraction"):
        split_validation(5, 1.0)
