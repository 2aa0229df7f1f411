"""One model registry: bundled, user and Cellpose models by name; checkpoint folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from flowseg import _model_registry
from flowseg.cli import main
from flowseg.engine.data.synthetic import make_sample
from flowseg.engine.inference.model import Model
from flowseg.engine.io import registry


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(d))
    monkeypatch.delenv("FLOWSEG_CHECKPOINT_DIR", raising=False)
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "cellpose"))
    return d


def test_model_saved_where_the_widget_saves_loads_by_name(user_dir, tmp_path, capsys):
    path = registry.user_model_path("my-cells.v2")  # what the Train tab calls
    assert path.parent == user_dir and user_dir.is_dir()
    Model.new(width=3, diam_mean=21.0, seed=0).save(path)
    m = Model.load("my-cells.v2")
    assert m.net.nbase[1] == 3 and m.diam_mean == 21.0 and m.meta["path"] == str(path)
    assert Model.load("my-cells.v2.pt").net.nbase[1] == 3
    entry = registry.find_model("my-cells.v2")
    assert (entry.kind, entry.path) == ("user", path)
    # and by the CLI
    img = tmp_path / "a.tif"
    s = make_sample("cells", (48, 48), diameter=16, seed=0)
    tifffile.imwrite(img, (s.image[..., 0] * 1000).astype(np.uint16))
    rc = main(["segment", str(img), "--model", "my-cells.v2", "--diameter", "21",
               "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0
    assert tifffile.imread(tmp_path / "out" / "a_masks.tif").shape == (48, 48)
    assert str(path) in capsys.readouterr().err


def test_bundled_names_come_first_and_labels_are_unique(user_dir):
    bundled = registry.bundled_models()
    if "cyto" not in bundled:
        pytest.skip("bundled 'cyto' model not installed")
    user_dir.mkdir()
    Model.new(width=2, seed=0).save(user_dir / "cyto.pt")
    Model.new(width=2, seed=0).save(user_dir / "mine.pt")
    assert registry.find_model("cyto").path == bundled["cyto"]
    assert Model.load("cyto").net.nbase[1] != 2
    labels = dict(registry.available_models())
    assert labels["cyto"] == bundled["cyto"]
    assert labels["cyto (user)"] == user_dir / "cyto.pt" and labels["mine"] == user_dir / "mine.pt"
    assert len(labels) == len(registry.available_models())
    # the old module re-exports the same functions (the widgets import from it)
    assert _model_registry.available_models is registry.available_models
    assert _model_registry.user_model_path is registry.user_model_path


def test_unknown_name_lists_what_exists(user_dir):
    user_dir.mkdir()
    Model.new(width=2, seed=0).save(user_dir / "mine.pt")
    with pytest.raises(ValueError) as info:
        Model.load("no-such-model")
    msg = str(info.value)
    assert "'no-such-model'" in msg and "mine" in msg and str(user_dir) in msg
    for name in registry.bundled_models():
        assert name in msg
    assert main(["segment", "--sample", "--model", "no-such-model", "--no-progress"]) == 2


def test_only_model_files_count(user_dir):
    user_dir.mkdir()
    Model.new(width=2, seed=0).save(user_dir / "good.pt")
    Model.new(width=2, seed=0).save(user_dir / "alt.pth")
    for junk in ("good.pt.ckpt", ".good.pt.x1y2.tmp", ".hidden.pt", "notes.txt", "bad name.pt"):
        (user_dir / junk).write_bytes(b"x")
    (user_dir / "folder.pt").mkdir()
    assert sorted(registry.user_models()) == ["alt", "good"]
    assert Model.load("alt").net.nbase[1] == 2
    with pytest.raises(ValueError, match="no bundled model named 'folder'"):
        registry.find_model("folder")


def test_cellpose_folder_is_last(user_dir, tmp_path):
    cp = tmp_path / "cellpose"
    cp.mkdir()
    Model.new(width=3, seed=0).export_cellpose(cp / "cyto3")
    assert registry.find_model("cyto3").kind == "cellpose"
    assert Model.load("cyto3").meta["source"] == "cellpose"


def test_default_checkpoint_path(user_dir, tmp_path, monkeypatch):
    p = registry.user_model_path("mine")
    ck = registry.default_checkpoint_path(p)
    assert ck.name == "mine.pt.ckpt" and ck.parent.is_dir()
    assert ck.parent != user_dir and user_dir not in ck.parents
    assert ck.parent == tmp_path / "models-checkpoints"  # beside the test's model folder
    ck.write_bytes(b"x")
    assert registry.user_models() == {}  # nothing new in the model folder
    other = tmp_path / "elsewhere" / "m.pt"
    assert registry.default_checkpoint_path(other) == tmp_path / "elsewhere" / "m.pt.ckpt"
    monkeypatch.setenv("FLOWSEG_CHECKPOINT_DIR", str(tmp_path / "ck"))
    assert registry.default_checkpoint_path(p) == tmp_path / "ck" / "mine.pt.ckpt"


def test_default_folders_use_platformdirs(monkeypatch):
    import platformdirs

    monkeypatch.delenv("FLOWSEG_MODEL_DIR", raising=False)
    monkeypatch.delenv("FLOWSEG_CHECKPOINT_DIR", raising=False)
    data = platformdirs.user_data_dir("flowseg", appauthor=False)
    cache = platformdirs.user_cache_dir("flowseg", appauthor=False)
    assert registry.user_model_dir() == Path(data) / "models"
    assert registry.checkpoint_dir() == Path(cache) / "checkpoints"


def test_valid_model_name():
    assert registry.valid_model_name(" a.b-c_1.pt ") == "a.b-c_1"
    for bad in ("", "-x", "a/b", "a b", "x" * 65):
        with pytest.raises(ValueError, match="not valid"):
            registry.valid_model_name(bad)


def test_flowseg_models_lists_bundled_and_user_models(tmp_path, monkeypatch, capsys):
    from flowseg.cli import main
    from flowseg.engine.inference.model import Model

    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(tmp_path / "models"))
    from flowseg.engine.io.registry import user_model_path

    Model.new(width=8, seed=0).save(user_model_path("mine"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "nuclei" in rows and "cyto" in rows and "mine" in rows
    assert "bundled" in rows["nuclei"] and "bundled" not in rows["mine"]
