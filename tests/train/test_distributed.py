"""Data-parallel training under torchrun (2 processes, gloo) takes the same steps as one process
on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

RNNLAB = str(Path(sys.executable).parent / "rnnlab")
FOX = "the quick brown fox jumps over the lazy dog. " * 20


def common(tmp_path, task):
    args = ["--engine", "reference", "--hidden", "8", "--batch-size", "8", "--steps", "6", "--eval-every", "3",
            "--no-progress", "--runs-dir", str(tmp_path), "--set", "train.tensorboard=false",
            "--set", "train.eval_samples=16", "--set", "train.log_every=1", "--set", "model.embedding=4"]
    if task == "adding":
        return args + ["--task", "adding", "--seq-len", "5", "--layers", "2"]
    p = tmp_path / "fox.txt"
    p.write_text(FOX)
    return args + ["--task", "char_lm", "--data", str(p), "--seq-len", "6", "--cell", "gru"]


def launch(cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("task", ["adding", "char_lm"])
def test_two_processes_equal_one(tmp_path, task):
    args = common(tmp_path, task)
    launch([RNNLAB, "train", *args, "--name", "one"])
    out = launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  RNNLAB, "train", *args, "--name", "two"])
    assert "2 processes" in out
    one = load_file(tmp_path / "one" / "checkpoints" / "last.safetensors")
    two = load_file(tmp_path / "two" / "checkpoints" / "last.safetensors")
    params = [k for k in one if k.startswith("model.")]
    assert params and all(torch.allclose(one[k], two[k], atol=1e-5, rtol=1e-4) for k in params)
    if task == "char_lm":  # the carried state is gathered from both processes into the whole batch's
        assert two["carry.0"].shape == one["carry.0"].shape == (1, 8, 8)
        assert torch.allclose(one["carry.0"], two["carry.0"], atol=1e-5)
    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines]

    assert losses("one") == pytest.approx(losses("two"), rel=1e-4)
