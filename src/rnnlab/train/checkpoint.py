"""Checkpoints: tensors in safetensors, everything else in JSON, each file written atomically.

``<dir>/<tag>.safetensors`` holds the tensors (model parameters, optimiser moments, RNG states,
a carried recurrent state); ``<dir>/<tag>.json`` holds the rest (step, config, optimiser
hyper-parameters, Python and NumPy RNG states). A file is written to a temporary name in the same
directory, flushed and fsync'ed, then renamed over the old one (``os.replace`` is atomic on
POSIX), and the directory is fsync'ed, so a crash leaves either the old file or the new one. The
JSON is written last and names the step that the tensor file also records; ``load`` checks that
they agree, so a crash between the two writes is detected rather than silently mixed.

Nothing is ever unpickled: safetensors stores raw tensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors

FORMAT = "rnnlab-checkpoint-1"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the complete new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: Path, tag: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = str(meta["step"])
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(directory / f"{tag}.safetensors", save_tensors(flat, metadata={"format": FORMAT, "step": step}))
    atomic_write(directory / f"{tag}.json", json.dumps({"format": FORMAT, **meta}, indent=1).encode("utf-8"))


def exists(directory: Path, tag: str) -> bool:
    return (Path(directory) / f"{tag}.json").is_file() and (Path(directory) / f"{tag}.safetensors").is_file()


def load(directory: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    directory = Path(directory)
    if not exists(directory, tag):
        raise ValueError(f"checkpoint: expected {tag}.safetensors and {tag}.json in {str(directory)!r}, found none")
    meta = json.loads((directory / f"{tag}.json").read_text(encoding="utf-8"))
    with safe_open(str(directory / f"{tag}.safetensors"), framework="pt") as f:
        stored = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT or stored.get("format") != FORMAT:
        raise ValueError(f"checkpoint: {str(directory / tag)!r} is not an {FORMAT} checkpoint")
    if stored.get("step") != str(meta["step"]):
        raise ValueError(
            f"checkpoint: {tag}.json is at step {meta['step']} but {tag}.safetensors at step {stored.get('step')} "
            f"(a write was interrupted); use the other checkpoint in {str(directory)!r}"
        )
    return tensors, meta
