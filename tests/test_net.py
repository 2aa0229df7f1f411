"""The flow network matches the Cellpose 3 CPnet layout and outputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from flowseg.engine.inference.model import Model
from flowseg.engine.io.modelfile import ModelFileError, load_model_file
from flowseg.engine.network.unet import FlowNet, nbase_for_width

FIXTURE = Path(__file__).parent / "fixtures" / "cpnet_w3.pt"
REPO = Path(__file__).resolve().parents[1]


def _fixture_state_dict(fx: dict) -> dict:
    sd, off = {}, 0
    for name, shape, dtype in zip(fx["names"], fx["shapes"], fx["dtypes"]):
        n = int(np.prod(shape)) if shape else 1
        sd[name] = fx["flat"][off:off + n].reshape(shape).to(getattr(torch, dtype))
        off += n
    assert off == fx["flat"].numel()
    return sd


def _check_outputs(model: Model, fx: dict) -> None:
    with torch.inference_mode():
        out, style = model.net(fx["input"])
    assert out.shape == fx["out"].shape
    assert torch.allclose(out, fx["out"], atol=1e-4, rtol=0)
    assert torch.allclose(style, fx["style"], atol=1e-5, rtol=0)


def test_cellpose_fixture_loads_and_matches(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True, map_location="cpu")
    sd = _fixture_state_dict(fx)
    assert "downsample.down.res_down_0.conv.conv_0.0.weight" in sd and "output.2.bias" in sd
    path = tmp_path / "cp_model"          # a bare Cellpose state dict, no extension
    torch.save(sd, path)
    model = Model.load(path, device="cpu")
    assert model.net.nbase == [2, 3, 6, 12, 24]
    assert model.meta["source"] == "cellpose"
    assert model.diam_mean == pytest.approx(30.0)
    assert model.meta["diam_labels"] == pytest.approx(27.0)
    _check_outputs(model, fx)
    # channels-last inference (the CPU fast path) gives the same numbers
    net = model.net.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        out, _ = net(fx["input"].contiguous(memory_format=torch.channels_last))
    assert torch.allclose(out, fx["out"], atol=1e-4, rtol=0)
    # our own format round-trips the same weights
    ours = model.save(tmp_path / "ours.pt")
    _check_outputs(Model.load(ours, device="cpu"), fx)


def test_old_cellpose_file_without_diameters(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True, map_location="cpu")
    sd = _fixture_state_dict(fx)
    del sd["diam_mean"], sd["diam_labels"]
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "cyto_0")
    model = Model.load(tmp_path / "cyto_0")
    assert model.diam_mean == 30.0
    _check_outputs(model, fx)


def test_layout_keys_match_cellpose_names():
    keys = set(FlowNet(nbase_for_width(32)).state_dict())
    for k in ("downsample.down.res_down_0.conv.conv_0.0.weight",
              "downsample.down.res_down_3.proj.1.weight",
              "upsample.up.res_up_3.conv.conv_1.full.weight",
              "upsample.up.res_up_0.conv.conv_3.conv.2.bias",
              "output.0.running_var", "output.2.bias", "diam_mean", "diam_labels"):
        assert k in keys, k
    n = sum(v.numel() for k, v in FlowNet().state_dict().items()
            if not k.endswith("num_batches_tracked"))
    assert 6.5e6 < n < 6.7e6  # the standard Cellpose network size


def test_bad_state_dicts_give_clear_errors(tmp_path):
    fx = torch.load(FIXTURE, weights_only=True, map_location="cpu")
    sd = _fixture_state_dict(fx)
    bad = dict(sd)
    bad["upsample.up.res_up_1.conv.conv_2.full.weight"] = torch.zeros(5, 5)
    del bad["output.2.weight"]
    torch.save(bad, tmp_path / "bad")
    with pytest.raises(ModelFileError, match="output.2.weight|outputs"):
        Model.load(tmp_path / "bad")
    bad = dict(sd)
    bad["upsample.up.res_up_1.conv.conv_2.full.weight"] = torch.zeros(5, 5)
    torch.save(bad, tmp_path / "bad2")
    with pytest.raises(ModelFileError, match=r"mismatched shapes.*res_up_1\.conv\.conv_2\.full"):
        Model.load(tmp_path / "bad2")
    bad = dict(sd)
    bad["extra.weight"] = torch.zeros(1)
    del bad["upsample.up.res_up_0.proj.1.bias"]
    torch.save(bad, tmp_path / "bad3")
    with pytest.raises(ModelFileError,
                       match=r"missing.*res_up_0\.proj\.1\.bias.*unexpected.*extra"):
        Model.load(tmp_path / "bad3")
    torch.save({"foo": torch.zeros(2)}, tmp_path / "foo.pt")
    with pytest.raises(ModelFileError, match="neither a flowseg model nor a Cellpose"):
        load_model_file(tmp_path / "foo.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="neither a PyTorch zip nor a pickle"):
        Model.load(tmp_path / "junk.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelFileError, match="not a state dict"):
        Model.load(tmp_path / "list.pt")


class _Payload:
    """Unpickling this creates a file: proof that code from the model file ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_code_is_refused(tmp_path):
    target = tmp_path / "created_by_pickle.txt"
    torch.save({"x": _Payload(str(target))}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload does run when trusted
    assert target.exists()
    target.unlink()
    with pytest.raises(ModelFileError, match="could run code"):
        Model.load(tmp_path / "evil.pt")
    assert not target.exists()


@pytest.mark.peer
def test_peer_standard_cpnet_equivalence(tmp_path, peer_python):
    py = peer_python
    out = tmp_path / "peer.pt"
    subprocess.run([py, str(REPO / "benchmarks" / "peer_cpnet.py"), str(out), "--width", "32",
                    "--size", "96", "--batch", "2", "--seed", "3"], check=True)
    fx = torch.load(out, weights_only=True, map_location="cpu")
    torch.save(fx["state_dict"], tmp_path / "cyto3_like")
    model = Model.load(tmp_path / "cyto3_like", device="cpu")
    assert model.net.nbase == [2, 32, 64, 128, 256]
    _check_outputs(model, fx)


@pytest.mark.peer
def test_peer_segment_outputs_match(tmp_path, peer_python):
    """Same weights and image: our tiled pipeline reproduces CellposeModel.eval's outputs."""
    py = peer_python
    from flowseg.engine.data.synthetic import make_sample

    model = Model.new(width=32, seed=5)
    model.export_cellpose(tmp_path / "w")
    img = make_sample("cells", (300, 260), diameter=30, with_nuclei=True, seed=2).image
    np.save(tmp_path / "img.npy", img)
    subprocess.run([py, str(REPO / "benchmarks" / "peer_segment.py"), str(tmp_path / "w"),
                    str(tmp_path / "img.npy"), str(tmp_path / "ref.npz"), "--runs", "1"],
                   check=True, capture_output=True)
    ref = np.load(tmp_path / "ref.npz")
    seg = model.segment(img, channels=(0, 1), diameter=30, whole_max=0)  # Cellpose's tiling
    assert np.abs(seg.flows * 5 - ref["dP"]).max() < 1e-3
    assert np.abs(seg.cellprob - ref["cellprob"]).max() < 1e-3
    np.testing.assert_allclose(seg.styles, ref["styles"], atol=1e-5)
