"""Fuzzing the public entry points with hypothesis (issue 23).

Random arrays of random dtypes and shapes go through ``Model.segment`` (a tiny width-8
model), ``flows_to_masks`` and ``masks_to_flows``; random bytes (and mutated valid files)
become image, label, ``_seg.npy`` and model files.  The property everywhere: a result of
the right shape, or one of our documented exceptions -- never another exception, a hang
(each call runs under a timeout), a crash, or code execution (hostile pickles try to write a
file).

*Ours* means a :class:`flowseg.InputError` (``FileReadError``, ``ModelFileError``,
``UnsafeFileError``, ``NotEnoughMemoryError``) or, for the low-level flow functions, a
``ValueError`` raised by flowseg's own code (not one escaping from numpy or a reader).

The default run is deterministic (``derandomize``) and small (about 30 s in all); the
``slow`` tests explore many more random examples: ``python -m pytest -m slow
tests/test_fuzz.py``.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

import flowseg  # noqa: E402
from flowseg.engine.errors import InputError  # noqa: E402
from flowseg.engine.inference.model import Model  # noqa: E402

PKG = Path(flowseg.__file__).resolve().parent
TIMEOUT = 60.0  # seconds per call: far above any example's time, so only a hang trips it

_COMMON = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture]}
FAST = settings(max_examples=40, derandomize=True, **_COMMON)
LONG = settings(max_examples=400, **_COMMON)


# ----------------------------------------------------------------------------- helpers
class Hang(AssertionError):
    """A call did not return within :data:`TIMEOUT`."""


def run(func, *args, **kwargs):
    """``func(*args, **kwargs)`` in a daemon thread with a timeout; re-raises its error."""
    out: dict = {}

    def target():
        try:
            out["value"] = func(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(TIMEOUT)
    if t.is_alive():
        raise Hang(f"{getattr(func, '__name__', func)} did not return in {TIMEOUT:.0f} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def ours(exc: BaseException, strict: bool = True) -> bool:
    """Whether ``exc`` is one of our documented exceptions (see the module docstring)."""
    if isinstance(exc, InputError):
        return True
    if strict or not isinstance(exc, ValueError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PKG)


def check(func, *args, strict: bool = True, **kwargs):
    """The result of ``func``, or None when it raised one of ours; any other exception
    fails the test with its traceback."""
    try:
        return run(func, *args, **kwargs)
    except Hang:
        raise
    except Exception as exc:  # noqa: BLE001
        if ours(exc, strict):
            assert str(exc) and "\n" not in str(exc).strip()[:200], repr(exc)
            return None
        raise AssertionError(f"not a documented exception: {type(exc).__name__}: {exc}") \
            from exc


@pytest.fixture(scope="module")
def tiny():
    return Model.new(width=8, nchan=2, diam_mean=12.0, seed=0)


# ----------------------------------------------------------------------------- strategies
NUMERIC = st.sampled_from(["uint8", "uint16", "int8", "int16", "int32", "int64", "uint64",
                           "float16", "float32", "float64", "bool"])
ODD = st.sampled_from(["complex64", "U3", "S2", "object", "datetime64[s]"])


def _sometimes(draw, p: int = 4) -> bool:
    """True about once in ``p`` (a power of 2) draws; False is what hypothesis shrinks
    towards (an integer draw would favour its bounds)."""
    return all(draw(st.booleans()) for _ in range(max(1, p.bit_length() - 1)))


def _shapes(min_dims=0, max_dims=5, max_side=24):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                            max_side=max_side)


@st.composite
def images(draw, max_side=24):
    """Random arrays: mostly numeric (with NaN / Inf / extremes), sometimes odd dtypes,
    sometimes the kind of image a user has (2D, a channel axis of 1-5, a short stack)."""
    kind = draw(st.sampled_from(["image", "image", "any", "image", "odd"]))
    if kind == "odd":
        dtype = draw(ODD)
        shape = draw(_shapes(max_dims=3, max_side=6))
        return np.zeros(shape, dtype=dtype)
    dtype = np.dtype(draw(NUMERIC))
    if kind == "image":
        yx = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
        extra = draw(st.sampled_from([(), (1,), (2,), (3,), (4,), (5,)]))
        first = draw(st.booleans())
        shape = (*extra, *yx) if first else (*yx, *extra)
        if draw(st.booleans()):
            shape = (draw(st.integers(1, 4)), *shape)
    else:
        shape = draw(_shapes(max_side=max_side))
    if int(np.prod(shape)) > 20000:
        shape = tuple(min(s, 8) for s in shape)
    elements = None
    if dtype.kind == "f":  # mostly ordinary values, sometimes anything (NaN, Inf, 1e308)
        width = dtype.itemsize * 8
        elements = st.floats(width=width) if _sometimes(draw) else \
            st.floats(-1e4, 1e4, width=width)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def segment_options(draw):
    opt: dict = {}
    if _sometimes(draw, 2):
        opt["channels"] = draw(st.one_of(
            st.none(), st.tuples(st.integers(-1, 5), st.one_of(st.none(), st.integers(-1, 5))),
            st.just((0,)), st.just("ab")))
    for axis in ("channel_axis", "z_axis"):
        if _sometimes(draw):
            opt[axis] = draw(st.one_of(st.none(), st.integers(-6, 6)))
    if draw(st.booleans()):  # plausible sizes (bounded work: the model's is 12) or absurd
        opt["diameter"] = draw(st.one_of(
            st.none(), st.floats(6.0, 60.0), st.integers(6, 100),
            st.floats(max_value=1.0), st.floats(min_value=1e3),
            st.sampled_from([float("nan"), float("inf"), -float("inf"), "30", True]),
            st.integers(-5, 0)))
    if _sometimes(draw):
        opt["do_3d"] = True
    if _sometimes(draw):
        opt["stitch_threshold"] = draw(st.one_of(st.floats(0.0, 1.0), st.floats(-1.0, 2.0)))
    if _sometimes(draw):
        opt["cellprob_threshold"] = draw(st.one_of(st.floats(-6, 6), st.floats()))
    if _sometimes(draw):
        opt["flow_threshold"] = draw(st.one_of(st.floats(0.0, 3.0), st.floats(-1.0, 5.0)))
    if _sometimes(draw):
        opt["min_size"] = draw(st.integers(-3, 50))
    if _sometimes(draw, 8):
        opt["anisotropy"] = draw(st.one_of(st.floats(0.5, 4.0), st.floats(-1.0, 4.0)))
    return opt


def _segment_property(model, image, opt):
    seg = check(model.segment, image, **opt)
    hypothesis.event("segmented" if seg is not None else "refused")
    if seg is None:
        return
    from flowseg.engine.inference.checks import check_image

    info = check_image(image, channels=opt.get("channels"),
                       channel_axis=opt.get("channel_axis"), z_axis=opt.get("z_axis"),
                       do_3d=bool(opt.get("do_3d")),
                       stitch_threshold=float(opt.get("stitch_threshold") or 0.0))
    assert seg.masks.shape == info.spatial_shape
    assert seg.masks.dtype.kind == "i" and seg.masks.min(initial=0) >= 0
    assert seg.cellprob.shape == info.spatial_shape
    assert np.isfinite(seg.flows).all() and np.isfinite(seg.cellprob).all()


# ----------------------------------------------------------------------------- arrays
@settings(FAST, max_examples=80)
@given(image=images(), opt=segment_options())
def test_segment_random_arrays(tiny, image, opt):
    _segment_property(tiny, image, opt)


@pytest.mark.slow
@LONG
@given(image=images(max_side=64), opt=segment_options())
def test_segment_random_arrays_long(tiny, image, opt):
    _segment_property(tiny, image, opt)


@st.composite
def flow_fields(draw, max_side=24):
    ndim = draw(st.sampled_from([2, 3]))
    side = st.integers(0, max_side if ndim == 2 else 10)
    shape = tuple(draw(side) for _ in range(ndim))
    fshape = draw(st.sampled_from([(ndim, *shape), (ndim, *shape), (ndim + 1, *shape),
                                   shape]))
    dt = np.dtype(draw(st.sampled_from(["float32", "float64", "float16", "int16"])))
    el = st.floats(-20, 20, width=dt.itemsize * 8) if dt.kind == "f" else None
    flows = draw(hnp.arrays(dt, fshape, elements=el))
    if flows.size and dt.kind == "f" and _sometimes(draw):
        flows.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    cp_shape = draw(st.sampled_from([shape, shape, shape[1:] or (1,)]))
    cellprob = draw(hnp.arrays(np.float32, cp_shape, elements=st.floats(-10, 10, width=32)))
    return flows, cellprob


def _flows_property(flows, cellprob, opt):
    masks = check(flowseg.flows_to_masks, flows, cellprob, strict=False, **opt)
    if masks is not None:
        assert masks.shape == cellprob.shape and masks.min(initial=0) >= 0


@FAST
@given(ff=flow_fields(), opt=st.fixed_dictionaries({}, optional={
    "cellprob_threshold": st.floats(-5, 5), "flow_threshold": st.floats(-1, 3),
    "min_size": st.integers(-2, 30), "niter": st.one_of(st.none(), st.integers(-1, 300))}))
def test_flows_to_masks_random_fields(ff, opt):
    _flows_property(*ff, opt)


@st.composite
def label_images(draw, max_side=24):
    ndim = draw(st.sampled_from([1, 2, 2, 3, 4]))
    shape = tuple(draw(st.integers(0, max_side if ndim < 3 else 8)) for _ in range(ndim))
    dt = np.dtype(draw(st.sampled_from(["int32", "uint16", "int64", "bool", "float32",
                                        "uint8", "int8"])))
    if dt.kind == "f":
        el = st.one_of(st.integers(0, 6).map(float), st.floats(allow_nan=True))
    elif dt.kind == "b":
        el = None
    else:
        lo = -3 if dt.kind == "i" else 0
        el = st.integers(lo, 6)
    return draw(hnp.arrays(dt, shape, elements=el))


@FAST
@given(labels=label_images())
def test_masks_to_flows_random_labels(labels):
    flows = check(flowseg.masks_to_flows, labels, strict=False)
    if flows is not None:
        assert flows.shape == (labels.ndim, *labels.shape)
        assert np.isfinite(flows).all()


@pytest.mark.slow
@LONG
@given(ff=flow_fields(max_side=64), labels=label_images(max_side=48))
def test_flow_functions_long(ff, labels):
    _flows_property(*ff, {})
    check(flowseg.masks_to_flows, labels, strict=False)


# ----------------------------------------------------------------------------- files
SUFFIXES = [".tif", ".tiff", ".png", ".jpg", ".npy", ".bmp", ".gif"]


def _valid_files() -> dict[str, bytes]:
    """Small valid files of each kind, to be cut and bit-flipped."""
    img = (np.arange(48 * 40).reshape(48, 40) % 251).astype(np.uint8)
    out = {}
    for suf in (".tif", ".npy", ".png"):
        buf = io.BytesIO()
        if suf == ".tif":
            tifffile.imwrite(buf, img, compression="zlib")
        elif suf == ".npy":
            np.save(buf, img)
        else:
            import imageio.v3 as iio

            buf.write(iio.imwrite("<bytes>", img, extension=".png"))
        out[suf] = buf.getvalue()
    return out


VALID = _valid_files()


@st.composite
def file_bytes(draw, valid: dict[str, bytes]):
    """``(suffix, content)``: random bytes, or a valid file cut short or bit-flipped."""
    how = draw(st.sampled_from(["random", "cut", "flip", "header"]))
    suffix = draw(st.sampled_from(sorted(valid)))
    base = valid[suffix]
    if how == "random":
        return draw(st.sampled_from(SUFFIXES)), draw(st.binary(max_size=600))
    if how == "cut":
        return suffix, base[: draw(st.integers(0, len(base) - 1))]
    if how == "header":
        return suffix, base[:16] + draw(st.binary(max_size=300))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return suffix, bytes(data)


def _write(tmp_path, name, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@FAST
@given(f=file_bytes(VALID))
def test_image_reader_random_bytes(tmp_path, f):
    from flowseg.engine.io.images import read_image

    suffix, data = f
    p = _write(tmp_path, f"img{suffix}", data)
    arr = check(read_image, p)
    if arr is not None:
        assert isinstance(arr, np.ndarray) and arr.dtype != object and arr.size > 0


@FAST
@given(f=file_bytes(VALID))
def test_label_readers_random_bytes(tmp_path, f):
    from flowseg._reader import napari_get_reader
    from flowseg.engine.io.datasets import read_labels

    suffix, data = f
    p = _write(tmp_path, f"img_masks{suffix}", data)
    lab = check(read_labels, p)
    if lab is not None:
        assert isinstance(lab, np.ndarray)
    reader = napari_get_reader(str(p))  # napari's reader of *_masks files
    if reader is not None:
        layers = check(reader, str(p))
        assert layers is None or [kind for _, _, kind in layers] == ["labels"]


@FAST
@given(labels=label_images(), fmt=st.sampled_from(["tif", "png", "npy"]))
def test_label_writer_round_trip(tmp_path, labels, fmt):
    from flowseg.engine.io.images import read_image, write_labels

    out = check(write_labels, tmp_path / "w_masks", labels, fmt)
    if out is not None:
        back = read_image(out)
        assert np.array_equal(back, labels.astype(back.dtype))
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]  # no temp left


# ----------------------------------------------------------------------------- _seg.npy
class _Payload:
    """A pickled object whose unpickling would create ``path`` (code execution)."""

    def __init__(self, func, path):
        self.func, self.path = func, str(path)

    def __reduce__(self):
        if self.func == "open":
            return (open, (self.path, "w"))
        if self.func == "system":
            return (os.system, ("touch " + self.path,))
        if self.func == "exec":
            return (exec, (f"open({self.path!r}, 'w')",))
        return (Path.touch, (Path(self.path),))


def _seg_bytes(obj) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(obj, dtype=object), allow_pickle=True)
    return buf.getvalue()


def _valid_seg() -> bytes:
    masks = np.zeros((16, 16), np.uint16)
    masks[2:8, 3:9] = 1
    return _seg_bytes({"masks": masks, "outlines": masks, "diameter": 12.0,
                       "chan_choose": [0, 0], "filename": "x.tif",
                       "flows": [np.zeros((1, 16, 16, 3), np.uint8), masks.astype(np.uint8)]})


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
              hnp.arrays(st.sampled_from([np.uint8, np.int32, np.float32, np.int64]),
                         _shapes(max_dims=3, max_side=6))),
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.sampled_from(["masks", "outlines", "flows",
                                                            "diameter", "img", "x"]), kids,
                                           max_size=4)),
    max_leaves=10)


@st.composite
def seg_files(draw, tmp_path):
    how = draw(st.sampled_from(["bytes", "structure", "payload"]))
    if how == "bytes":
        return draw(file_bytes({".npy": _valid_seg()}))[1]
    if how == "structure":
        return _seg_bytes(draw(JSONISH))
    func = draw(st.sampled_from(["open", "system", "exec", "touch"]))
    where = draw(st.sampled_from(["top", "in masks", "in a list"]))
    payload = _Payload(func, tmp_path / "ran")
    obj = {"top": payload, "in masks": {"masks": payload},
           "in a list": {"masks": np.zeros((4, 4), np.int32), "flows": [1, payload]}}[where]
    return _seg_bytes(obj)


def _fuzz_seg_files(tmp: Path, profile: settings) -> None:
    from flowseg._reader import read_seg_layers
    from flowseg.engine.io.segfile import read_seg

    @profile
    @given(data=st.data())
    def inner(data):
        content = data.draw(seg_files(tmp))
        p = _write(tmp, "x_seg.npy", content)
        dat = check(read_seg, p)
        if dat is not None:
            assert dat["masks"].ndim in (2, 3) and dat["masks"].dtype.kind in "iub"
            layers = check(read_seg_layers, str(p), strict=False)
            assert layers is None or layers[0][2] in ("image", "labels")
        assert not (tmp / "ran").exists(), "a pickle ran code"

    inner()


def test_seg_files_random(tmp_path):
    _fuzz_seg_files(tmp_path, FAST)


@pytest.mark.slow
def test_seg_files_random_long(tmp_path):
    _fuzz_seg_files(tmp_path, LONG)


# ----------------------------------------------------------------------------- model files
def _valid_model(tmp_path) -> bytes:
    return Path(Model.new(width=2, seed=0).save(tmp_path / "v.pt")).read_bytes()


def _fuzz_model_files(tmp: Path, profile: settings) -> None:
    valid = {".pt": _valid_model(tmp)}

    @profile
    @given(f=file_bytes(valid), payload=st.sampled_from([None, "open", "system", "exec"]))
    def inner(f, payload):
        content = f[1]
        if payload is not None:
            buf = io.BytesIO()
            torch.save({"format": "flowseg-model", "format_version": 1,
                        "meta": {"x": _Payload(payload, tmp / "ran")}, "state_dict": {}}, buf)
            content = buf.getvalue()
        p = _write(tmp, "m.pt", content)
        model = check(Model.load, p)
        assert model is None or isinstance(model, Model)
        assert not (tmp / "ran").exists(), "a pickle ran code"

    inner()


def test_model_files_random(tmp_path):
    _fuzz_model_files(tmp_path, FAST)


@pytest.mark.slow
def test_model_files_random_long(tmp_path):
    _fuzz_model_files(tmp_path, LONG)


def test_a_plain_pickle_payload_does_run_when_trusted(tmp_path):
    """The payloads above are real: unpickled without our guards they run."""
    pickle.loads(pickle.dumps(_Payload("open", tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


def test_the_property_can_fail(monkeypatch):
    """What the property rejects: a foreign exception, a ValueError from numpy, a hang."""
    import time

    with pytest.raises(AssertionError, match="not a documented exception: KeyError"):
        check({}.__getitem__, "x")
    with pytest.raises(AssertionError, match="ValueError: zero-size array"):
        check(np.min, np.zeros(0), strict=False)  # numpy's own, not ours
    assert check(flowseg.masks_to_flows, np.zeros(5), strict=False) is None  # ours
    monkeypatch.setattr(sys.modules[__name__], "TIMEOUT", 0.2)
    with pytest.raises(Hang):
        check(time.sleep, 2.0)
