"""Foundation checks: import isolation of the engine, manifest, version, packaging."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import flowseg

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt",
           "vispy")

_BLOCKER = f"""
import importlib, pkgutil, sys
BLOCKED = {BLOCKED!r}
attempts = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            attempts.append(name)
            raise ImportError('blocked by test: ' + name)
        return None
sys.meta_path.insert(0, Block())
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=300)


def test_import_flowseg_is_light():
    code = _BLOCKER + """
import flowseg
import flowseg.engine
bad = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
assert not bad and not attempts, (bad, attempts)
assert 'torch' not in sys.modules, 'import flowseg must not import torch'
print('ok')
"""
    r = _run(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_engine_modules_never_import_gui():
    code = _BLOCKER + """
import flowseg.engine as eng
names = [m.name for m in pkgutil.walk_packages(eng.__path__, 'flowseg.engine.')]
assert len(names) >= 3, names
failed = {}
for n in names:
    try:
        importlib.import_module(n)
    except ImportError as e:
        failed[n] = str(e)
bad = [m for m in sys.modules if m.split('.')[0] in BLOCKED]
assert not attempts and not bad and not failed, (attempts, bad, failed)
print('imported', len(names))
"""
    r = _run(code)
    assert r.returncode == 0 and "imported" in r.stdout, r.stdout + r.stderr


def test_blocker_detects_gui_import():
    """The isolation test above can fail: a module importing napari is caught."""
    r = _run(_BLOCKER + "import napari\n")
    assert r.returncode != 0 and "blocked by test" in r.stderr


def test_version_single_source():
    assert flowseg.__version__ == metadata.version("napari-flowseg")
    r = subprocess.run([sys.executable, "-m", "flowseg.cli", "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and flowseg.__version__ in r.stdout


def test_manifest_is_the_root_file_and_validates():
    npe2 = pytest.importorskip("npe2")
    pkg_manifest = Path(flowseg.__file__).parent / "napari.yaml"
    assert pkg_manifest.read_text() == (ROOT / "napari.yaml").read_text()
    pm = npe2.PluginManifest.from_file(ROOT / "napari.yaml")
    assert pm.name == "napari-flowseg"
    # discovered through the installed distribution's entry point
    pm2 = npe2.PluginManifest.from_distribution("napari-flowseg")
    assert pm2.name == "napari-flowseg"
    r = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-flowseg"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_wheel_ships_manifest_and_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    wheel = next(tmp_path.glob("napari_flowseg-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "flowseg/napari.yaml" in names
        assert z.read("flowseg/napari.yaml").decode() == (ROOT / "napari.yaml").read_text()
        ep = next(n for n in names if n.endswith("entry_points.txt"))
        eps = z.read(ep).decode()
    assert "[napari.manifest]" in eps and "flowseg:napari.yaml" in eps
    assert "flowseg = flowseg.cli:main" in eps
    models = ROOT / "src" / "flowseg" / "models"
    assert list(models.glob("reference/*.pt"))  # the zoo's frozen style reference
    for model in models.rglob("*.pt"):
        assert f"flowseg/models/{model.relative_to(models).as_posix()}" in names


def test_public_api_exports_progress_protocol_and_samples():
    import flowseg
    from flowseg.engine.data.samples import load_sample
    from flowseg.engine.progress import Cancelled, ProgressEvent

    for name in ("ProgressEvent", "Cancelled", "load_sample"):
        assert name in flowseg.__all__
    assert flowseg.ProgressEvent is ProgressEvent
    assert flowseg.Cancelled is Cancelled
    assert flowseg.load_sample is load_sample
    img, info = flowseg.load_sample("cells")
    assert img.ndim >= 2 and isinstance(info, dict)
