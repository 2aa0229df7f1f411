"""The memory estimate before an in-memory run: its formula, its calibration against a
real peak, and the CLI stopping (with advice) when an image would not fit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowseg.engine import memory
from flowseg.engine.inference.model import Model
from flowseg.engine.memory import MemoryEstimate, estimate_segment_memory, format_bytes

GB = 2 ** 30


@pytest.fixture(scope="module")
def nuclei():
    return Model.load("nuclei")


def test_estimate_grows_with_the_image_and_the_resize(nuclei):
    small = estimate_segment_memory(nuclei, (1024, 1024), available=8 * GB)
    big = estimate_segment_memory(nuclei, (4096, 4096), available=8 * GB)
    assert small.image_pixels == small.model_pixels == 1024 ** 2
    assert big.working > small.working and small.fits and small.spatial_ndim == 2
    assert small.diameter_assumed
    # objects half the model's size: the image is resized 2x (4x the pixels)
    half = estimate_segment_memory(nuclei, (1024, 1024), diameter=nuclei.diam_mean / 2)
    assert half.model_pixels == 4 * 1024 ** 2 and half.working > small.working
    assert not half.diameter_assumed
    # channels do not count as pixels, wherever they are
    assert estimate_segment_memory(nuclei, (2, 1024, 1024), channel_axis=0).image_pixels \
        == 1024 ** 2
    assert estimate_segment_memory(nuclei, (1024, 1024, 3)).image_pixels == 1024 ** 2


def test_3d_counts_voxels_at_the_models_scale(nuclei):
    vol = estimate_segment_memory(nuclei, (64, 256, 256), do_3d=True, z_axis=0)
    assert vol.spatial_ndim == 3 and vol.image_pixels == vol.model_pixels == 64 * 256 ** 2
    aniso = estimate_segment_memory(nuclei, (64, 256, 256), do_3d=True, z_axis=0,
                                    anisotropy=2.0)
    assert aniso.model_pixels == 2 * vol.model_pixels and aniso.working > vol.working
    # z last, channels first
    moved = estimate_segment_memory(nuclei, (2, 256, 256, 64), channel_axis=0, z_axis=3,
                                    do_3d=True)
    assert moved.image_pixels == vol.image_pixels
    # a stack slice by slice holds one slab at the model's scale, not the whole stack
    stack = estimate_segment_memory(nuclei, (400, 256, 256), z_axis=0, stitch_threshold=0.5)
    assert stack.model_pixels == 32 * 256 ** 2 and stack.image_pixels == 400 * 256 ** 2


@pytest.mark.parametrize("shape, kw", [((100,), {}), ((256, 256), {"do_3d": True}),
                                       ((2, 3, 4, 5, 6), {})])
def test_shapes_segment_refuses_are_refused(nuclei, shape, kw):
    with pytest.raises(ValueError):
        estimate_segment_memory(nuclei, shape, **kw)


def test_fits_and_message():
    est = MemoryEstimate(working=3 * GB, available=GB, image_pixels=1, model_pixels=1,
                         spatial_ndim=2, diameter_assumed=True)
    assert not est.fits
    assert est.message() == ("segmenting it in memory needs about 3.0 GB (at the model's own "
                             "diameter); 1.0 GB are free now")
    unknown = MemoryEstimate(3 * GB, None, 1, 1, 2)
    assert unknown.fits and "free" not in unknown.message()
    assert format_bytes(1) == "1 MB" and format_bytes(1.5 * GB) == "1.5 GB"


def test_available_memory_takes_the_tighter_of_machine_and_cgroup(monkeypatch):
    assert memory.available_memory() > 0
    monkeypatch.setattr(memory, "_machine_available", lambda: 8 * GB)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 2 * GB)
    assert memory.available_memory() == 2 * GB
    monkeypatch.setattr(memory, "_cgroup_room", lambda: None)
    assert memory.available_memory() == 8 * GB


def _can_measure() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_measure(), reason="needs Linux /proc peak-RSS reset")
def test_estimate_is_close_above_a_measured_peak(tmp_path, nuclei):
    """A fresh process segments a 512 x 512 image: the estimate is within -15 % / +60 % of
    its measured working memory (repeated measurements vary by ~10 %)."""
    from flowseg.engine.data.synthetic import make_sample

    s = make_sample("nuclei", (512, 512), seed=0, noise=1.0, blur=1.0)
    img = (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)
    np.save(tmp_path / "img.npy", img)
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_memory.py"
    case = {"shape": [512, 512], "nchan": 1, "diameter": None, "anisotropy": None,
            "model": "nuclei", "npy": str(tmp_path / "img.npy")}
    out = subprocess.run([sys.executable, str(bench), "--one", json.dumps(case)],
                         capture_output=True, text=True, check=True, timeout=600)
    measured = json.loads(out.stdout.strip().splitlines()[-1])["work_bytes"]
    est = estimate_segment_memory(nuclei, img.shape).working
    assert 0.85 * measured <= est <= 1.6 * measured, (measured, est)


# ----------------------------------------------------------------------------- the CLI
def test_cli_stops_before_an_image_that_does_not_fit(tmp_path, monkeypatch, capsys):
    import tifffile

    from flowseg._cli_blocks import image_shape
    from flowseg.cli import build_parser, main

    img = np.random.default_rng(0).integers(0, 1000, (96, 128), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", img)
    np.save(tmp_path / "b.npy", np.zeros((3, 40, 50), np.float32))
    assert image_shape(tmp_path / "a.tif") == (96, 128)
    assert image_shape(tmp_path / "b.npy") == (3, 40, 50)
    monkeypatch.setattr(memory, "available_memory", lambda: 2 ** 20)  # 1 MB free
    args = ["segment", str(tmp_path / "a.tif"), "--model", "nuclei", "--no-progress",
            "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "a.tif: segmenting it in memory needs about" in err and "1 MB are free" in err
    assert "--block-size 1024" in err and "a_masks.zarr" in err
    assert not (tmp_path / "out").exists()  # stopped before any work
    # --block-size goes blockwise (no in-memory check); --no-memory-check runs anyway
    from flowseg._cli_blocks import blockwise_jobs

    parsed = build_parser().parse_args(args + ["--block-size", "64"])
    assert [j.label for j in blockwise_jobs(parsed)] == [str(tmp_path / "a.tif")]
    assert main(args + ["--no-memory-check"]) == 0
    assert (tmp_path / "out" / "a_masks.tif").is_file()
