"""Checkpoints: tensors and their record in one safetensors file, a readable JSON copy beside it.

``<dir>/<tag>.safetensors`` holds the tensors (model parameters, optimiser moments, RNG states,
a carried recurrent state) and, in its header's metadata, the record of the save: the step, the
config, optimiser hyper-parameters, Python and NumPy RNG states (as JSON text), and a SHA-256 over
the whole header — its tensor table and that record, as canonical JSON, all but the digest itself —
and then the tensor data. ``<dir>/<tag>.json`` is the same record, for people and tools to read.
Files of the first format (``rnnlab-checkpoint-1``), whose digest covers the tensor data only, still load.

Crash safety: a file is written to a temporary name in the same directory, flushed and fsync'ed,
then renamed over the old one (``os.replace`` is atomic on POSIX), and the directory is
fsync'ed, so a crash leaves either the old file or the new one — never a torn file under the
real name. The tensors file, which carries its own record, is written first: a crash between
the two writes leaves a complete new checkpoint and an older JSON copy, which ``load`` ignores.
A failed write (a full disk) removes its temporary file and leaves the previous checkpoint as it
was. ``load`` refuses, naming what is wrong, a file that is truncated or altered in its data or its
header (its digest differs), not an rnnlab checkpoint, or whose JSON copy describes a different save.

Nothing is ever unpickled: safetensors stores raw tensors only, the rest is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

FORMAT = "rnnlab-checkpoint-2"  # its digest covers the header too
LEGACY = "rnnlab-checkpoint-1"  # its digest covered the tensor data only
TMP = ".tmp-"  # temporary files are named .<name>.tmp-<pid>
_write = os.write  # every byte of a checkpoint goes through here (tests make the disk full by replacing it)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one.

    On any failure (ENOSPC, EIO, an interrupt) the temporary file is removed and the old file is
    left untouched; the error propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP}{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[_write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(directory: Path) -> list[str]:
    """Delete temporary files that a killed writer left in ``directory``; returns their names.
    Only call this where no other process is writing (a run is written by one process)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if p.name.startswith(".") and TMP in p.name and p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return sorted(p.name for p in stale)


def _data_section(blob: bytes) -> tuple[dict[str, Any], bytes]:
    """A safetensors blob's header (parsed) and its tensor data; ValueError when it is malformed."""
    if len(blob) < 8:
        raise ValueError(f"the file has {len(blob)} bytes, fewer than a safetensors header's 8 (truncated)")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError(f"its header claims {n} bytes but the file has {len(blob) - 8} after the length (truncated)")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"its header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"its header is a JSON {type(header).__name__}, expected an object")
    return header, blob[8 + n:]


