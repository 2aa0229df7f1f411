"""Voxel sizes read from ImageJ / OME-TIFF and OME-Zarr files, and the CLI using them."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile

from flowseg.cli import main
from flowseg.engine.io.voxel import anisotropy_from_voxel, format_voxel, read_voxel_size

VOL = np.zeros((5, 16, 16), np.uint8)


def _approx(voxel, expected):
    assert voxel is not None
    assert voxel == pytest.approx(expected, rel=1e-6)


def _imagej(path, data=VOL, resolution=(2.0, 2.0), **meta):
    meta = {"spacing": 2.0, "unit": "um", "axes": "ZYX"[-data.ndim:], **meta}
    meta = {k: v for k, v in meta.items() if v is not None}
    tifffile.imwrite(path, data, imagej=True, resolution=resolution, metadata=meta)
    return path


# ------------------------------------------------------------------ ImageJ TIFF
def test_imagej_hyperstack(tmp_path):
    v = read_voxel_size(_imagej(tmp_path / "a.tif"))
    _approx(v, (2.0, 0.5, 0.5))
    assert anisotropy_from_voxel(v) == pytest.approx(4.0)
    assert format_voxel(v) == "z 2 um, xy 0.5 um"
    # other length units are converted to micrometres; ImageJ's escaped micro sign too
    _approx(read_voxel_size(_imagej(tmp_path / "nm.tif", resolution=(1 / 250, 1 / 250),
                                    spacing=1000.0, unit="nm")), (1.0, 0.25, 0.25))
    _approx(read_voxel_size(_imagej(tmp_path / "mu.tif", unit="\\u00B5m")), (2.0, 0.5, 0.5))
    _approx(read_voxel_size(_imagej(tmp_path / "micron.tif", unit="micron")),
            (2.0, 0.5, 0.5))


@pytest.mark.parametrize("case", [
    {"resolution": None},  # no resolution tags: the TIFF default 1 / 1
    {"resolution": (1.0, 1.0)},
    {"resolution": (72.0, 72.0), "unit": "inch"},
    {"spacing": None},  # no z step
    {"unit": None},  # no unit: sizes in nothing known
    {"unit": "pixel"},
    {"unit": "furlong"},
    {"spacing": 0.0},
    {"spacing": -2.0},
])
def test_imagej_without_a_reliable_size_is_unknown(tmp_path, case):
    case = dict(case)
    resolution = case.pop("resolution", (2.0, 2.0))
    path = tmp_path / "a.tif"
    if resolution is None:
        tifffile.imwrite(path, VOL, imagej=True, metadata={"spacing": 2.0, "unit": "um",
                                                           "axes": "ZYX", **case})
    else:
        _imagej(path, resolution=resolution, **case)
    assert read_voxel_size(path) is None


def test_2d_and_plain_files_are_unknown(tmp_path):
    assert read_voxel_size(_imagej(tmp_path / "2d.tif", data=VOL[0])) is None
    one = _imagej(tmp_path / "one.tif", data=VOL[:1])  # one slice: no z step
    assert read_voxel_size(one) is None
    tifffile.imwrite(tmp_path / "plain.tif", VOL)
    assert read_voxel_size(tmp_path / "plain.tif") is None
    tifffile.imwrite(tmp_path / "res.tif", VOL, resolution=(3.0, 3.0, "CENTIMETER"))
    assert read_voxel_size(tmp_path / "res.tif") is None  # xy only, no z step
    np.save(tmp_path / "v.npy", VOL)
    assert read_voxel_size(tmp_path / "v.npy") is None
    assert read_voxel_size(tmp_path / "missing.tif") is None


# ------------------------------------------------------------------ OME-TIFF
def _ome(path, **meta):
    tifffile.imwrite(path, VOL, ome=True, metadata={"axes": "ZYX", **meta})
    return path


def test_ome_tiff_with_units(tmp_path):
    v = read_voxel_size(_ome(tmp_path / "a.ome.tif", PhysicalSizeX=0.25, PhysicalSizeY=0.25,
                             PhysicalSizeZ=1.0))
    _approx(v, (1.0, 0.25, 0.25))  # no unit: the OME default, µm
    v = read_voxel_size(_ome(tmp_path / "b.ome.tif", PhysicalSizeX=0.2, PhysicalSizeY=0.2,
                             PhysicalSizeZ=1500, PhysicalSizeZUnit="nm",
                             PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm"))
    _approx(v, (1.5, 0.2, 0.2))
    assert anisotropy_from_voxel(v) == pytest.approx(7.5)
    v = read_voxel_size(_ome(tmp_path / "c.ome.tif", PhysicalSizeX=200, PhysicalSizeY=200,
                             PhysicalSizeZ=0.001, PhysicalSizeXUnit="nm",
                             PhysicalSizeYUnit="nm", PhysicalSizeZUnit="mm"))
    _approx(v, (1.0, 0.2, 0.2))


def test_ome_tiff_without_a_reliable_size_is_unknown(tmp_path):
    no_z = _ome(tmp_path / "a.ome.tif", PhysicalSizeX=0.25, PhysicalSizeY=0.25)
    assert read_voxel_size(no_z) is None
    pixel = _ome(tmp_path / "b.ome.tif", PhysicalSizeX=1, PhysicalSizeY=1, PhysicalSizeZ=3,
                 PhysicalSizeZUnit="pixel")
    assert read_voxel_size(pixel) is None
    tifffile.imwrite(tmp_path / "2d.ome.tif", VOL[0], ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.3, "PhysicalSizeY": 0.3})
    assert read_voxel_size(tmp_path / "2d.ome.tif") is None


# ------------------------------------------------------------------ OME-Zarr
def _ngff(path, scale=(2.0, 0.5, 0.5), units=("micrometer",) * 3, names="zyx",
          shape=(5, 16, 16), outer=None, version="0.4"):
    zarr = pytest.importorskip("zarr")
    fmt = 2 if version == "0.4" else 3
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
    group.create_array("0", shape=shape, dtype="u2")
    axes = [{"name": n, "type": "space"} | ({"unit": u} if u else {})
            for n, u in zip(names, units)]
    ms = {"version": version, "axes": axes,
          "datasets": [{"path": "0", "coordinateTransformations":
                        [{"type": "scale", "scale": list(scale)}]}]}
    if outer is not None:
        ms["coordinateTransformations"] = [{"type": "scale", "scale": list(outer)}]
    if version == "0.4":
        group.attrs["multiscales"] = [ms]
    else:
        group.attrs["ome"] = {"version": version, "multiscales": [ms]}
    return path


def test_ome_zarr(tmp_path):
    v = read_voxel_size(_ngff(tmp_path / "a.zarr"))
    _approx(v, (2.0, 0.5, 0.5))
    _approx(read_voxel_size(_ngff(tmp_path / "b.zarr", scale=(1, 1, 1), outer=(3.0, 0.3, 0.3))),
            (3.0, 0.3, 0.3))
    czyx = _ngff(tmp_path / "c.zarr", scale=(1, 2.0, 250, 250), names="czyx",
                 units=(None, "micrometer", "nanometer", "nanometer"), shape=(2, 5, 16, 16))
    _approx(read_voxel_size(czyx), (2.0, 0.25, 0.25))
    _approx(read_voxel_size(_ngff(tmp_path / "d.zarr", version="0.5")), (2.0, 0.5, 0.5))


@pytest.mark.parametrize("kw", [
    {"units": (None, None, None)},  # no units
    {"names": "tyx"},  # no z axis
    {"shape": (1, 16, 16)},  # one plane
    {"scale": (0.0, 0.5, 0.5)},
    {"scale": (2.0, 0.5)},  # fewer values than axes
])
def test_ome_zarr_without_a_reliable_size_is_unknown(tmp_path, kw):
    assert read_voxel_size(_ngff(tmp_path / "a.zarr", **kw)) is None


# ------------------------------------------------------------------ damaged metadata
def test_damaged_metadata_gives_none(tmp_path):
    desc = "ImageJ=1.11a\nimages=5\nslices=5\nspacing=abc\nunit=um\n"
    tifffile.imwrite(tmp_path / "ij.tif", VOL, description=desc, resolution=(2.0, 2.0),
                     metadata=None)
    assert read_voxel_size(tmp_path / "ij.tif") is None
    ome = _ome(tmp_path / "ome.tif", PhysicalSizeX=0.3, PhysicalSizeY=0.3, PhysicalSizeZ="abc")
    assert read_voxel_size(ome) is None
    (tmp_path / "junk.tif").write_bytes(b"II*\x00" + b"\xff" * 40)
    assert read_voxel_size(tmp_path / "junk.tif") is None
    bad = tmp_path / "bad.zarr"
    bad.mkdir()
    (bad / ".zgroup").write_text('{"zarr_format": 2}')
    (bad / ".zattrs").write_text(json.dumps({"multiscales": [{"axes": "zyx",
                                                              "datasets": "0"}]}))
    assert read_voxel_size(bad) is None
    (bad / ".zattrs").write_text("{not json")
    assert read_voxel_size(bad) is None
    scale = _ngff(tmp_path / "s.zarr", scale=("a", "b", "c"))
    assert read_voxel_size(scale) is None


def test_reader_errors_give_none(tmp_path, monkeypatch):
    """Whatever a reader raises on odd metadata, the answer is None, never an exception."""
    path = _imagej(tmp_path / "a.tif")

    def broken(*args, **kwargs):
        raise RuntimeError("odd metadata")

    monkeypatch.setattr(tifffile, "TiffFile", broken)
    assert read_voxel_size(path) is None


def test_anisotropy_from_voxel():
    assert anisotropy_from_voxel(None) is None
    assert anisotropy_from_voxel((2.0, 0.5, 0.5)) == pytest.approx(4.0)
    assert anisotropy_from_voxel((2.0, 0.4, 0.6)) == pytest.approx(4.0)  # mean of y and x
    assert "xy mean 0.5 um" in format_voxel((2.0, 0.4, 0.6))
    for bad in ((0.0, 1, 1), (-1.0, 1, 1), (math.nan, 1, 1), (1.0, math.inf, 1),
                (1000.0, 1, 1), (1.0, 1000, 1000), ("x", 1, 1)):
        assert anisotropy_from_voxel(bad) is None


# ------------------------------------------------------------------ command line
@pytest.fixture()
def fake_segment(monkeypatch):
    """``Model.segment`` replaced by a recorder: the CLI runs without a network pass."""
    from flowseg.engine.inference.model import Model

    calls: list[dict] = []

    def segment(self, image, **kw):
        calls.append(kw)
        params = {"diameter_source": "given", "do_3d": bool(kw.get("do_3d")),
                  "anisotropy": kw.get("anisotropy")}
        return SimpleNamespace(masks=np.zeros(np.shape(image), np.int32), n_objects=0,
                               diameter=30.0, params=params)

    monkeypatch.setattr(Model, "segment", segment)
    return calls


@pytest.fixture()
def model_file(tmp_path):
    from flowseg.engine.inference.model import Model

    return str(Model.new(width=4, seed=0).save(tmp_path / "tiny.pt"))


def test_cli_3d_uses_the_files_anisotropy(tmp_path, model_file, fake_segment, capsys):
    img = _imagej(tmp_path / "stack.tif", resolution=(1 / 0.31, 1 / 0.31), spacing=1.0)
    base = ["segment", str(img), "--model", model_file, "--diameter", "30", "--no-progress"]
    assert main(base + ["--3d"]) == 0
    assert fake_segment[-1]["anisotropy"] == pytest.approx(1 / 0.31)
    out = capsys.readouterr()
    assert ("stack.tif: anisotropy 3.23 from the file's voxel size (z 1 um, xy 0.31 um)"
            in out.err)
    assert "anisotropy 3.23) ->" in out.out  # the result line records it
    assert main(base + ["--3d", "--anisotropy", "1.5"]) == 0  # the option wins
    assert fake_segment[-1]["anisotropy"] == 1.5
    assert "from the file" not in capsys.readouterr().err
    assert main(base) == 0  # no --3d: anisotropy does not matter, nothing said
    assert fake_segment[-1]["anisotropy"] is None
    assert "anisotropy" not in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "plain.tif", VOL)
    assert main(["segment", str(tmp_path / "plain.tif"), "--model", model_file,
                 "--diameter", "30", "--no-progress", "--3d"]) == 0
    assert fake_segment[-1]["anisotropy"] is None
    assert "plain.tif: the file states no voxel size; anisotropy 1" in capsys.readouterr().err


def test_cli_track_3d_frames_use_the_files_anisotropy(tmp_path, model_file, monkeypatch,
                                                      capsys):
    from flowseg.engine.tracking import driver

    seen: dict = {}

    def track(model, image, **kw):
        seen.update(kw)
        labels = np.zeros(image.shape, np.int32)
        return SimpleNamespace(labels=labels, n_tracks=0, n_divisions=0, info={
            "segment_diameter": 30.0, "diameter_source": "given", "segment_seconds": 0.0,
            "link_seconds": 0.0})

    monkeypatch.setattr(driver, "track", track)
    img = _imagej(tmp_path / "movie.tif", data=np.zeros((2, 5, 16, 16), np.uint8),
                  axes="TZYX")
    rc = main(["track", str(img), "--model", model_file, "--3d", "--diameter", "30",
               "--out", str(tmp_path / "t.tif"), "--no-progress"])
    assert rc == 0
    assert seen["anisotropy"] == pytest.approx(4.0)
    assert "movie.tif: anisotropy 4 from the file's voxel size" in capsys.readouterr().err


def test_cli_blockwise_ome_zarr_uses_the_files_anisotropy(tmp_path, model_file, monkeypatch,
                                                          capsys):
    pytest.importorskip("zarr")
    from flowseg.engine import blocks

    seen: dict = {}

    def segment_blocks(data, model, **kw):
        seen.update(kw)
        plan = SimpleNamespace(n_blocks=1, block_size=(5, 16, 16))
        return SimpleNamespace(path=str(data), label_name="flowseg", n_objects=0, plan=plan,
                               n_skipped=0, n_merged=0, diameter=30.0, diameter_source="given",
                               seconds={"total": 0.0}, peak_rss_mb=0.0)

    monkeypatch.setattr(blocks, "segment_blocks", segment_blocks)
    vol = _ngff(tmp_path / "vol.zarr", scale=(3.0, 1.0, 1.0))
    assert main(["segment", str(vol), "--model", model_file, "--3d", "--diameter", "30",
                 "--no-progress"]) == 0
    assert seen["anisotropy"] == pytest.approx(3.0)
    assert "vol.zarr: anisotropy 3 from the file's voxel size" in capsys.readouterr().err
