"""``flowseg models``: list the models that load by name, and where they live.

:mod:`flowseg.cli` registers it with :func:`register`.  One line per bundled and user model
(:mod:`flowseg.engine.io.registry`): name, kind, network width, the diameter it works at,
whether it has a style centroid (so ``--model auto`` can choose it) and its file.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_models_args", "register", "run_models"]


def add_models_args(p: argparse.ArgumentParser) -> None:
    """Arguments of ``flowseg models`` (none yet besides ``--help``)."""
    p.description = ("List the bundled and user models that load by name (Model.load(name), "
                     "flowseg segment --model NAME), and the folders they are read from.")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command to the ``flowseg`` parser."""
    p = sub.add_parser("models", help="list the models that load by name (bundled, yours)")
    add_models_args(p)
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    """Print the model table; returns the exit code."""
    from .engine.io.modelfile import ModelFileError, load_model_file
    from .engine.io.registry import cellpose_models_dir, model_entries, user_model_dir

    rows = [("name", "kind", "width", "diameter", "auto", "file")]
    for e in model_entries():
        try:
            _, meta = load_model_file(e.path)
        except (ModelFileError, OSError) as exc:
            rows.append((e.label, e.kind, "?", "?", "-", f"{e.path}  (unreadable: {exc})"))
            continue
        nbase = meta.get("nbase") or [0, 0]
        st = meta.get("style")
        rows.append((e.label, e.kind, str(nbase[1]), f"{float(meta.get('diam_mean', 0)):g}",
                     "yes" if isinstance(st, dict) and st.get("centroid") else "-",
                     str(e.path)))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"user models: {user_model_dir()} ($FLOWSEG_MODEL_DIR overrides); Cellpose models "
          f"by name from {cellpose_models_dir()}", file=sys.stderr)
    return 0