def digest(header: dict[str, Any], data: bytes) -> str:
    """SHA-256 of the header — the tensor table and the record, but the digest itself — as canonical JSON
    (sorted keys, no spaces: the same however a writer pads it), followed by the tensor data."""
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != "sha256"}
    canonical = json.dumps({**header, "__metadata__": meta}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    h = hashlib.sha256(canonical.encode("utf-8"))
    h.update(data)
    return h.hexdigest()


def save(directory: Path, tag: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write checkpoint ``tag``: ``meta`` must be JSON-able and hold the ``step``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    record = json.dumps({"format": FORMAT, **meta}, indent=1)
    base = {"format": FORMAT, "step": str(meta["step"]), "meta": record}
    # the tensor table and data do not depend on the metadata, so the digest of all but itself can join it
    header, data = _data_section(save_tensors(flat, metadata=base))
    blob = save_tensors(flat, metadata={**base, "sha256": digest(header, data)})
    atomic_write(directory / f"{tag}.safetensors", blob)
    atomic_write(directory / f"{tag}.json", record.encode("utf-8"))


def exists(directory: Path, tag: str) -> bool:
    return (Path(directory) / f"{tag}.safetensors").is_file()


def load(directory: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and record of checkpoint ``tag``; a ValueError that names the problem when the
    files are missing, truncated, altered, not rnnlab's, or from different saves."""
    directory = Path(directory)
    path = directory / f"{tag}.safetensors"
    if not path.is_file():
        raise ValueError(f"checkpoint: expected {tag}.safetensors (and {tag}.json) in {str(directory)!r}, found none")
    blob = path.read_bytes()
    where = f"checkpoint: {str(path)!r}"
    try:
        header, data = _data_section(blob)
    except ValueError as e:
        raise ValueError(f"{where} is not a readable safetensors file: {e}") from None
    stored = header.get("__metadata__") or {}
    fmt = stored.get("format")
    if fmt not in (FORMAT, LEGACY):
        raise ValueError(f"{where}: expected an {FORMAT} (or {LEGACY}) checkpoint, got format {fmt!r}")
    if fmt == FORMAT and "sha256" not in stored:
        raise ValueError(f"{where}: its header has no digest, which every {FORMAT} file records (the header "
                         "was altered); use the other checkpoint or an earlier copy")
    if "sha256" in stored:
        expected = digest(header, data) if fmt == FORMAT else hashlib.sha256(data).hexdigest()
        if expected != stored["sha256"]:
            covered = "header or tensor data do" if fmt == FORMAT else "tensor data does"
            raise ValueError(f"{where}: its {covered} not match the digest recorded when it was saved "
                             f"(the file was truncated or altered); use the other checkpoint or an earlier copy")
    try:
        tensors = load_tensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where} is not a readable safetensors file: {e}") from None
    mirror_path = directory / f"{tag}.json"
    mirror = None
    if mirror_path.is_file():
        try:
            mirror = json.loads(mirror_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if "meta" not in stored:
                raise ValueError(f"checkpoint: {str(mirror_path)!r} is not valid JSON ({e})") from None
    if "meta" in stored:
        meta = json.loads(stored["meta"])
        if isinstance(mirror, dict) and mirror != meta and not _older(mirror, meta):
            raise ValueError(
                f"checkpoint: {tag}.json and {tag}.safetensors in {str(directory)!r} describe different saves "
                f"({_first_difference(mirror, meta)}); the files were mixed up — restore them together"
            )
    else:  # written before the record went into the tensors file: the JSON file is the record
        if not isinstance(mirror, dict):
            raise ValueError(f"checkpoint: expected {tag}.json beside {tag}.safetensors in {str(directory)!r}, found none")
        meta = mirror
        if meta.get("format") not in (FORMAT, LEGACY):
            raise ValueError(f"checkpoint: {str(mirror_path)!r}: expected an {FORMAT} record, got format {meta.get('format')!r}")
        if stored.get("step") != str(meta.get("step")):
            raise ValueError(
                f"checkpoint: {tag}.json is at step {meta.get('step')} but {tag}.safetensors at step {stored.get('step')} "
                f"(a write was interrupted); use the other checkpoint in {str(directory)!r}"
            )
    return tensors, meta


def _older(mirror: dict[str, Any], meta: dict[str, Any]) -> bool:
    """The JSON copy is from an earlier save of the same run (a crash came between the two writes)."""
    step, now = mirror.get("step"), meta.get("step")
    return isinstance(step, int) and isinstance(now, int) and step < now and mirror.get("config") == meta.get("config")


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    return f"{path or 'record'}: {a!r} in the JSON, {b!r} in the tensors file"


def check_tensors(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], what: str) -> None:
    """``got`` (from a checkpoint) must have exactly ``expected``'s names, shapes and dtypes; a
    ValueError names the first mismatches otherwise (e.g. another cell, size or layer count)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = [f"{k} is {tuple(got[k].shape)} {got[k].dtype} in the checkpoint, {tuple(v.shape)} {v.dtype} in the {what}"
              for k, v in expected.items() if k in got and (got[k].shape != v.shape or got[k].dtype != v.dtype)]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:4])}" + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:4])}" + (f" and {len(unexpected) - 4} more" if len(unexpected) > 4 else ""))
    problems += shapes[:4]
    if problems:
        raise ValueError(f"checkpoint: its tensors do not fit the {what} ({'; '.join(problems)}); "
                         f"it was saved by a different model (another cell, size or layer count)")
