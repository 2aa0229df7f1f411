"""Blockwise segmentation, the parts without a network: plan, merge, inputs, OME-Zarr, store."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("zarr", minversion="3")
pytest.importorskip("distributed")

from flowseg.engine.blocks.cluster import ClusterOptions, parse_memory
from flowseg.engine.blocks.merge import global_luts, keep_core_objects, match_labels
from flowseg.engine.blocks.ome import read_ome
from flowseg.engine.blocks.plan import default_overlap, make_plan
from flowseg.engine.blocks.prepare import (
    blocks_in_mask,
    image_percentiles,
    sample_windows,
)
from flowseg.engine.blocks.quality import face_splits
from flowseg.engine.blocks.source import open_source
from flowseg.engine.blocks.store import create_output
from flowseg.engine.inference.transforms import normalize_percentile, prepare_channels


# ----------------------------------------------------------------------------- plan
@pytest.mark.parametrize("shape,block", [((100, 130), 40), ((30, 50, 45), (16, 20, 20))])
def test_plan_cores_tile_the_image_and_padding_is_clipped(shape, block):
    plan = make_plan(shape, block, diameter=5.0)
    cover = np.zeros(shape, np.int32)
    for b in plan:
        cover[b.core] += 1
        for c, p, o, s in zip(b.core, b.padded, plan.overlap, shape):
            assert p.start == max(0, c.start - o) and p.stop == min(s, c.stop + o)
        assert b.padded_shape == tuple(p.stop - p.start for p in b.padded)
        inner = b.core_in_padded
        assert all(i.stop - i.start == c.stop - c.start for i, c in zip(inner, b.core))
    assert (cover == 1).all()
    assert plan.n_blocks == len(list(plan)) == int(np.prod(plan.grid))


def test_forward_neighbours_visit_every_touching_pair_once():
    plan = make_plan((90, 90), 30, diameter=5.0)  # 3 x 3 grid
    pairs = [(b.index, j) for b in plan for j in plan.forward_neighbours(b.index)]
    assert len(pairs) == len({frozenset(p) for p in pairs})
    # 3x3 grid: 12 face pairs + 8 diagonal pairs
    assert len(pairs) == 20
    assert plan.faces() == [(0, 30), (0, 60), (1, 30), (1, 60)]


def test_overlap_defaults_to_two_diameters_and_z_follows_anisotropy():
    assert default_overlap(10.2, 2) == (21, 21)
    assert default_overlap(10.0, 3, anisotropy=2.0) == (10, 20, 20)
    plan = make_plan((64, 200, 200), (32, 100, 100), diameter=10.0, anisotropy=2.0)
    assert plan.overlap == (10, 20, 20)


@pytest.mark.parametrize("kw,match", [
    ({"block_size": 15}, "smaller than one object diameter"),
    ({"block_size": 100, "overlap": 20}, "under 2 object diameters"),
    ({"block_size": (100, 100, 100)}, "has 3 values"),
    ({"block_size": 100.5}, "whole numbers"),
])
def test_plan_rejects_bad_geometry(kw, match):
    with pytest.raises(ValueError, match=match):
        make_plan((500, 500), diameter=20.0, **kw)


# ----------------------------------------------------------------------------- merge
def test_keep_core_objects_drops_objects_outside_the_core():
    m = np.zeros((10, 10), np.int32)
    m[0:2, 0:2] = 7  # only in the margin
    m[4:6, 4:6] = 3  # inside the core
    m[1:5, 8:10] = 9  # crosses into the core
    lab, n = keep_core_objects(m, (slice(3, 8), slice(3, 10)))
    assert n == 2 and lab.dtype == np.int32
    assert set(np.unique(lab)) == {0, 1, 2}
    assert (lab[m == 7] == 0).all() and (lab[m == 3] == 1).all() and (lab[m == 9] == 2).all()


def test_match_labels_pairs_by_iou():
    a = np.zeros((20, 20), np.int32)
    b = np.zeros((20, 20), np.int32)
    a[0:10, 0:10] = 1
    b[0:10, 1:10] = 5  # IoU 0.9 with a=1
    a[12:20, 12:20] = 2
    b[12:20, 16:20] = 6  # IoU 0.5 with a=2
    b[12:20, 12:16] = 7  # IoU 0.5 with a=2 as well
    assert match_labels(a, b, 0.6).tolist() == [[1, 5]]
    assert sorted(match_labels(a, b, 0.5).tolist()) == [[1, 5], [2, 6], [2, 7]]
    with pytest.raises(ValueError, match="threshold"):
        match_labels(a, b, 0.0)


def test_global_luts_join_chains_and_number_in_block_order():
    # block 0: ids 1,2; block 1: 1; block 2: 1,2 -> provisional 1..5
    luts, n = global_luts([2, 1, 2], np.array([[2, 3], [3, 5]]))
    assert n == 3
    assert luts[0].tolist() == [0, 1, 2] and luts[1].tolist() == [0, 2]
    assert luts[2].tolist() == [0, 3, 2]
    assert all(lut.dtype == np.int32 for lut in luts)
    luts, n = global_luts([0, 0], np.zeros((0, 2)))
    assert n == 0 and [lut.tolist() for lut in luts] == [[0], [0]]


def test_face_splits_finds_objects_cut_at_a_face():
    plan = make_plan((40, 40), 20, diameter=4.0)
    ref = np.zeros((40, 40), np.int32)
    ref[5:15, 15:25] = 1  # crosses the face x = 20
    ref[30:35, 2:8] = 2
    good = ref.copy()
    bad = ref.copy()
    bad[5:15, 20:25] = 3  # the right half got its own id
    assert face_splits(good, ref, plan).split == 0
    res = face_splits(bad, ref, plan)
    assert (res.crossing, res.split, res.split_ids) == (1, 1, (1,))


# ----------------------------------------------------------------------------- inputs
def test_layouts_follow_model_segment_rules():
    assert open_source(np.zeros((50, 60, 2))).layout.channel_axis == 2
    lay = open_source(np.zeros((2, 50, 60))).layout
    assert (lay.channel_axis, lay.spatial_axes, lay.spatial_shape) == (0, (1, 2), (50, 60))
    lay = open_source(np.zeros((10, 50, 60)), do_3d=True).layout
    assert (lay.channel_axis, lay.spatial_axes) == (None, (0, 1, 2))
    lay = open_source(np.zeros((50, 60, 10, 2)), z_axis=2, channel_axis=3, do_3d=True).layout
    assert lay.spatial_axes == (2, 0, 1) and lay.spatial_shape == (10, 50, 60)
    region = open_source(np.arange(50 * 60 * 10 * 2).reshape(50, 60, 10, 2), z_axis=2,
                         channel_axis=3, do_3d=True).read((slice(1, 3), slice(0, 4),
                                                           slice(5, 6)))
    assert region.shape == (2, 4, 1, 2)


@pytest.mark.parametrize("data,kw,err,match", [
    (np.zeros((2, 3, 40, 40, 40)), {}, ValueError, "at most 4 are supported"),
    (np.zeros((40, 40)), {"do_3d": True}, ValueError, "needs a volume"),
    (np.zeros((40, 40), complex), {}, ValueError, "real-valued"),
    ("/nonexistent/image.zarr", {}, FileNotFoundError, "no such file"),
])
def test_bad_inputs_give_clear_errors(data, kw, err, match):
    with pytest.raises(err, match=match):
        open_source(data, **kw)


def test_paths_that_are_not_images_are_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a zarr array or group"):
        open_source(tmp_path / "folder")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="zarr / OME-Zarr folder or a TIFF"):
        open_source(tmp_path / "notes.txt")


def _write_ome(path, data, axes, zarr_format=2, scale=None):
    import zarr

    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    ms = {"axes": [{"name": a, "type": {"t": "time", "c": "channel"}.get(a, "space")}
                   for a in axes],
          "datasets": [{"path": "0", "coordinateTransformations": [
              {"type": "scale", "scale": scale or [1.0] * len(axes)}]}]}
    kw = {}
    if zarr_format == 2:
        ms["version"] = "0.4"
        g.attrs["multiscales"] = [ms]
        kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        g.attrs["ome"] = {"version": "0.5", "multiscales": [ms]}
    a = g.create_array("0", shape=data.shape, chunks=data.shape, dtype=data.dtype, **kw)
    a[...] = data
    return g


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_axes_and_labels_metadata(tmp_path, zarr_format):
    data = np.random.default_rng(0).integers(0, 100, (1, 2, 30, 40), dtype=np.uint16)
    _write_ome(tmp_path / "img.zarr", data, "tcyx", zarr_format, scale=[1.0, 1.0, 0.5, 0.5])
    src = open_source(tmp_path / "img.zarr")
    assert src.ome is not None and src.ome.axes == ("t", "c", "y", "x")
    lay = src.layout
    assert (lay.channel_axis, lay.fixed_axes, lay.spatial_shape) == (1, (0,), (30, 40))
    np.testing.assert_array_equal(src.read((slice(0, 30), slice(0, 40))),
                                  np.moveaxis(data[0], 0, -1))
    plan = make_plan(lay.spatial_shape, 20, diameter=4.0)
    target = create_output("cells", lay, plan, src.ome)
    assert target.array.shape == (1, 30, 40) and target.array.dtype == np.int32
    target.put(plan.block((0, 1)).core, np.full((20, 20), 4, np.int32))
    import zarr

    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="r")
    lab = read_ome(group["labels/cells"])
    assert lab.axes == ("t", "y", "x")
    assert lab.transforms == ({"type": "scale", "scale": [1.0, 0.5, 0.5]},)
    attrs = dict(group["labels"].attrs)
    names = attrs["labels"] if zarr_format == 2 else attrs["ome"]["labels"]
    assert names == ["cells"]
    meta = dict(group["labels/cells"].attrs)
    meta = meta if zarr_format == 2 else meta["ome"]
    assert meta["image-label"]["source"] == {"image": "../../"}
    out = np.asarray(group["labels/cells/0"])
    assert out[0, 0:20, 20:40].min() == 4 and out[0, 20:].max() == 0
    if zarr_format == 2:  # NGFF 0.4 wants '/'-separated chunk keys
        meta0 = json.loads((tmp_path / "img.zarr/labels/cells/0/.zarray").read_text())
        assert meta0["dimension_separator"] == "/"
    target.discard()
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="r")
    attrs = dict(group["labels"].attrs)
    assert (attrs["labels"] if zarr_format == 2 else attrs["ome"]["labels"]) == []


def test_label_levels_follow_whole_image_scale_factors():
    from flowseg.engine.blocks.ome import OmeImage
    from flowseg.engine.blocks.pyramid import level_factors

    def lv(path, *scale):
        return (path, ({"type": "scale", "scale": list(scale)},))

    ome = OmeImage("x", "0.4", 2, ("c", "z", "y", "x"), "0", levels=(
        lv("0", 1, 2.0, 0.5, 0.5), lv("1", 1, 2.0, 1.0, 1.0), lv("2", 1, 4.0, 2.0, 2.0),
        lv("3", 1, 4.0, 3.0, 3.0), lv("4", 1, 4.0, 4.0, 4.0)))
    # level 3 is 6x (not a power of 2 but whole), then 8x; 1.5x would stop the pyramid
    assert level_factors(ome) == [(1, 2, 2), (2, 4, 4), (2, 6, 6), (2, 8, 8)]
    odd = OmeImage("x", "0.4", 2, ("y", "x"), "0", levels=(lv("0", 1.0, 1.0),
                                                           lv("1", 1.5, 1.5)))
    assert level_factors(odd) == []


def test_time_series_must_be_split(tmp_path):
    _write_ome(tmp_path / "ts.zarr", np.zeros((3, 20, 20), np.uint8), "tyx")
    with pytest.raises(ValueError, match="3 time points"):
        open_source(tmp_path / "ts.zarr")


def test_tiff_is_read_region_by_region(tmp_path):
    import pickle

    import tifffile

    data = np.random.default_rng(1).integers(0, 1000, (3, 64, 80), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", data, tile=(32, 32), photometric="minisblack",
                     metadata={"axes": "CYX"})
    src = open_source(tmp_path / "x.tif")
    assert src.kind == "tiff" and src.layout.channel_axis == 0
    src2 = pickle.loads(pickle.dumps(src))  # travels to workers as a path
    np.testing.assert_array_equal(src2.read((slice(10, 40), slice(5, 70))),
                                  np.moveaxis(data[:, 10:40, 5:70], 0, -1))


# ----------------------------------------------------------------------------- prepare
def test_percentiles_match_the_in_memory_normalisation():
    img = np.random.default_rng(2).gamma(2.0, 100.0, (120, 90, 2)).astype(np.float32)
    src = open_source(img)
    lohi = image_percentiles(src, 2, None, 1.0, 99.0)
    x = prepare_channels(img, None, 2, nchan=2, spatial_ndim=2)
    ref = normalize_percentile(x, 1.0, 99.0)
    from flowseg.engine.blocks.prepare import normalize_block

    np.testing.assert_allclose(normalize_block(x.copy(), lohi), ref, rtol=1e-5, atol=1e-6)


def test_sample_windows_cover_big_images_sparsely():
    assert sample_windows((100, 100), budget=10**6) == [(slice(0, 100), slice(0, 100))]
    wins = sample_windows((4000, 5000), budget=2**20)
    assert len(wins) == 16
    assert sum((w[0].stop - w[0].start) * (w[1].stop - w[1].start) for w in wins) <= 2**20
    assert max(w[1].stop for w in wins) == 5000


def test_blocks_in_mask_uses_a_low_resolution_mask():
    plan = make_plan((400, 400), 100, diameter=10.0)
    mask = np.zeros((40, 40), bool)
    mask[5, 5] = True  # pixels 50..60 at full resolution: block (0, 0) only
    keep = blocks_in_mask(mask, plan)
    assert [k for k, v in keep.items() if v] == [(0, 0)]
    with pytest.raises(ValueError, match="does not fit"):
        blocks_in_mask(np.zeros((800, 40)), plan)


# ----------------------------------------------------------------------------- cluster
def test_cluster_options_are_checked():
    assert parse_memory("2GB") == 2 * 10**9 and parse_memory(None) is None
    with pytest.raises(ValueError, match="like '4GB'"):
        ClusterOptions(memory_limit="lots")
    with pytest.raises(ValueError, match="under 256 MiB"):
        ClusterOptions(memory_limit="10MB")
    with pytest.raises(ValueError, match="workers"):
        ClusterOptions(workers=0)
    with pytest.raises(ValueError, match="tcp://"):
        ClusterOptions(address="localhost")


# ----------------------------------------------------------------------------- memory
def test_default_3d_block_keeps_a_task_within_the_budget():
    from flowseg.engine.blocks.run import TASK_BUDGET, default_block_size, task_memory
    from flowseg.engine.inference.model import Model

    model = Model.new(width=32, nchan=2, diam_mean=17.0, seed=0)
    shape = (2048, 2048, 2048)
    assert default_block_size((8192, 8192), model, 1, False, 17.0) == 1024
    edges = {}
    for d in (8.0, 17.0, 30.0):
        edge = edges[d] = default_block_size(shape, model, 1, True, d)
        need = task_memory(make_plan(shape, edge, diameter=d), model, 1, True, d)
        assert need <= TASK_BUDGET
        if edge < 256:  # the next bigger block would not fit
            assert task_memory(make_plan(shape, edge + 32, diameter=d), model, 1, True,
                               d) > TASK_BUDGET
    # objects smaller than the model's are enlarged (8x the voxels at half the size)
    assert edges[8.0] < edges[17.0] <= 256
    # a task's memory does not depend on the size of the volume
    plan_a = make_plan((512, 512, 512), 128, diameter=17.0)
    plan_b = make_plan((4096, 4096, 4096), 128, diameter=17.0)
    assert task_memory(plan_a, model, 1, True, 17.0) == task_memory(plan_b, model, 1, True,
                                                                      17.0)
