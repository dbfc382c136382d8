"""Writing the user's files: whole or not at all (a temporary file beside the target, then os.replace)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def output_path(path, suffix: str) -> Path:
    """``path`` as a Path whose folder exists and whose name ends in ``suffix``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (str or Path), got {type(path).__name__}")
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise ValueError(f"path: expected a file name ending in {suffix}, got {str(path)!r}")
    if not p.parent.is_dir():
        raise ValueError(f"path: expected an existing folder to write into, got {str(p.parent)!r} (no such folder)")
    if p.is_dir():
        raise ValueError(f"path: expected a file, got the folder {str(path)!r}")
    return p


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it is either the old file or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
