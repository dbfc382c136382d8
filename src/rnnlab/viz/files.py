"""Writing the user's files: whole or not at all (a temporary file beside the target, then os.replace)."""

from __future__ import annotations

import os
import secrets
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
    """Write ``data`` to ``path`` so that it is either the old file or the whole new one, never a part.
    The temporary file is opened as ``open`` would create the file (mode 0o666 less the umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
