"""Training precision (``train(..., precision=...)``): resolution, bf16 autocast training, record.

The suite runs with ``FLOWSEG_PRECISION=fp32`` (``tests/conftest.py``) so that the other
training tests do not depend on the CPU they run on; these tests set or clear it themselves.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference.model import Model
from flowseg.engine.training import precision as P
from flowseg.engine.training.train import train

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme sse sse2 avx2 avx512f {extra} rdpid
bogomips\t: 4900.00
"""


def _native(monkeypatch, has: bool) -> None:
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: has)


def test_cpuinfo_flags():
    assert P.cpuinfo_has_bf16(CPUINFO.format(extra="avx512_bf16"))
    assert P.cpuinfo_has_bf16(CPUINFO.format(extra="amx_bf16 amx_tile"))
    assert not P.cpuinfo_has_bf16(CPUINFO.format(extra="avx512_vnni"))
    assert not P.cpuinfo_has_bf16("")
    assert isinstance(P.cpu_has_native_bf16(), bool)


def test_auto_follows_the_cpu_flag_and_device(monkeypatch):
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    _native(monkeypatch, True)
    assert P.resolve_precision("auto", "cpu") == "bf16"
    assert P.resolve_precision(None, torch.device("cpu")) == "bf16"
    assert P.resolve_precision("auto", "cuda") == "fp32"  # GPUs: fp32 as before
    assert P.resolve_precision("auto", "mps") == "fp32"
    assert P.resolve_precision("fp32", "cpu") == "fp32"
    _native(monkeypatch, False)
    assert P.resolve_precision("auto", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="emulated"):
        assert P.resolve_precision("bf16", "cpu") == "bf16"


def test_environment_replaces_auto(monkeypatch):
    _native(monkeypatch, True)
    monkeypatch.setenv(P.ENV_VAR, "fp32")
    assert P.resolve_precision("auto", "cpu") == "fp32"
    assert P.resolve_precision("bf16", "cpu") == "bf16"  # an explicit argument wins
    monkeypatch.setenv(P.ENV_VAR, " BF16 ")
    _native(monkeypatch, False)
    with pytest.warns(UserWarning, match="emulated"):
        assert P.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setenv(P.ENV_VAR, "fp16")
    with pytest.raises(ValueError, match="environment variable FLOWSEG_PRECISION must be one of"):
        P.resolve_precision("auto", "cpu")


def test_bad_values_fail_clearly(monkeypatch):
    monkeypatch.delenv(P.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=r"precision must be one of 'auto', 'fp32', 'bf16', "
                                         r"got 'half'"):
        P.resolve_precision("half", "cpu")
    with pytest.raises(ValueError, match="bf16' is for training on the CPU"):
        P.resolve_precision("bf16", "cuda")
    s = make_sample("cells", (64, 64), seed=0)
    with pytest.raises(ValueError, match="precision must be one of"):
        train(Model.new(width=8, seed=0), [s.image], [s.labels], epochs=1, crop=32,
              precision="float16")


def test_bf16_training_keeps_float32_and_records_it(tmp_path):
    """Two bf16 steps of a tiny network: finite loss, float32 weights / BN statistics /
    optimizer state, the precision in the result, the record, the checkpoint and the epoch
    events; resuming the checkpoint in fp32 warns."""
    s = [make_sample("cells", (96, 96), seed=k) for k in range(2)]
    ti, tl = [x.image for x in s], [x.labels for x in s]
    kw = {"recipe": "finetune", "crop": 48, "batch_size": 4, "n_per_epoch": 4, "seed": 0,
          "checkpoint_every": 0, "val_every": 100, "threads": 1}
    events = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "precision 'bf16' on a CPU without")
        res = train(Model.new(width=8, seed=0), ti, tl, epochs=2, precision="bf16",
                    checkpoint_path=tmp_path / "a.ckpt", progress=events.append, **kw)
    assert res.precision == "bf16" and np.isfinite(res.history["loss"]).all()
    assert res.model.meta["training"]["config"]["precision"] == "bf16"
    assert [e.info["precision"] for e in events if e.stage == "epoch"] == ["bf16", "bf16"]
    state = res.model.net.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for k, v in state.items() if "running_" in k)
    ck = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert ck["config"]["precision"] == "bf16"
    moments = [t for st in ck["optimizer"]["state"].values() for t in st.values()
               if torch.is_tensor(t) and t.is_floating_point() and t.ndim > 0]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    with pytest.warns(UserWarning, match="precision='fp32', the checkpoint's epochs were "
                                         "trained in 'bf16'"):
        more = train(Model.new(width=8, seed=0), ti, tl, epochs=3, precision="fp32",
                     resume=tmp_path / "a.ckpt", checkpoint_path=tmp_path / "b.ckpt", **kw)
    assert more.precision == "fp32" and more.history["epoch"] == [1, 2, 3]
