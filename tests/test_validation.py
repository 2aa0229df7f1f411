"""Bad input gets one clear, documented error (issue 23): images, parameters, files.

Each case names what is wrong; the exception is :class:`flowseg.InputError` (a
``ValueError``) or one of its subclasses, never a reader's or PyTorch's own.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import tifffile
import torch

import flowseg
from flowseg.engine.errors import FileReadError, InputError, NotEnoughMemoryError
from flowseg.engine.inference import checks
from flowseg.engine.inference.model import Model
from flowseg.engine.io.images import read_image, write_labels
from flowseg.engine.io.segfile import UnsafeFileError, read_seg


@pytest.fixture(scope="module")
def model():
    return Model.new(width=4, nchan=2, diam_mean=17.0, seed=0)


RNG = np.random.default_rng(0)
GOOD = RNG.random((32, 32)).astype(np.float32)

#: (name, image, keyword arguments, words the message must hold)
BAD_IMAGES = [
    ("object dtype", np.array([[None, 1]], dtype=object), {}, "numeric"),
    ("text dtype", np.array([["a", "b"]]), {}, "numeric"),
    ("complex", np.ones((8, 8), complex), {}, "real-valued"),
    ("ragged list", [[1, 2], [3]], {}, "not an array"),
    ("0-d", np.array(3.0), {}, "at least 2 axes"),
    ("1-d", np.zeros(10), {}, "at least 2 axes"),
    ("5-d", np.zeros((2, 2, 2, 8, 8)), {}, "5 axes"),
    ("empty", np.zeros((0, 10)), {}, "empty"),
    ("NaN", np.where(np.eye(32, dtype=bool), np.nan, GOOD), {}, "32 NaN"),
    ("Inf", np.where(np.eye(32, dtype=bool), -np.inf, GOOD), {}, "32 infinite"),
    ("NaN and Inf", np.r_[np.nan, np.inf, np.inf, GOOD.ravel()[3:]].reshape(32, 32), {},
     "1 NaN and 2 infinite"),
    ("beyond float32", GOOD.astype(np.float64) * 1e300, {}, "float32 range"),
    ("channel index", np.stack([GOOD, GOOD], -1), {"channels": (0, 7)}, "channel 7"),
    ("negative channel", np.stack([GOOD, GOOD], -1), {"channels": (-1, None)}, "channel -1"),
    ("channels not a pair", GOOD, {"channels": (0,)}, "(cyto, nucleus)"),
    ("many channels, none chosen", RNG.random((6, 32, 32)), {"channel_axis": 0}, "6 channels"),
    ("channel axis out of range", GOOD, {"channel_axis": 5}, "channel_axis=5"),
    ("z axis = channel axis", RNG.random((4, 3, 32, 32)), {"channel_axis": 1, "z_axis": 1},
     "different axes"),
    ("3D settings on 2D", GOOD, {"do_3d": True}, "needs a volume"),
    ("diameter <= 0", GOOD, {"diameter": -5}, "finite number > 0"),
    ("diameter NaN", GOOD, {"diameter": float("nan")}, "finite number > 0"),
    ("diameter Inf", GOOD, {"diameter": float("inf")}, "finite number > 0"),
    ("diameter text", GOOD, {"diameter": "big"}, "number"),
    ("diameter > image", GOOD, {"diameter": 1e9}, "larger than the image"),
    ("diameter tiny", GOOD, {"diameter": 1e-3}, "would resize"),
    ("cellprob NaN", GOOD, {"cellprob_threshold": float("nan")}, "cellprob_threshold"),
    ("flow threshold < 0", GOOD, {"flow_threshold": -1}, "flow_threshold"),
    ("min size", GOOD, {"min_size": -7}, "min_size"),
    ("niter 0", GOOD, {"niter": 0}, "niter"),
    ("stitch > 1", RNG.random((3, 32, 32)), {"stitch_threshold": 2.0}, "stitch_threshold"),
    ("anisotropy 0", RNG.random((5, 32, 32)), {"do_3d": True, "z_axis": 0, "anisotropy": 0},
     "anisotropy"),
    ("batch size 0", GOOD, {"batch_size": 0}, "batch_size"),
]


@pytest.mark.parametrize("name,image,kw,words", BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_bad_images_and_parameters_get_one_clear_error(model, name, image, kw, words):
    with pytest.raises(InputError, match=None) as info:
        model.segment(image, **kw)
    assert words in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)  # old ``except ValueError`` keeps working


def test_no_cell_images_give_empty_results_and_say_why(model):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1] = (GOOD * 255).astype(np.uint8)  # red (the cytoplasm here) is empty
    for image, kw, why in ((np.zeros((32, 32)), {}, "the image is all 0"),
                           (np.ones((1, 1)), {}, "1 x 1 pixels"),
                           (rgba, {"channels": (0, None)}, "cytoplasm channel (red) is all 0")):
        seg = model.segment(image, **kw)
        assert seg.masks.max() == 0 and seg.masks.shape == image.shape[:2]
        info = checks.check_image(image, **kw)
        assert why in info.nothing_to_segment(("red", "green", "blue", "alpha"))
        with pytest.raises(InputError, match="cannot estimate the cell diameter"):
            model.estimate_diameter(image, **kw)
    assert checks.check_image(GOOD).nothing_to_segment() == ""


def test_memory_check_before_any_work(model, monkeypatch):
    from flowseg.engine import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 2 ** 20)
    with pytest.raises(NotEnoughMemoryError, match="block by block"):
        model.segment(GOOD)
    assert model.segment(GOOD, check_memory=False).masks.shape == GOOD.shape


def _bad_files(tmp_path):
    """(name, path) of files no reader can use."""
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, (GOOD * 1000).astype(np.uint16))
    raw = good.read_bytes()
    files = {
        "text named .png": ("t.png", b"hello, this is not an image\n"),
        "empty .tif": ("e.tif", b""),
        "truncated TIFF": ("tr.tif", raw[: len(raw) // 2]),
        "TIFF header only": ("h.tif", raw[:16]),
        "random bytes .jpg": ("r.jpg", bytes(RNG.integers(0, 256, 300, dtype=np.uint8))),
        "PNG header, no data": ("p.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20),
        "zip named .tif": ("z.tif", b"PK\x03\x04" + b"\0" * 40),
        "npy with a pickle": ("o.npy", None),
        "truncated npy": ("tn.npy", None),
    }
    out = []
    for name, (fname, data) in files.items():
        p = tmp_path / fname
        if fname == "o.npy":
            np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        elif fname == "tn.npy":
            np.save(p, GOOD)
            p.write_bytes(p.read_bytes()[:200])
        else:
            p.write_bytes(data)
        out.append((name, p))
    return out


def test_unreadable_image_files_name_the_file(tmp_path):
    for name, p in _bad_files(tmp_path):
        with pytest.raises(FileReadError) as info:
            read_image(p)
        msg = str(info.value)
        assert str(p) in msg and "\n" not in msg and len(msg) < 300, (name, msg)
    assert "looks like a text file" in str(pytest.raises(FileReadError, read_image,
                                                         tmp_path / "t.png").value)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.tif")


def test_bogus_model_files_give_a_short_message(tmp_path):
    class Payload:  # would create a file if it ran
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "w"))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    torch.save({"a": torch.zeros(3)}, tmp_path / "other.pt")
    bad_meta = Model.new(width=4, seed=0)
    bad_meta.meta["diam_mean"] = -3.0
    sd = {"format": "flowseg-model", "format_version": 1, "meta": {"nbase": [2, 4096, 8192],
          "diam_mean": 30.0}, "state_dict": dict(bad_meta.net.state_dict())}
    torch.save(sd, tmp_path / "nbase.pt")
    good = bad_meta.save(tmp_path / "good.pt")
    raw = good.read_bytes()
    files = {"random.pt": bytes(RNG.integers(0, 256, 500, dtype=np.uint8)),
             "text.pt": b"not a model\n", "empty.pt": b"", "trunc.pt": raw[: len(raw) // 2]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name in [*files, "evil.pt", "other.pt", "nbase.pt", "good.pt"]:
        with pytest.raises(flowseg.ModelFileError) as info:
            Model.load(tmp_path / name)
        msg = str(info.value)
        assert name in msg and len(msg) < 300 and "weights_only" not in msg, msg
    assert not (tmp_path / "ran").exists()
    assert "could run code" in str(pytest.raises(flowseg.ModelFileError, Model.load,
                                                 tmp_path / "evil.pt").value)
    assert "diam_mean" in str(pytest.raises(flowseg.ModelFileError, Model.load, good).value)


def test_hostile_seg_npy_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    p = tmp_path / "x_seg.npy"
    with open(p, "wb") as fh:
        np.lib.format.write_array(fh, np.array({"masks": Payload()}, dtype=object),
                                  allow_pickle=True)
    with pytest.raises(UnsafeFileError):
        read_seg(p)
    assert not (tmp_path / "ran").exists()
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(FileReadError):
        read_seg(p)
    (tmp_path / "y_seg.npy").write_bytes(pickle.dumps({"masks": 1}))
    with pytest.raises(FileReadError, match="not a .npy file"):
        read_seg(tmp_path / "y_seg.npy")


def test_labels_are_written_atomically(tmp_path, monkeypatch):
    m = (RNG.random((20, 20)) * 5).astype(np.int32)
    out = write_labels(tmp_path / "a_masks", m, "tif")
    assert np.array_equal(tifffile.imread(out), m)
    with pytest.raises(InputError, match="2D label images"):
        write_labels(tmp_path / "b_masks", np.zeros((2, 4, 4), int), "png")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(tifffile, "imwrite", crash)
    with pytest.raises(KeyboardInterrupt):
        write_labels(out, m + 1, "tif")
    monkeypatch.undo()
    assert np.array_equal(tifffile.imread(out), m)  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_masks.tif"]  # no temporary left


def test_errors_are_exported():
    for name in ("InputError", "FileReadError", "ModelFileError", "UnsafeFileError",
                 "NotEnoughMemoryError"):
        exc = getattr(flowseg, name)
        assert issubclass(exc, flowseg.InputError) and issubclass(exc, ValueError)


def test_train_checks_its_images(tmp_path):
    from flowseg.engine.data.synthetic import make_sample

    s = make_sample("nuclei", (48, 48), diameter=12, seed=0)
    img, lab = s.image[..., 0].astype(np.float32), s.labels
    nan = img.copy()
    nan[:3, :3] = np.nan
    cases = ((nan, "training image #1 (b.tif): image contains 9 NaN"),
             (np.zeros_like(img), "training image #1 (b.tif): the image is all 0"),
             (np.stack([img] * 6, -1), "training image #1 (b.tif): cannot tell which axis"))
    for bad, words in cases:
        with pytest.raises(InputError) as info:
            flowseg.train(None, [img, bad], [lab, lab], names=["a.tif", "b.tif"], epochs=1,
                          width=4, save_path=tmp_path / "m.pt")
        assert words in str(info.value)
    assert not (tmp_path / "m.pt").exists()
