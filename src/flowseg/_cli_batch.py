"""Batch semantics of ``flowseg segment`` and ``flowseg eval``: a bad file never stops a run.

* :func:`expand_inputs` turns the command line's paths (files, folders, glob patterns) into
  :class:`Input` entries without reading anything; a path that does not exist, a folder
  without images or a file of another type becomes an entry that fails at its turn.
* :class:`Batch` runs one step per input: each file is read and checked when its turn
  comes; a failure is reported on one line (``name: reason``) and the run goes on.
  :meth:`Batch.finish` prints the summary (``"12 segmented, 1 failed"``) and returns the
  exit code: 0 when every input succeeded, 1 when some failed, 2 when none succeeded.

Ctrl-C is never swallowed: it ends the run (outputs are written atomically, so no
half-written file is left behind).
"""

from __future__ import annotations

import glob
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ._cli_common import IMAGE_SUFFIXES, is_output

__all__ = ["Batch", "Input", "expand_inputs", "failure_reason"]

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Input:
    """One input of a batch: a file to process, or what is wrong with a command-line path."""

    label: str
    path: Path | None
    error: str | None = None


def _scan(folder: Path) -> list[Path]:
    return sorted(q for q in folder.iterdir()
                  if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES and not is_output(q)
                  and not q.name.startswith("."))


def expand_inputs(paths: list[str], *, keep_dirs: Callable[[Path], bool] | None = None
                  ) -> list[Input]:
    """The inputs named by ``paths``: files, folders (scanned, not recursively, skipping
    our own outputs and hidden files) and glob patterns (``"imgs/*.tif"``).

    ``keep_dirs(path)`` marks folders that are inputs themselves (zarr stores).  Nothing
    is read; problems become :class:`Input` entries with an ``error``.
    """
    out: list[Input] = []
    for s in paths:
        p = Path(s).expanduser()
        if not p.exists() and any(c in s for c in _GLOB_CHARS):
            found = sorted(Path(q) for q in glob.glob(str(p)))
            if not found:
                out.append(Input(s, None, "no file matches this pattern"))
            for q in found:
                out += expand_inputs([str(q)], keep_dirs=keep_dirs) if q.is_dir() else \
                    [_file(q)]
            continue
        if p.is_dir() and not (keep_dirs and keep_dirs(p)):
            found = _scan(p)
            if not found:
                out.append(Input(str(p), None, f"no images ({', '.join(IMAGE_SUFFIXES)}) "
                                               "in this folder"))
            out += [Input(str(q), q) for q in found]
        elif p.exists():
            out.append(_file(p) if p.is_file() else Input(str(p), p))
        else:
            out.append(Input(str(p), None, "no such file or folder"))
    return out


def _file(p: Path) -> Input:
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return Input(str(p), None, f"unsupported image type {p.suffix!r} (use "
                                   f"{', '.join(IMAGE_SUFFIXES)})")
    return Input(str(p), p)


def failure_reason(exc: BaseException) -> str:
    """One line for a failed input: our errors' own messages, the type for anything else
    (the line starts with the input's name, so a file error does not repeat it)."""
    from .engine.errors import FileReadError, InputError, short_reason

    if isinstance(exc, FileReadError):
        return f"cannot read this file: {short_reason(ValueError(exc.reason), 400)}"
    if isinstance(exc, (InputError, ValueError, OSError)):  # messages meant for users
        return short_reason(exc, 400)
    return f"{type(exc).__name__}: {short_reason(exc, 300)}"


class Batch:
    """Runs one step per input, reports failures on one line each, sums up at the end.

    Parameters
    ----------
    verb : str
        What a successful step did (``"segmented"``, ``"evaluated"``), for the summary.
    stream : file, optional
        Where failures and the summary go (default ``sys.stderr``).
    """

    def __init__(self, verb: str, stream: TextIO | None = None) -> None:
        self.verb = verb
        self.stream = stream
        self.done = 0
        self.failed: list[tuple[str, str]] = []

    def step(self, label: str, work: Callable[[], Any]) -> Any:
        """``work()``, or None after reporting ``label: reason`` when it fails."""
        try:
            result = work()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a bad input must not stop the batch
            self.fail(label, failure_reason(exc))
            return None
        self.done += 1
        return result

    def fail(self, label: str, reason: str) -> None:
        """Record and report a failed input."""
        self.failed.append((label, reason))
        self._print(f"{label}: {reason}")

    def _print(self, text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text, file=self.stream or sys.stderr)

    def finish(self) -> int:
        """Print the summary when there was more than one input or a failure; the exit
        code (0 all done, 1 some failed, 2 none done)."""
        n_failed = len(self.failed)
        if n_failed or self.done > 1:
            self._print(f"{self.done} {self.verb}, {n_failed} failed")
        if not n_failed:
            return 0
        return 1 if self.done else 2
