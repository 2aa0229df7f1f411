"""Shared pytest configuration.

Tests that need napari / Qt live in ``tests/gui/``; they are ignored when napari is not
installed (the ``engine`` tox environment), so the engine suite runs without a GUI stack.  The
fixtures here are shared by both; helpers shared by GUI tests are imported from
``tests/gui/test_napari_widget.py`` (``from test_napari_widget import ...``: pytest puts each
test file's folder on ``sys.path``).
"""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("NUMBA_CACHE_DIR",
                      os.path.join(os.path.expanduser("~"), ".cache", "flowseg-numba"))
# training tests do not depend on the CPU: fp32 unless asked (FLOWSEG_PRECISION=auto or bf16
# runs them as a user's machine would; tests/test_precision.py sets it itself)
os.environ.setdefault("FLOWSEG_PRECISION", "fp32")

collect_ignore_glob: list[str] = []
if importlib.util.find_spec("napari") is None or importlib.util.find_spec("qtpy") is None:
    collect_ignore_glob += ["gui/*"]


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """A user model folder (``FLOWSEG_MODEL_DIR``) holding one tiny untrained model."""
    from flowseg.engine.inference.model import Model

    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("FLOWSEG_MODEL_DIR", str(d))
    Model.new(width=8, nchan=2, diam_mean=17.0, seed=0).save(d / "tiny.pt")
    return d


@pytest.fixture
def peer_python() -> str:
    """The reference Cellpose 3.1 python (``FLOWSEG_PEER_PYTHON``); skips the test without it."""
    py = os.environ.get("FLOWSEG_PEER_PYTHON")
    if not py:
        pytest.skip("FLOWSEG_PEER_PYTHON not set")
    return py


_GUI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gui")


def pytest_collection_modifyitems(config, items):
    """Mark the tests under ``tests/gui/`` ``gui`` (``pytest -m "not gui"``: no display needed)."""
    for item in items:
        if os.path.commonpath([str(item.path), _GUI]) == _GUI:
            item.add_marker(pytest.mark.gui)
