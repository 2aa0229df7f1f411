"""Blockwise segmentation end to end, on an in-process dask cluster with the bundled model.

The reference is the in-memory :meth:`Model.segment` of the same image: blockwise labels
must give the same objects, none split at a block face, with unique ids.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

pytest.importorskip("zarr", minversion="3")
pytest.importorskip("distributed")

from flowseg import segment_blocks
from flowseg.engine.blocks.quality import face_splits
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.flows.metrics import average_precision
from flowseg.engine.progress import Cancelled, ProgressCollector

DIAM = 17.0
BLOCK = 96  # 288 x 288 image: 3 x 3 blocks


@pytest.fixture(scope="module")
def client():
    """Two worker threads in this process, reachable over TCP (the CLI tests connect)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                           protocol="tcp://", host="127.0.0.1", dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def model():
    from flowseg.engine.inference.model import Model

    return Model.load("nuclei")


@pytest.fixture(scope="module")
def image():
    s = make_sample("nuclei", (288, 288), seed=3, noise=1.2, blur=1.2)
    return (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)


@pytest.fixture(scope="module")
def whole(model, image):
    return model.segment(image, diameter=DIAM).masks


@pytest.fixture(scope="module")
def blockwise(model, image, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("blocks") / "labels.zarr"
    events = ProgressCollector()
    res = segment_blocks(image, model, block_size=BLOCK, diameter=DIAM, out=out,
                         client=client, progress=events)
    return res, events


def _check_unique_ids(lab: np.ndarray, n: int) -> None:
    """Ids are 1..n and each is one object (no id given to two objects in two blocks).

    The flow dynamics may leave a stray pixel or two beside an object (the in-memory path
    too), so an id passes when its largest connected piece holds >= 95 % of its pixels.
    """
    ids = np.unique(lab)
    assert ids[0] == 0 and ids[1:].tolist() == list(range(1, n + 1))
    full = ndi.generate_binary_structure(lab.ndim, lab.ndim)
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        pieces, _ = ndi.label(lab[sl] == k, structure=full)
        sizes = np.bincount(pieces.ravel())[1:]
        assert sizes.max() >= 0.95 * sizes.sum(), f"label {k} is in pieces of {sizes}"


def test_blockwise_matches_the_whole_image(blockwise, whole, image):
    res, events = blockwise
    assert res.plan.grid == (3, 3) and res.n_segmented == 9 and res.n_skipped == 0
    assert res.labels.shape == image.shape and res.labels.dtype == np.int32
    lab = np.asarray(res.labels)
    _check_unique_ids(lab, res.n_objects)
    ap = average_precision(whole, lab, thresholds=(0.5, 0.75))
    assert ap[0] >= 0.95 and ap[1] >= 0.9, ap
    splits = face_splits(lab, whole, res.plan)
    assert splits.crossing >= 20 and splits.split == 0, splits
    assert res.n_merged > 0
    assert events.stages() == ["prepare", "blocks", "merge", "write"]
    last = [e for e in events.events if e.stage == "blocks"][-1]
    assert (last.done, last.total) == (9, 9)
    assert dict(res.labels.attrs)["flowseg"]["complete"] is True
    assert not list(res.labels.store.root.parent.glob(".flowseg-scratch-*"))


def test_face_merge_is_needed(model, image, whole, client, tmp_path):
    """Without joining (IoU 1.0 is never reached by two views), objects split at faces."""
    res = segment_blocks(image, model, block_size=BLOCK, diameter=DIAM,
                         out=tmp_path / "x.zarr", client=client, match_iou=1.0)
    assert face_splits(np.asarray(res.labels), whole, res.plan).split >= 5


def test_dask_and_zarr_inputs_give_the_same_labels(model, image, blockwise, client, tmp_path):
    import dask.array as da
    import zarr

    ref = np.asarray(blockwise[0].labels)
    res = segment_blocks(da.from_array(image, chunks=100), model, block_size=BLOCK,
                         diameter=DIAM, out=tmp_path / "d.zarr", client=client)
    np.testing.assert_array_equal(np.asarray(res.labels), ref)
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=image.shape, chunks=(64, 64),
                          dtype=image.dtype)
    z[...] = image
    res = segment_blocks(str(tmp_path / "in.zarr"), model, block_size=BLOCK, diameter=DIAM,
                         out=tmp_path / "z.zarr", client=client)
    np.testing.assert_array_equal(np.asarray(res.labels), ref)


