"""Shared pytest configuration.

Tests that need napari / Qt live in ``tests/test_napari_*.py``; they are ignored when napari
is not installed (the ``engine`` tox environment), so the engine suite runs without a GUI stack.
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "flowseg-numba"))

collect_ignore_glob: list[str] = []
if importlib.util.find_spec("napari") is None or importlib.util.find_spec("qtpy") is None:
    collect_ignore_glob += ["test_napari_*.py"]
