"""``ruff check`` is clean on the code (the rules are ``[tool.ruff]`` in pyproject.toml).

The suite is what CI runs (the README's test command), so this is where the lint rules are
enforced.  Skipped when ruff is not installed (it is in the ``test`` extra).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "benchmarks", "scripts", "recipes", "docs"]


def _ruff() -> list[str]:
    try:
        import ruff  # noqa: F401  (the PyPI package ships the binary)
    except ImportError:
        exe = shutil.which("ruff")
        if exe is None:
            pytest.skip("ruff is not installed (pip install ruff, or the test extra)")
        return [exe]
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_is_clean():
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *PATHS],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_finds_a_problem(tmp_path):
    """The check can fail: an unused import in a file under the same configuration."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    r = subprocess.run([*_ruff(), "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                        str(bad)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "F401" in r.stdout, r.stdout + r.stderr
