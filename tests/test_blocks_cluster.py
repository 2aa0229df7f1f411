"""Blockwise segmentation on a real LocalCluster of two worker processes, and a second
process (the ``flowseg`` command) joining that cluster by its scheduler address."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("zarr", minversion="3")
pytest.importorskip("distributed")

from flowseg import segment_blocks
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.flows.metrics import average_precision

DIAM = 17.0


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="3GB")
    c = Client(lc)
    yield c
    c.close()
    lc.close()


@pytest.fixture(scope="module")
def image():
    s = make_sample("nuclei", (256, 256), seed=7, noise=1.2, blur=1.2)
    return (s.image[..., 0] / s.image.max() * 20000 + 100).astype(np.uint16)


@pytest.fixture(scope="module")
def result(cluster, image, tmp_path_factory):
    from flowseg.engine.inference.model import Model

    out = tmp_path_factory.mktemp("proc") / "labels.zarr"
    return segment_blocks(image, Model.load("nuclei"), block_size=128, diameter=DIAM, out=out,
                          client=cluster)


def test_two_worker_processes_share_the_blocks(result, image):
    from flowseg.engine.inference.model import Model

    assert result.n_segmented == 4
    assert result.workers == 2  # both processes segmented blocks
    assert 0 < result.peak_rss_mb < 3 * 1024
    whole = Model.load("nuclei").segment(image, diameter=DIAM).masks
    assert average_precision(whole, np.asarray(result.labels))[0] >= 0.95


def test_second_process_connects_by_address(cluster, result, image, tmp_path):
    import tifffile
    import zarr

    tifffile.imwrite(tmp_path / "img.tif", image)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "flowseg.cli", "segment", str(tmp_path / "img.tif"),
           "--model", "nuclei", "--diameter", str(DIAM), "--block-size", "128",
           "--scheduler", cluster.scheduler.address, "--no-progress",
           "--out", str(tmp_path / "out.zarr")]
    run = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "4 blocks" in run.stdout
    lab = np.asarray(zarr.open_array(str(tmp_path / "out.zarr"), mode="r"))
    np.testing.assert_array_equal(lab, np.asarray(result.labels))