def test_ome_zarr_input_gets_a_labels_group(model, image, blockwise, client, tmp_path):
    import zarr

    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": p, "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, s, s]}]} for p, s in (("0", 0.65),
                                                                         ("1", 1.3))]}]
    for path, step in (("0", 1), ("1", 2)):
        a = g.create_array(path, shape=(1, 1, *image[::step, ::step].shape),
                           chunks=(1, 1, 128, 128), dtype=image.dtype,
                           chunk_key_encoding={"name": "v2", "separator": "/"})
        a[...] = image[None, None, ::step, ::step]
    res = segment_blocks(tmp_path / "img.zarr", model, block_size=BLOCK, diameter=DIAM,
                         out="nuclei", client=client)
    assert res.label_name == "nuclei"
    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="r")
    assert dict(g["labels"].attrs)["labels"] == ["nuclei"]
    ms = dict(g["labels/nuclei"].attrs)["multiscales"][0]
    assert [ax["name"] for ax in ms["axes"]] == ["t", "y", "x"]
    assert [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]] == \
        [[1.0, 0.65, 0.65], [1.0, 1.3, 1.3]]  # the image's pyramid, without c
    lab = np.asarray(g["labels/nuclei/0"])
    assert lab.shape == (1, *image.shape) and lab.dtype == np.int32
    np.testing.assert_array_equal(lab[0], np.asarray(blockwise[0].labels))
    low = g["labels/nuclei/1"]
    assert low.metadata.dimension_separator == "/"
    np.testing.assert_array_equal(np.asarray(low), lab[:, ::2, ::2])
    assert [lv.shape for lv in res.pyramid()] == [(1, 288, 288), (1, 144, 144)]
    with pytest.raises(FileExistsError, match="labels/nuclei exists"):
        segment_blocks(tmp_path / "img.zarr", model, block_size=BLOCK, diameter=DIAM,
                       out="nuclei", client=client)


def test_3d_volume(model, client, tmp_path):
    s = make_sample("nuclei", (28, 40, 48), seed=5, diameter=14.0, noise=1.0, blur=1.0)
    vol = s.image[..., 0]
    whole = model.segment(vol, diameter=14.0, do_3d=True).masks
    res = segment_blocks(vol, model, block_size=(14, 40, 24), diameter=14.0, do_3d=True,
                         out=tmp_path / "v.zarr", client=client)
    assert res.plan.grid == (2, 1, 2) and res.labels.shape == vol.shape
    lab = np.asarray(res.labels)
    _check_unique_ids(lab, res.n_objects)
    assert average_precision(whole, lab)[0] >= 0.9
    splits = face_splits(lab, whole, res.plan)
    assert splits.crossing >= 5 and splits.split == 0, splits


def test_empty_blocks_are_skipped(model, image, client, tmp_path):
    img = image.copy()
    img[:, :BLOCK * 2 - 40] = 100  # flat background left of x = 152
    res = segment_blocks(img, model, block_size=BLOCK, diameter=DIAM, out=tmp_path / "a.zarr",
                         client=client, skip_below=200)
    assert res.n_skipped == 3 and res.n_segmented == 6
    assert np.asarray(res.labels)[:, :BLOCK].max() == 0
    mask = np.zeros((36, 36), bool)  # 8x downsampled: foreground top-left only
    mask[:4, :4] = True
    res = segment_blocks(image, model, block_size=BLOCK, diameter=DIAM,
                         out=tmp_path / "b.zarr", client=client, mask=mask)
    assert res.n_segmented == 1 and res.n_skipped == 8


def test_cancel_stops_and_removes_the_partial_output(model, image, client, tmp_path):
    events = ProgressCollector()

    def cancel() -> bool:
        return any(e.stage == "blocks" and e.done >= 1 for e in events.events)

    out = tmp_path / "c.zarr"
    with pytest.raises(Cancelled):
        segment_blocks(image, model, block_size=BLOCK, diameter=DIAM, out=out, client=client,
                       progress=events, cancel=cancel)
    done = max(e.done for e in events.events if e.stage == "blocks")
    assert done < 9
    assert not out.exists()
    assert not list(tmp_path.glob(".flowseg-scratch-*"))


@pytest.mark.parametrize("kw,err,match", [
    ({"block_size": 10}, ValueError, "smaller than one object diameter"),
    ({"overlap": 10}, ValueError, "under 2 object diameters"),
    ({"flow_treshold": 0.5}, TypeError, "unexpected keyword"),
    ({"diameter": -3}, ValueError, "diameter"),
])
def test_bad_arguments_fail_before_any_work(model, image, tmp_path, kw, err, match):
    args = {"block_size": BLOCK, "diameter": DIAM, "out": tmp_path / "e.zarr", **kw}
    with pytest.raises(err, match=match):
        segment_blocks(image, model, **args)
    assert not (tmp_path / "e.zarr").exists()


def test_existing_output_is_kept(model, image, tmp_path):
    (tmp_path / "keep.zarr").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        segment_blocks(image, model, block_size=BLOCK, diameter=DIAM,
                       out=tmp_path / "keep.zarr")
    assert (tmp_path / "keep.zarr").is_dir()


