"""Model zoo: style centroids, nearest-centroid choice, ``--model auto`` acceptance."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference import reference as zref
from flowseg.engine.inference import zoo
from flowseg.engine.inference.model import Model
from flowseg.engine.io import registry

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


#: fingerprints of the full bundled networks the style reference was frozen from (the values
#: the centroids stored in the bundled models and in users' models name)
FROZEN = {"nuclei": "936be3248af69267", "cyto": "eddcaa2c8658d51d"}


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """Tiny untrained 'nuclei' and 'cyto' as the bundled models and, frozen from them, as the
    style references; an empty user folder."""
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    Model.new(width=4, seed=0).save(bundled / "nuclei.pt")
    Model.new(width=3, seed=1).save(bundled / "cyto.pt")
    monkeypatch.setattr(registry, "bundled_model_dir", lambda: bundled)
    for name in ("nuclei", "cyto"):
        zref.freeze_reference(bundled / f"{name}.pt", tmp_path / "reference" / f"{name}.pt")
    monkeypatch.setattr(zref, "reference_dir", lambda: tmp_path / "reference")
    user = tmp_path / "user"
    user.mkdir()
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(user))
    return user


def _images():
    a = make_sample("nuclei", (96, 96), seed=1).image[..., 0]
    b = make_sample("phase", (96, 96), seed=2, with_nuclei=False).image[..., 0]
    return a, b


def _user_model(folder: Path, name: str, style: dict | None) -> Path:
    m = Model.new(width=2, seed=0)
    if style is not None:
        m.meta["style"] = style
    return m.save(folder / f"{name}.pt")


def test_training_style_counts_repeats(tiny_zoo):
    a, b = _images()
    st = zoo.training_style([a, a, b])
    sa, sb = zoo.image_style(a), zoo.image_style(b)
    assert np.linalg.norm(sa) == pytest.approx(1.0, abs=1e-5)
    assert st["n"] == 3 and st["size"] == zoo.DEFAULT_SIZE
    assert st["reference"] == list(zoo.DEFAULT_REFERENCE) == ["nuclei", "cyto"]
    assert np.allclose(st["centroid"], (2 * sa + sb) / 3, atol=1e-6)
    assert np.allclose(zoo.training_style([a, a.copy(), b])["centroid"], st["centroid"])
    refs = [Model.load(registry.bundled_model_dir() / f"{n}.pt") for n in st["reference"]]
    assert st["fingerprint"] == [zoo.weights_fingerprint(m.net.state_dict()) for m in refs]
    assert sa.shape == (8 * 4 + 8 * 3,)  # both reference styles, concatenated
    spread = np.mean([np.linalg.norm(s - np.asarray(st["centroid"])) for s in (sa, sa, sb)])
    assert st["spread"] == pytest.approx(spread)
    with pytest.raises(ValueError, match="at least one image"):
        zoo.training_style([])


def test_encoder_style_is_the_networks_style(tiny_zoo):
    from flowseg.engine.network.tiling import run_tiled

    x = np.random.default_rng(0).random((70, 90, 2), dtype=np.float32)
    net = Model.load(registry.bundled_model_dir() / "nuclei.pt").net
    _, full = run_tiled(net, x, whole_max=1 << 30)  # the whole network on one tile
    assert np.allclose(zoo._encoder_style(net, x), full, atol=1e-5)
    frozen = zoo.reference_models(("nuclei",))[0][1].net  # the encoder alone
    assert np.array_equal(zoo._encoder_style(frozen, x), zoo._encoder_style(net, x))


def test_image_style_of_volumes_and_big_images(tiny_zoo):
    a, b = _images()
    vol = np.stack([b, a, b])
    assert np.allclose(zoo.image_style(vol, z_axis=0), zoo.image_style(a), atol=1e-6)
    big = np.kron(a, np.ones((4, 4), np.float32))  # 384 px: shrunk to 96 by area averaging
    assert np.allclose(zoo.image_style(big, size=96), zoo.image_style(a, size=96), atol=1e-4)
    assert not np.allclose(zoo.image_style(big, size=None), zoo.image_style(a), atol=1e-3)
    with pytest.raises(ValueError, match="'nope'.*not a frozen style reference"):
        zoo.image_style(a, reference=("nope",))


def test_choose_model_picks_the_nearest_centroid(tiny_zoo):
    a, b = _images()
    _user_model(tiny_zoo, "for-a", zoo.training_style([a]))
    _user_model(tiny_zoo, "for-b", zoo.training_style([b]))
    _user_model(tiny_zoo, "plain", None)  # no centroid: not a candidate by default
    name, dist = zoo.choose_model(a)
    assert name == "for-a" and set(dist) == {"for-a", "for-b"}
    assert dist["for-a"] == pytest.approx(0.0, abs=1e-6) and dist["for-b"] > 0.01
    assert zoo.choose_model(b)[0] == "for-b"
    assert zoo.choose_model(a, candidates=["for-b"])[0] == "for-b"
    assert Model.load(zoo.choose_model(b)[0]).net.nbase[1] == 2  # the name loads
    with pytest.raises(ValueError, match="'plain'.*no style centroid"):
        zoo.choose_model(a, candidates=["plain"])


def test_centroids_of_another_reference_are_left_out(tiny_zoo):
    a, _ = _images()
    good = zoo.training_style([a])
    _user_model(tiny_zoo, "stale", {**good, "fingerprint": ["0" * 16, "1" * 16]})
    with pytest.warns(UserWarning, match="'stale'.*another reference"), \
            pytest.raises(ValueError, match="no model with a style centroid"):
        zoo.choose_model(a)
    _user_model(tiny_zoo, "fresh", good)
    with pytest.warns(UserWarning, match="'stale'"):
        assert zoo.choose_model(a)[0] == "fresh"


# ------------------------------------------------------------------ the frozen reference
def _bundled_or_skip(name: str) -> Model:
    """The bundled model ``name`` while it is still the network its reference was frozen from
    (after it is retrained and replaced there is nothing to compare with)."""
    path = registry.bundled_model_dir() / f"{name}.pt"
    if not path.is_file():
        pytest.skip(f"no bundled model {path}")
    m = Model.load(path, device="cpu")
    fp = zoo.weights_fingerprint(m.net.state_dict())
    if fp != FROZEN[name]:
        pytest.skip(f"bundled {name!r} ({fp}) is no longer the network the style reference was "
                    f"frozen from ({FROZEN[name]})")
    return m


@pytest.mark.parametrize("name", ["nuclei", "cyto"])
def test_frozen_reference_gives_the_bundled_networks_styles(name):
    """Bitwise the styles of the full bundled network (2D, 2-channel and a shrunk image)."""
    full = _bundled_or_skip(name)
    (_, ref, fp), = zoo.reference_models((name,), device="cpu")
    assert fp == FROZEN[name] and ref.nchan == full.nchan and ref.normalize == full.normalize
    for img in (make_sample("nuclei", (96, 112), seed=3).image,
                make_sample("cells", (128, 96), seed=4).image,
                make_sample("phase", (300, 272), seed=5).image):  # shrunk to 256
        a, b = zoo._reference_style(ref, img), zoo._reference_style(full, img)
        assert np.array_equal(a, b)
        assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)


def test_frozen_fingerprints_are_those_the_stored_centroids_name():
    refs = zoo.reference_models(device="cpu")
    assert [(n, fp) for n, _, fp in refs] == list(FROZEN.items())
    assert all(r.fingerprint == FROZEN[n] for n, r, _ in refs)
    for path in registry.bundled_models().values():
        st = zoo.model_style(torch.load(path, map_location="cpu", weights_only=True)["meta"])
        if st is not None:  # every bundled centroid is in the frozen space
            assert st["reference"] == list(FROZEN) and st["fingerprint"] == list(FROZEN.values())


def test_replacing_a_bundled_model_keeps_the_style_space(tmp_path, monkeypatch):
    """A retrained bundled 'cyto' (other weights, same stored centroid) changes neither the
    styles nor the candidates of the choice."""
    bundled = registry.bundled_model_dir()
    if not all(zoo.model_style(Model.load(bundled / f"{n}.pt")) for n in FROZEN):
        pytest.skip("bundled models without style centroids (run recipes/zoo_centroids.py)")
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(tmp_path / "user"))  # no user models
    a = make_sample("nuclei", (96, 96), seed=1).image[..., 0]
    before = zoo.image_style(a, device="cpu")
    _, dist0 = zoo.choose_model(a, device="cpu")
    new = tmp_path / "bundled"
    new.mkdir()
    (new / "nuclei.pt").write_bytes((bundled / "nuclei.pt").read_bytes())
    obj = torch.load(bundled / "cyto.pt", map_location="cpu", weights_only=True)
    w = obj["state_dict"]["downsample.down.res_down_0.conv.conv_0.2.weight"]
    obj["state_dict"]["downsample.down.res_down_0.conv.conv_0.2.weight"] = w * 0.5 + 0.01
    torch.save(obj, new / "cyto.pt")
    monkeypatch.setattr(registry, "bundled_model_dir", lambda: new)
    assert registry.bundled_models()["cyto"] == new / "cyto.pt"
    replaced = Model.load(new / "cyto.pt", device="cpu")
    assert zoo.weights_fingerprint(replaced.net.state_dict()) != FROZEN["cyto"]
    assert np.array_equal(zoo.image_style(a, device="cpu"), before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no centroid left out
        name, dist = zoo.choose_model(a, device="cpu")
    assert {"nuclei", "cyto"} <= set(dist) and dist == dist0


def test_missing_or_damaged_reference_is_a_clear_error(tmp_path, monkeypatch):
    good = zref.reference_dir() / "cyto.pt"
    cases = {"missing": None, "garbage": b"not a torch file at all",
             "truncated": good.read_bytes()[:100_000], "empty": b""}
    obj = torch.load(good, map_location="cpu", weights_only=True)
    k = next(iter(obj["state_dict"]))
    obj["state_dict"][k] = obj["state_dict"][k] + 1  # bit rot in the weights
    torch.save(obj, tmp_path / "tampered.pt")
    cases["tampered"] = (tmp_path / "tampered.pt").read_bytes()
    torch.save({"format": "flowseg-model", "state_dict": {}}, tmp_path / "other.pt")
    cases["other"] = (tmp_path / "other.pt").read_bytes()
    for case, data in cases.items():
        folder = tmp_path / case
        folder.mkdir()
        if data is not None:
            (folder / "cyto.pt").write_bytes(data)
        monkeypatch.setattr(zref, "reference_dir", lambda f=folder: f)
        want = "is missing.*installation is incomplete" if data is None else "is damaged"
        with pytest.raises(zoo.StyleReferenceError, match=f"style reference .*cyto.*{want}"):
            zoo.reference_models(("cyto",), device="cpu")
    assert issubclass(zoo.StyleReferenceError, ValueError)
    with pytest.raises(zoo.StyleReferenceError, match="not a reference name"):
        zoo.reference_models(("../models/cyto",))


def test_freeze_reference_refuses_to_overwrite(tmp_path):
    Model.new(width=2, seed=0).save(tmp_path / "m.pt", half=True)
    out = zref.freeze_reference(tmp_path / "m.pt", tmp_path / "ref" / "m.pt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zref.freeze_reference(tmp_path / "m.pt", out)
    sd = torch.load(out, weights_only=True)["state_dict"]
    assert sd and all(k.startswith("downsample.") for k in sd)
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float16}
    ref = zref.load_style_reference(out, device="cpu")
    full = Model.load(tmp_path / "m.pt", device="cpu")
    assert ref.fingerprint == zoo.weights_fingerprint(full.net.state_dict())
    assert zref.freeze_reference(tmp_path / "m.pt", out, overwrite=True) == out


def test_write_style_keeps_the_weights_bitwise(tmp_path):
    m = Model.new(width=3, seed=0)
    m.meta["size_model"] = {"A": [0.0] * 24, "b": 3.0}
    path = m.save(tmp_path / "m.pt", half=True)
    before = torch.load(path, weights_only=True)
    style = {"version": 1, "reference": ["nuclei"], "fingerprint": ["ab"], "size": 256,
             "centroid": [0.1, 0.2], "n": 1, "spread": 0.0}
    zoo.write_style(path, style)
    after = torch.load(path, weights_only=True)
    assert after["meta"] == {**before["meta"], "style": style}
    sd0, sd1 = before["state_dict"], after["state_dict"]
    assert sd0.keys() == sd1.keys()
    assert all(sd0[k].dtype == sd1[k].dtype and torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert zoo.model_style(Model.load(path)) == style
    m.export_cellpose(tmp_path / "cp")
    with pytest.raises(ValueError, match="not a flowseg model file"):
        zoo.write_style(tmp_path / "cp", style)


# ------------------------------------------------------------------ acceptance on real data
def _val_images(source: str, kind: str | None, limit: int) -> list[tuple[str, np.ndarray]]:
    sys.path.insert(0, str(REPO / "recipes"))
    from data import image_kind

    from flowseg.engine.io.datasets import read_image

    names = (REPO / "recipes" / "splits" / f"{source}_val.txt").read_text().split()
    out = []
    for n in names:
        img = np.asarray(read_image(DATA / source / "train" / n))
        if kind is None or image_kind(img) == kind:
            out.append((n, img))
        if len(out) == limit:
            break
    return out


def test_auto_picks_nuclei_for_dsb_fluorescence_and_cyto_for_usiigaci():
    """Issue 17 acceptance: >= 90 % right picks on the fixed validation splits (the first
    30 DSB fluorescence images of the split, all 6 Usiigaci images; ~0.2 s per image)."""
    if not (DATA / "dsb2018" / "train").is_dir() or not (DATA / "usiigaci" / "train").is_dir():
        pytest.skip(f"training data not found at {DATA} (../shared/data beside the repo)")
    bundled = registry.bundled_models()
    if not all(n in bundled and zoo.model_style(Model.load(n)) for n in ("nuclei", "cyto")):
        pytest.skip("bundled models without style centroids (run recipes/zoo_centroids.py)")
    for source, kind, want, limit in (("dsb2018", "fluorescence", "nuclei", 30),
                                      ("usiigaci", None, "cyto", 6)):
        items = _val_images(source, kind, limit)
        assert len(items) == limit
        picks = {n: zoo.choose_model(img, candidates=["nuclei", "cyto"])[0] for n, img in items}
        wrong = [n for n, p in picks.items() if p != want]
        rate = 1 - len(wrong) / len(picks)
        assert rate >= 0.9, f"{source}: {want!r} picked for {rate:.0%}; wrong: {wrong}"
