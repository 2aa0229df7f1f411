"""Where models live: bundled weights and the user's own trained models.

No napari or Qt here, so the CLI could use it too.  The user model folder is
``platformdirs.user_data_dir("flowseg")/models``, or ``$FLOWSEG_MODEL_DIR`` when set
(tests point it to a temporary folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["user_model_dir", "bundled_models", "user_models", "available_models",
           "user_model_path", "valid_model_name"]

MODEL_SUFFIXES = (".pt", ".pth")


def user_model_dir(create: bool = False) -> Path:
    """Folder of the models the user trained (``$FLOWSEG_MODEL_DIR`` overrides)."""
    env = os.environ.get("FLOWSEG_MODEL_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("flowseg", appauthor=False)) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _scan(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix in MODEL_SUFFIXES}


def bundled_models() -> dict[str, Path]:
    """Models shipped with the package (``flowseg/models/<name>.pt``), name -> path."""
    return _scan(Path(__file__).parent / "models")


def user_models() -> dict[str, Path]:
    """Models in :func:`user_model_dir`, name -> path."""
    return _scan(user_model_dir())


def available_models() -> list[tuple[str, Path]]:
    """``(label, path)`` for every bundled and user model; labels are unique."""
    out = [(name, path) for name, path in bundled_models().items()]
    taken = {label for label, _ in out}
    for name, path in user_models().items():
        label = name if name not in taken else f"{name} (user)"
        out.append((label, path))
    return out


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def valid_model_name(name: str) -> str:
    """Return ``name`` stripped, or raise ValueError if it cannot be a file name."""
    name = (name or "").strip()
    if name.endswith(".pt"):
        name = name[:-3]
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} is not valid: use 1-64 letters, digits, '.', "
                         "'_' or '-', starting with a letter or digit")
    return name


def user_model_path(name: str) -> Path:
    """Path of a new user model called ``name`` (the folder is created)."""
    return user_model_dir(create=True) / f"{valid_model_name(name)}.pt"
