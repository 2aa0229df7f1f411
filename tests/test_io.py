"""Model files: our format, bundled names, atomic saves, size model round trip."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from flowseg.engine.data.synthetic import make_labels, make_sample
from flowseg.engine.inference import base as model_mod
from flowseg.engine.inference.base import available_models
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.size import fit_size_model, mask_diameters, style_diameter
from flowseg.engine.io.modelfile import FORMAT, ModelFileError, load_model_file, save_model_file


def test_save_load_roundtrip_and_metadata(tmp_path):
    m = Model.new(width=4, nchan=2, diam_mean=17.0, seed=1)
    m.meta["training"] = {"epochs": 3, "images": ["a.tif"]}
    m.meta["size_model"] = {"A": [0.0] * 32, "b": float(np.log(17.0))}
    p = m.save(tmp_path / "m.pt")
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == 1
    assert raw["meta"]["nbase"] == [2, 4, 8, 16, 32]
    m2 = Model.load(p)
    assert m2.diam_mean == 17.0 and m2.meta["training"]["epochs"] == 3
    assert float(m2.net.diam_mean) == 17.0
    for k, v in m.net.state_dict().items():
        assert torch.equal(v, m2.net.state_dict()[k]), k
    assert style_diameter(m2.size_model, np.zeros(32, np.float32)) == pytest.approx(17.0)
    with pytest.raises(FileExistsError, match="overwrite"):
        m.save(p)
    m.save(p, overwrite=True)
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_half_precision_save_halves_the_file_and_loads_as_float32(tmp_path):
    m = Model.new(width=8, nchan=2, diam_mean=17.0, seed=2)
    full, half = m.save(tmp_path / "full.pt"), m.save(tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    raw = torch.load(half, weights_only=True)["state_dict"]
    assert raw["output.2.weight"].dtype == torch.float16
    assert raw["output.0.num_batches_tracked"].dtype == torch.int64
    m2 = Model.load(half)
    assert all(v.dtype == m.net.state_dict()[k].dtype for k, v in m2.net.state_dict().items())
    x = torch.randn(1, 2, 32, 32)
    m.net.eval()
    m2.net.eval()
    with torch.no_grad():
        y, y2 = m.net(x)[0], m2.net(x)[0]
    assert torch.allclose(y, y2, atol=2e-3 * float(y.abs().max()))


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    m = Model.new(width=2, seed=0)
    p = m.save(tmp_path / "m.pt")
    before = p.read_bytes()
    with pytest.raises(ValueError, match="JSON"):
        save_model_file(p, m.net.state_dict(), {"bad": object()}, overwrite=True)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]


def test_newer_format_and_missing_files(tmp_path):
    m = Model.new(width=2, seed=0)
    torch.save({"format": FORMAT, "format_version": 99, "state_dict": m.net.state_dict(),
                "meta": {}}, tmp_path / "new.pt")
    with pytest.raises(ModelFileError, match="newer"):
        load_model_file(tmp_path / "new.pt")
    with pytest.raises(FileNotFoundError):
        Model.load(tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="directory"):
        Model.load(tmp_path)


def test_bundled_names(tmp_path, monkeypatch):
    monkeypatch.setattr(model_mod, "_models_dir", lambda: tmp_path)
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cp"))
    assert available_models() == []
    with pytest.raises(ValueError, match=r"no bundled model named 'cyto' \(available: none"):
        Model.load("cyto")
    Model.new(width=2, seed=0).save(tmp_path / "nuclei.pt")
    assert available_models() == ["nuclei"]
    assert Model.load("nuclei").net.nbase[1] == 2
    with pytest.raises(ValueError, match="available: nuclei"):
        Model.load("cyto")
    # a model downloaded by Cellpose (bare state dict, no extension) is found by name
    (tmp_path / "cp").mkdir()
    Model.new(width=3, seed=0).export_cellpose(tmp_path / "cp" / "cyto3")
    m = Model.load("cyto3")
    assert m.meta["source"] == "cellpose" and m.net.nbase[1] == 3


def test_devices():
    assert Model.new(width=2, device="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="device"):
        Model.new(width=2, device="tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            Model.new(width=2, device="cuda")


def test_mask_diameters():
    lab = np.zeros((50, 50), np.int32)
    lab[:10, :10] = 1
    lab[20:40, 20:40] = 2
    d, all_d = mask_diameters(lab)
    assert sorted(all_d) == pytest.approx([2 * np.sqrt(100 / np.pi), 2 * np.sqrt(400 / np.pi)])
    assert mask_diameters(np.zeros((4, 4)))[0] == 0.0


def test_fit_size_model_learns_scale():
    """A tiny random network's style still carries scale; the ridge fit must recover it."""
    m = Model.new(width=4, seed=0)
    imgs, labs = [], []
    for k, d in enumerate((14, 22, 34)):
        s = make_sample("cells", (96, 96), diameter=d, seed=10 + k)
        imgs.append(s.image[..., 0])
        labs.append(s.labels)
    res = fit_size_model(m, imgs, labs, n_per_image=4, jitter=2.0, crop=96, ridge=1e-3, seed=0)
    assert m.meta["size_model"] is res and len(res["A"]) == 32 and res["n"] == 12
    assert res["train_r"] > 0.5
    with pytest.raises(ValueError, match="as many"):
        fit_size_model(m, imgs, labs[:1])
    with pytest.raises(ValueError, match="objects"):
        fit_size_model(m, imgs[:1], [np.zeros((96, 96), np.int32)])


def test_estimate_diameter_without_size_model_uses_masks():
    from tests.test_model import _oracle_model  # noqa: F401  (same oracle as the tiling tests)

    labels = make_labels((200, 200), diameter=24, seed=3)
    m = _oracle_model(diam_mean=24.0)
    d = m.estimate_diameter(labels.astype(np.float32), channels=(0, None), normalize=False)
    assert d == pytest.approx(mask_diameters(labels)[0], rel=0.1)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_saved_model_files_get_normal_permissions(tmp_path):
    """Atomic saves go through a temporary file, but the result is not owner-only: a new file
    gets 0o666 less the umask, a replaced file keeps its mode."""
    m = Model.new(width=8, seed=0)
    old = os.umask(0o022)
    try:
        p = m.save(tmp_path / "a.pt")
        assert (os.stat(p).st_mode & 0o777) == 0o644
        os.chmod(p, 0o640)
        m.save(p, overwrite=True)
        assert (os.stat(p).st_mode & 0o777) == 0o640
    finally:
        os.umask(old)
