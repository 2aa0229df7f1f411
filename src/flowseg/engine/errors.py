"""The exceptions flowseg raises for input it cannot use, defined once.

Every problem with what a caller passes in -- an image, a file, a parameter, a model file --
is an :class:`InputError` (a :class:`ValueError`, so ``except ValueError`` keeps working)
with a message that says what is wrong and, for files, names the file.  The CLI prints it on
one line, the napari widget shows it in its status line, and the fuzz tests
(``tests/test_fuzz.py``) check that nothing else escapes the public entry points:

* :class:`InputError`: bad image, parameter or file content (base class);
* :class:`FileReadError`: a file that cannot be read as what it should be (corrupt,
  truncated, wrong format);
* :class:`ModelFileError` (:mod:`flowseg.engine.io.modelfile`): not a model file we can
  load;
* :class:`UnsafeFileError` (:mod:`flowseg.engine.io.segfile`): a pickle that could run
  code, refused;
* :class:`NotEnoughMemoryError`: an in-memory run that would need more memory than is free.

Besides these, :class:`flowseg.Cancelled` ends a cancelled call and
:class:`FileNotFoundError` a missing path.  This module imports nothing.
"""

from __future__ import annotations

import os

__all__ = ["FileReadError", "InputError", "NotEnoughMemoryError", "short_reason"]


class InputError(ValueError):
    """An image, file or parameter flowseg cannot use; the message says why."""


class FileReadError(InputError):
    """A file that cannot be read (corrupt, truncated, empty or of another format).

    Attributes
    ----------
    path : str
        The file.
    reason : str
        What is wrong with it (the message without the file name).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read {self.path}: {reason}")


class NotEnoughMemoryError(InputError):
    """An in-memory segmentation would need more memory than is free now."""


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """The first line of ``exc``'s message, cut to ``limit`` characters (for one-line
    reports of errors raised by other libraries, e.g. a reader's or PyTorch's)."""
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if not first:
        first = type(exc).__name__
    elif len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return first
