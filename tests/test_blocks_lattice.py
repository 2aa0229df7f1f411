"""Blocks share the whole image's network tile grid (``tiling.tile_lattice``).

A block segmented on its own tile grid gets network outputs that differ everywhere from an
in-memory run (the tiles and their blending differ); on the whole image's grid the outputs
of pixels whose tiles lie inside the block are the in-memory outputs exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowseg.engine.network.tiling import TileLattice, run_tiled, tile_lattice

pytest.importorskip("zarr", minversion="3")
pytest.importorskip("distributed")

BSIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small networks: one PyTorch thread is faster (and far faster on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net():
    from flowseg.engine.inference.model import Model

    torch.manual_seed(0)
    m = Model.new(width=8, nchan=2)
    m.net.eval()
    return m.net


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.random((256, 240, 2), dtype=np.float32)


@pytest.fixture(scope="module", params=[False, True], ids=["tiles", "augment"])
def whole(request, net, image):
    return request.param, run_tiled(net, image, bsize=BSIZE, augment=request.param)[0]


def _far_from_cut(shape, block, full, margin):
    """Pixels of the block at least ``margin`` from its sides that are inside the image."""
    ok = np.ones(shape, bool)
    (y0, y1), (x0, x1) = block
    if y0 > 0:
        ok[:margin] = False
    if y1 < full[0]:
        ok[-margin:] = False
    if x0 > 0:
        ok[:, :margin] = False
    if x1 < full[1]:
        ok[:, -margin:] = False
    return ok


@pytest.mark.parametrize("block", [((20, 236), (30, 210)), ((0, 170), (90, 240)),
                                   ((121, 256), (0, 181))])
def test_block_on_the_image_lattice_gets_the_whole_image_outputs(net, image, whole, block):
    full = image.shape[:2]
    augment, ref = whole
    (y0, y1), (x0, x1) = block
    part = image[y0:y1, x0:x1]
    with tile_lattice(TileLattice((y0, x0), part.shape[:2], full)):
        same, _ = run_tiled(net, part, bsize=BSIZE, augment=augment)
    own, _ = run_tiled(net, part, bsize=BSIZE, augment=augment)
    want = ref[:, y0:y1, x0:x1]
    # a pixel one tile away from the cut sides has all its tiles inside the block
    far = _far_from_cut(part.shape[:2], block, full, BSIZE)
    assert far.sum() > 2000
    np.testing.assert_allclose(same[:, far], want[:, far], atol=1e-4)
    assert np.abs(own[:, far] - want[:, far]).max() > 1e-2  # its own grid: differs


def test_lattice_outside_a_context_and_for_other_shapes_is_not_used(net, image):
    part = image[50:200, 20:230]
    base, _ = run_tiled(net, part, bsize=BSIZE)
    lat = TileLattice((50, 20), (150, 210), image.shape[:2])
    assert lat.axes((210, 150)) is None  # e.g. another plane of a volume
    with tile_lattice(lat):
        other, _ = run_tiled(net, part.transpose(1, 0, 2), bsize=BSIZE)
    np.testing.assert_array_equal(other, run_tiled(net, part.transpose(1, 0, 2),
                                                   bsize=BSIZE)[0])
    again, _ = run_tiled(net, part, bsize=BSIZE)
    np.testing.assert_array_equal(again, base)  # the context is gone


def test_lattice_offsets_at_the_network_scale():
    lat = TileLattice((100, 0), (200, 300), (1000, 1200), scale=0.5)
    # 200 x 300 image pixels resized by 0.5 -> 100 x 150; the full image -> 500 x 600
    assert lat.axes((100, 150)) == [(50, 500), (0, 600)]
    assert lat.axes((200, 300)) is None
    assert TileLattice((7, 9), (20, 30), (50, 60)).axes((20, 30)) == [(7, 50), (9, 60)]
    up = TileLattice((10, 0), (40, 40), (100, 100), scale=2.0).axes((80, 80))
    assert up == [(20, 200), (0, 200)]


def test_blockwise_on_a_tiled_image_equals_in_memory(tmp_path):
    """End to end: with the in-memory run tiled (``whole_max=0``), the blockwise masks are
    the in-memory masks (the default overlap; tiles of 64 px fit inside the blocks)."""
    from distributed import Client, LocalCluster

    from flowseg import segment_blocks
    from flowseg.engine.data.synthetic import make_sample
    from flowseg.engine.flows.metrics import average_precision
    from flowseg.engine.inference.model import Model

    model = Model.load("nuclei")
    s = make_sample("nuclei", (256, 256), seed=4, noise=1.2, blur=1.2)
    img = (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)
    kw = {"diameter": 17.0, "bsize": BSIZE, "whole_max": 0}
    whole = model.segment(img, **kw).masks
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = segment_blocks(img, model, block_size=128, out=tmp_path / "l.zarr",
                             client=client, **kw)
    lab = np.asarray(res.labels)
    ap = average_precision(whole, lab, thresholds=(0.5, 0.9))
    assert ap[0] >= 0.99 and ap[1] >= 0.98, ap
