"""Checkpoint files: atomic writes, the step check between the two files, nothing pickled."""

import json
from pathlib import Path

import pytest
import torch

from rnnlab.train import checkpoint


def test_round_trip_and_no_temporary_files(tmp_path):
    tensors = {"a": torch.randn(3, 4), "step": torch.tensor(5.0), "g": torch.ByteTensor([1, 2])}
    checkpoint.save(tmp_path, "last", tensors, {"step": 5, "x": [1, "y"]})
    got, meta = checkpoint.load(tmp_path, "last")
    assert meta["step"] == 5 and meta["x"] == [1, "y"]
    assert all(torch.equal(got[k], v) for k, v in tensors.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_mismatched_files_are_detected(tmp_path):
    checkpoint.save(tmp_path, "last", {"a": torch.zeros(1)}, {"step": 5})
    meta = json.loads((tmp_path / "last.json").read_text())
    meta["step"] = 6  # as if the JSON of a later save landed but its tensors did not
    (tmp_path / "last.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="interrupted"):
        checkpoint.load(tmp_path, "last")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="found none"):
        checkpoint.load(tmp_path, "best")


def test_the_training_code_never_unpickles():
    root = Path(checkpoint.__file__).parents[1]
    for path in [p for part in ("tasks", "models", "train", "cli") for p in (root / part).rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "import pickle" not in text and "pickle.load" not in text, path
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line}"