# ----------------------------------------------------------------------------- CLI
def test_cli_big_tiff_goes_blockwise(model, image, whole, client, tmp_path, monkeypatch,
                                     capsys):
    import tifffile
    import zarr

    from flowseg import _cli_blocks
    from flowseg.cli import main

    tifffile.imwrite(tmp_path / "big.tif", image)
    monkeypatch.setattr(_cli_blocks, "TIFF_BLOCKWISE_ELEMENTS", image.size - 1)
    rc = main(["segment", str(tmp_path / "big.tif"), "--model", "nuclei", "--diameter",
               str(DIAM), "--scheduler", client.scheduler.address, "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "big_masks.zarr" in out and "1 blocks" in out
    lab = np.asarray(zarr.open_array(str(tmp_path / "big_masks.zarr"), mode="r"))
    # one block holding the whole image: exactly the in-memory result
    np.testing.assert_array_equal(lab, whole)


def test_cli_ome_zarr_label_name_and_errors(image, client, tmp_path, capsys):
    import zarr

    from flowseg.cli import main

    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0]}]}]}]}
    g.create_array("0", shape=image.shape, chunks=(128, 128), dtype=image.dtype)[...] = image
    args = ["segment", str(tmp_path / "img.zarr"), "--model", "nuclei", "--diameter",
            str(DIAM), "--block-size", str(BLOCK), "--no-progress", "--out", "cells"]
    assert main(args + ["--scheduler", client.scheduler.address]) == 0
    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="r")
    assert dict(g["labels"].attrs)["ome"]["labels"] == ["cells"]
    assert g["labels/cells/0"].dtype == np.int32
    capsys.readouterr()
    assert main(args + ["--scheduler", client.scheduler.address]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(args + ["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"]) == 2
    assert "--workers" in capsys.readouterr().err


# ----------------------------------------------------------------------------- napari side
def test_lazy_multiscale_image_from_ome_zarr(model, image, blockwise, tmp_path):
    """What the widget calls for a zarr-backed multiscale layer: a new label image each run,
    read lazily; no client given, so it starts its own in-process workers."""
    import dask.array as da
    import zarr

    from flowseg.engine.blocks.lazy import default_output, needs_blockwise, segment_lazy

    g = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": p, "coordinateTransformations": [
            {"type": "scale", "scale": [s, s]}]} for p, s in (("0", 1.0), ("1", 2.0))]}]
    g.create_array("0", shape=image.shape, chunks=(128, 128), dtype=image.dtype)[...] = image
    g.create_array("1", shape=(144, 144), chunks=(128, 128), dtype=image.dtype)[...] = \
        image[::2, ::2]
    levels = [da.from_zarr(str(tmp_path / "img.zarr" / p)) for p in ("0", "1")]
    assert needs_blockwise(levels) and needs_blockwise(da.zeros((5000, 5000), chunks=1000))
    assert not needs_blockwise(levels[0]) and not needs_blockwise(image)  # small: whole
    events = ProgressCollector()
    res = segment_lazy(levels, model, source_path=tmp_path / "img.zarr", block_size=BLOCK,
                       diameter=DIAM, progress=events)
    assert res.label_name == "flowseg" and len(res.pyramid()) == 2
    # its own workers run torch with other thread counts: float rounding moves a few pixels
    lab, ref = res.to_dask().compute(), np.asarray(blockwise[0].labels)
    assert np.mean(lab != ref) < 1e-3
    assert average_precision(ref, lab, thresholds=(0.9,))[0] >= 0.99
    assert events.stages()[-2:] == ["write", "pyramid"]
    assert default_output(tmp_path / "img.zarr", image.shape) == (tmp_path / "img.zarr",
                                                                  "flowseg-2")
    # a layer whose axes differ from the group's (e.g. one channel split off) and a file
    assert default_output(tmp_path / "img.zarr", (3, *image.shape)) == \
        (None, tmp_path / "img_masks.zarr")
    (tmp_path / "cells.tif").write_bytes(b"")
    (tmp_path / "cells_masks.zarr").mkdir()
    assert default_output(tmp_path / "cells.tif", image.shape) == \
        (None, tmp_path / "cells_masks-2.zarr")
    assert default_output(None, image.shape) == (None, None)


def test_diameter_is_estimated_once_on_a_central_crop(model, image, client, tmp_path):
    assert model.size_model is not None
    res = segment_blocks(image, model, block_size=144, out=tmp_path / "d.zarr", client=client)
    assert res.diameter_source == "estimated on a central 288x288 crop"
    assert 0.8 * DIAM <= res.diameter <= 1.25 * DIAM
    assert res.plan.overlap == (int(np.ceil(2 * res.diameter)),) * 2
    assert dict(res.labels.attrs)["flowseg"]["diameter"] == res.diameter
