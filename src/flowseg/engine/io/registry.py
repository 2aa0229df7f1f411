"""Where models live: one registry of model names for the napari widget, the CLI and Python.

A bare model name is resolved, in this order, to

1. a **bundled** model: ``flowseg/models/<name>.pt`` (shipped with the package);
2. a **user** model: ``<name>.pt`` (or ``.pth``) in :func:`user_model_dir`, where the napari
   Train tab saves (:func:`user_model_path`) -- ``$FLOWSEG_MODEL_DIR`` when set (tests point
   it to a temporary folder), else ``platformdirs.user_data_dir("flowseg")/models``;
3. a model **Cellpose** downloaded: ``<name>`` in :func:`cellpose_models_dir`.

So ``Model.load("my-model")`` and ``flowseg segment --model my-model`` find a model trained in
the widget.  Only files named ``<valid name>.pt`` / ``.pth`` count as models: checkpoints
(``*.ckpt``), temporary files of an interrupted write (``.*.tmp``), hidden files and folders
are ignored.  Training checkpoints of models saved in the user model folder go to a separate
folder (:func:`default_checkpoint_path`), so they do not clutter the model folder.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MODEL_SUFFIXES",
    "RESERVED_NAMES",
    "ModelEntry",
    "available_models",
    "bundled_model_dir",
    "bundled_models",
    "cellpose_models_dir",
    "checkpoint_dir",
    "default_checkpoint_path",
    "find_model",
    "model_entries",
    "user_model_dir",
    "user_model_path",
    "user_models",
    "valid_model_name",
]

MODEL_SUFFIXES = (".pt", ".pth")
#: names that select something else than a model file (``--model auto``: the model zoo)
RESERVED_NAMES = ("auto",)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelEntry:
    """One named model of the registry.

    Attributes
    ----------
    name : str
        The name it loads by (``Model.load(name)``).
    kind : str
        ``"bundled"``, ``"user"`` or ``"cellpose"``.
    path : Path
        The model file.
    label : str
        A unique display label: the name, or ``"<name> (user)"`` for a user model whose name
        a bundled model already takes (that one loads only by its path).
    """

    name: str
    kind: str
    path: Path
    label: str


def bundled_model_dir() -> Path:
    """Folder of the models shipped with the package (``flowseg/models``)."""
    return Path(__file__).resolve().parents[2] / "models"


def user_model_dir(create: bool = False) -> Path:
    """Folder of the models the user trained (``$FLOWSEG_MODEL_DIR`` overrides).

    Parameters
    ----------
    create : bool
        Create the folder (and its parents) if missing.
    """
    env = os.environ.get("FLOWSEG_MODEL_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("flowseg", appauthor=False)) / "models"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoint_dir(create: bool = False) -> Path:
    """Folder for training checkpoints of models saved in the user model folder.

    ``$FLOWSEG_CHECKPOINT_DIR`` when set; else, when ``$FLOWSEG_MODEL_DIR`` is set, the
    folder ``<that folder>-checkpoints`` beside it (so tests never write outside their
    temporary folder); else ``platformdirs.user_cache_dir("flowseg")/checkpoints``.
    """
    env = os.environ.get("FLOWSEG_CHECKPOINT_DIR")
    model_env = os.environ.get("FLOWSEG_MODEL_DIR")
    if env:
        path = Path(env).expanduser()
    elif model_env:
        m = Path(model_env).expanduser()
        path = m.parent / f"{m.name}-checkpoints"
    else:
        import platformdirs

        path = Path(platformdirs.user_cache_dir("flowseg", appauthor=False)) / "checkpoints"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cellpose_models_dir() -> Path:
    """Where Cellpose keeps downloaded models (``$CELLPOSE_LOCAL_MODELS_PATH`` or
    ``~/.cellpose/models``); ``Model.load("cyto3")`` finds them there."""
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".cellpose" / "models"


def _is_model_file(p: Path) -> bool:
    return (p.suffix in MODEL_SUFFIXES and not p.name.startswith(".")
            and _NAME_RE.match(p.stem) is not None and p.is_file())


def _scan(folder: Path) -> dict[str, Path]:
    """``name -> path`` of the model files in ``folder`` (``.pth`` loses to ``.pt``)."""
    if not folder.is_dir():
        return {}
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda q: (q.stem, MODEL_SUFFIXES.index(q.suffix)
                                                     if q.suffix in MODEL_SUFFIXES else 9)):
        if _is_model_file(p):
            out.setdefault(p.stem, p)
    return out


def bundled_models(folder: Path | None = None) -> dict[str, Path]:
    """Models shipped with the package, ``name -> path`` (``folder``: another bundle folder)."""
    return _scan(bundled_model_dir() if folder is None else Path(folder))


def user_models() -> dict[str, Path]:
    """Models in :func:`user_model_dir`, ``name -> path``."""
    return _scan(user_model_dir())


def model_entries(bundled_dir: Path | None = None) -> list[ModelEntry]:
    """Every bundled and user model, bundled first, each with a unique label."""
    out = [ModelEntry(n, "bundled", p, n) for n, p in bundled_models(bundled_dir).items()]
    taken = {e.name for e in out}
    for n, p in user_models().items():
        out.append(ModelEntry(n, "user", p, n if n not in taken else f"{n} (user)"))
    return out


def available_models() -> list[tuple[str, Path]]:
    """``(label, path)`` for every bundled and user model; labels are unique."""
    return [(e.label, e.path) for e in model_entries()]


def _strip_suffix(name: str) -> str:
    for suf in MODEL_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def find_model(name: str, *, bundled_dir: Path | None = None) -> ModelEntry:
    """Resolve a bare model name: bundled, then user, then Cellpose's download folder.

    Parameters
    ----------
    name : str
        A model name (a trailing ``.pt`` / ``.pth`` is ignored).
    bundled_dir : Path, optional
        The bundled-model folder (default :func:`bundled_model_dir`).

    Raises
    ------
    ValueError
        If no model has that name; the message lists the names that exist.
    """
    s = _strip_suffix(str(name).strip())
    bundled = bundled_models(bundled_dir)
    if s in bundled:
        return ModelEntry(s, "bundled", bundled[s], s)
    user = user_models()
    if s in user:
        return ModelEntry(s, "user", user[s], s if s not in bundled else f"{s} (user)")
    cp = cellpose_models_dir() / s
    if s and cp.is_file():
        return ModelEntry(s, "cellpose", cp, s)
    raise ValueError(
        f"no bundled model named {s!r} (available: {', '.join(bundled) or 'none bundled'}), "
        f"no user model of that name in {user_model_dir()} (available: "
        f"{', '.join(user) or 'none'}) and no Cellpose model {cp}; pass a path to a flowseg "
        "or Cellpose 1-3 model file instead")


def valid_model_name(name: str) -> str:
    """Return ``name`` stripped (and without ``.pt``), or raise ValueError if it cannot be a
    model file name."""
    name = _strip_suffix((name or "").strip())
    if not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r} is not valid: use 1-64 letters, digits, '.', "
                         "'_' or '-', starting with a letter or digit")
    if name.lower() in RESERVED_NAMES:
        raise ValueError(f"model name {name!r} is reserved (--model auto chooses a model per "
                         "image); choose another name")
    return name


def user_model_path(name: str) -> Path:
    """Path of a new user model called ``name`` (the folder is created); a model saved
    there loads by ``Model.load(name)``."""
    return user_model_dir(create=True) / f"{valid_model_name(name)}.pt"


def default_checkpoint_path(save_path: str | os.PathLike) -> Path:
    """Where training keeps the checkpoint of a model saved to ``save_path``.

    A model saved in the user model folder gets ``<checkpoint_dir()>/<file name>.ckpt``
    (the folder is created), so the model folder holds models only; any other model gets
    ``<save_path>.ckpt`` beside it.
    """
    p = Path(save_path).expanduser()
    try:
        in_user = p.parent.resolve() == user_model_dir().resolve()
    except OSError:
        in_user = False
    if in_user:
        return checkpoint_dir(create=True) / f"{p.name}.ckpt"
    return p.with_name(p.name + ".ckpt")
