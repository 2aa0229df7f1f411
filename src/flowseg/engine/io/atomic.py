"""Atomic file writes: a temporary file in the same folder, then ``os.replace``.

An interrupted write (Ctrl-C, crash, full disk) never leaves a half-written file under the
final name, and a file being replaced keeps its permissions.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it when the block ends normally.

    The temporary file keeps ``path``'s suffix (writers that choose the format by suffix
    work), lives in the same folder (``os.replace`` is atomic there) and is removed when
    the block raises -- Ctrl-C included.  The final file gets the permissions of the file
    it replaces, or those of any new file (``0o666`` less the umask).
    """
    path = Path(path)
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
    else:
        umask = os.umask(0o022)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
