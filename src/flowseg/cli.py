"""The ``flowseg`` command: ``flowseg segment``, ``train``, ``eval`` and ``track``.

Each sub-command lives in its own ``_add_*`` (arguments) / ``_run_*`` (work) pair and calls
the same engine functions as the napari widget; progress goes to tqdm through the engine's
progress protocol (:mod:`flowseg.engine.progress`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Optional

from ._cli_models import register as _add_models
from ._cli_segment import add_segment_args, run_segment
from ._cli_track import add_track_args, run_track
from ._cli_train import add_eval_args, add_train_args, run_eval, run_train
from ._version import __version__


# ---------------------------------------------------------------- segment (issue: network)
def _add_segment(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment images into cell masks (try: --sample)")
    add_segment_args(p)
    p.set_defaults(func=_run_segment)


def _run_segment(args: argparse.Namespace) -> int:
    return run_segment(args)


# ---------------------------------------------------------------- train / eval (issue: training)
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a model on image + mask folders")
    add_train_args(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    return run_train(args)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on image + mask folders (AP, per-image CSV)")
    add_eval_args(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    return run_eval(args)


# ---------------------------------------------------------------- track (issue: time-lapse)
def _add_track(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="segment every frame of a time-lapse and link cells over "
                                     "time (CTC export)")
    add_track_args(p)
    p.set_defaults(func=_run_track)


def _run_track(args: argparse.Namespace) -> int:
    return run_track(args)


# ---------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowseg`` command."""
    parser = argparse.ArgumentParser(prog="flowseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"flowseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_segment(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_track(sub)

    _add_models(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``flowseg`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as exc:  # our InputErrors, missing / unwritable paths
        print(f"flowseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"flowseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
