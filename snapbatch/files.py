"""Files replaced whole: a reader (node_exporter, a mail job, the next run) sees the old content or the new,
never half of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text``: a temporary file beside it (a dot name ending in .tmp, which collectors
    skip), synced, given ``mode`` (mkstemp makes it private; these files are read by other users), renamed
    over ``path``, then the directory synced so the rename lasts. Text that cannot be encoded (a lone
    surrogate from an odd ID file) is replaced, not fatal. Raises OSError."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as file:
            file.write(text)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # the rename is durable only once the directory is; a directory that cannot be synced still has the file
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
