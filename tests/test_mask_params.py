"""MaskParams: one definition of the mask parameters and their defaults, used everywhere."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

import flowseg
from flowseg._cli_common import add_mask_args, mask_params
from flowseg.cli import build_parser
from flowseg.engine.flows.masks import compute_masks
from flowseg.engine.flows.params import MaskParams
from flowseg.engine.inference.model import Model
from flowseg.engine.inference.result import Segmentation

FIELDS = [f.name for f in dataclasses.fields(MaskParams)]


def test_defaults_are_the_documented_ones_and_frozen():
    p = MaskParams()
    assert p.as_dict() == {"cellprob_threshold": 0.0, "flow_threshold": 0.4, "min_size": 15,
                           "niter": None, "stitch_threshold": 0.0, "sampling": "exact"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.min_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("func", [Model.segment, flowseg.flows_to_masks,
                                  Segmentation.recompute])
def test_engine_signatures_take_their_defaults_from_mask_params(func):
    sig = inspect.signature(func).parameters
    defaults = MaskParams()
    shared = [n for n in FIELDS if n in sig]
    assert len(shared) >= 3, shared
    for name in shared:
        want = None if func is Segmentation.recompute else getattr(defaults, name)
        assert sig[name].default == want, name


def test_model_methods_have_explicit_keywords():
    for func in (Model.segment, Model.estimate_diameter):
        kinds = {p.kind for p in inspect.signature(func).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, func
        assert func.__doc__ and "Parameters" in func.__doc__


@pytest.mark.parametrize("command", ["segment", "track", "eval"])
def test_cli_defaults_are_mask_params(command):
    parser = build_parser()
    need = {"segment": ["PATH"], "track": ["movie.tif"], "eval": ["--dir", "d", "--model", "m"]}
    args = parser.parse_args([command, *need[command]])
    got = mask_params(args)
    want = MaskParams()
    assert got == want


def test_cli_values_are_validated_with_the_parameter_named(capsys):
    import argparse

    p = argparse.ArgumentParser()
    add_mask_args(p)
    p.add_argument("--stitch", type=float, default=0.0)
    assert mask_params(p.parse_args(["--min-size", "3", "--stitch", "0.5"])) == MaskParams(
        min_size=3, stitch_threshold=0.5)
    with pytest.raises(ValueError, match="flow_threshold"):
        mask_params(p.parse_args(["--flow-threshold", "-1"]))
    with pytest.raises(ValueError, match="stitch_threshold"):
        mask_params(p.parse_args(["--stitch", "1.5"]))


@pytest.mark.parametrize("bad, word", [
    ({"flow_threshold": -0.1}, "flow_threshold"), ({"min_size": -2}, "min_size"),
    ({"min_size": 2.5}, "min_size"), ({"niter": 0}, "niter"),
    ({"stitch_threshold": 2.0}, "stitch_threshold"), ({"sampling": "fast"}, "sampling"),
    ({"cellprob_threshold": float("nan")}, "cellprob_threshold"),
    ({"cellprob_threshold": "high"}, "cellprob_threshold"),
])
def test_out_of_range_values_are_refused_by_name(bad, word):
    with pytest.raises(ValueError, match=word):
        MaskParams(**bad)


def test_values_are_normalised_and_replace_keeps_none():
    p = MaskParams(min_size=np.int64(20), niter=50.0, flow_threshold=None)
    assert type(p.min_size) is int and p.niter == 50 and p.flow_threshold == 0.0
    q = p.replace(min_size=None, cellprob_threshold=-1)
    assert q.min_size == 20 and q.cellprob_threshold == -1.0 and q is not p
    assert MaskParams.from_dict({"min_size": 4, "do_3d": True}) == MaskParams(min_size=4)


def test_compute_masks_and_recompute_use_mask_params():
    from flowseg.engine.data.synthetic import make_labels

    labels = make_labels((96, 96), 17.0, seed=3)
    flows = flowseg.masks_to_flows(labels)
    cp = np.where(labels > 0, 4.0, -4.0).astype(np.float32)
    base = compute_masks(flows, cp)
    assert base.max() > 2
    big = MaskParams(min_size=int(np.bincount(base.ravel())[1:].max()) + 1)
    assert compute_masks(flows, cp, big).max() == 0  # every object below min_size
    with pytest.raises(TypeError, match="MaskParams"):
        compute_masks(flows, cp, {"min_size": 3})  # type: ignore[arg-type]
    seg = Segmentation(masks=base, flows=flows, cellprob=cp, styles=np.zeros(4, np.float32),
                       diameter=17.0, params=MaskParams().as_dict())
    again = seg.recompute(min_size=big.min_size)
    assert again.masks.max() == 0 and again.mask_params == MaskParams(min_size=big.min_size)
    assert again.params["flow_threshold"] == 0.4 and seg.params["min_size"] == 15
    with pytest.raises(ValueError, match="min_size"):
        seg.recompute(min_size=-5)
