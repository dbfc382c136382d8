"""Training under faults: NaN/Inf steps skipped then stopped, a full disk while saving, the memory
guard before anything is written, determinism of every engine, and files that are corrupt,
mismatched, missing, empty, non-UTF-8 or malformed refused with the reason."""

import errno
import json
import math
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

from rnnlab.cli import main
from rnnlab.layers import memory
from rnnlab.train import RunConfig, Trainer, checkpoint, load_run, train

SMALL = {
    "train.progress": False, "train.tensorboard": False, "model.engine": "reference", "model.hidden": 8,
    "model.embedding": 4, "train.batch_size": 4, "train.eval_samples": 8, "train.steps": 12, "train.eval_every": 5,
    "train.log_every": 1, "train.warmup": 2, "task.seq_len": 5,
}
FAST = ["--seq-len", "5", "--hidden", "8", "--batch-size", "4", "--engine", "reference", "--no-progress",
        "--set", "model.embedding=4", "--set", "train.eval_samples=8", "--set", "train.tensorboard=false",
        "--eval-every", "5"]


def config(**settings):
    return RunConfig().replace(**{**SMALL, **settings})


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def poison(trainer, bad_steps):
    """Make the loss NaN (or +Inf) at the given 0-based steps, as a bad batch or an overflow would."""
    loss = trainer.task.loss

    def poisoned(out, batch):
        value = loss(out, batch)
        if trainer.step in bad_steps:
            return value * (math.nan if trainer.step % 2 else math.inf)
        return value

    trainer.task.loss = poisoned


# -- NaN / Inf -------------------------------------------------------------------------------------
def test_non_finite_steps_are_skipped_and_logged(tmp_path):
    t = Trainer(config(), tmp_path / "r")
    poison(t, {3, 4})
    weights = []
    step = t._step

    def recording():
        out = step()
        weights.append({k: v.clone() for k, v in t.model.state_dict().items()})
        return out

    t._step = recording
    result = t.fit()
    t.close()
    assert result.finished and result.step == 12
    skipped = [r for r in result.history if r["kind"] == "skipped"]
    assert [(r["step"], r["bad_steps"]) for r in skipped] == [(4, 1), (5, 2)]
    assert {r["loss"] for r in skipped} == {"nan", "inf"}
    # no update on a skipped step: weights after steps 3, 4 and 5 are the same; step 6 moves them
    for k in weights[2]:
        assert torch.equal(weights[2][k], weights[3][k]) and torch.equal(weights[2][k], weights[4][k])
    assert any(not torch.equal(weights[4][k], weights[5][k]) for k in weights[4])
    assert all(math.isfinite(float(v.abs().sum())) for v in result.model.state_dict().values())
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "skipped"] == [4, 5]
    assert all(math.isfinite(r["loss"]) for r in lines if r["kind"] == "train")


def test_k_bad_steps_in_a_row_stop_the_run(tmp_path):
    t = Trainer(config(**{"train.max_bad_steps": 3}), tmp_path / "r")
    poison(t, set(range(7, 100)))
    with pytest.raises(FloatingPointError, match=r"train.max_bad_steps: 3 steps in a row \(to step 10\)"):
        t.fit()
    t.close()
    run = load_run(tmp_path / "r", "last")  # the last checkpoint is intact and finite
    assert run.step == 5
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())


def test_the_command_line_exits_1_on_k_bad_steps(tmp_path, monkeypatch):
    from rnnlab.tasks.adding import AddingTask

    monkeypatch.setattr(AddingTask, "loss", lambda self, out, batch: (out.squeeze(-1) - batch.y).pow(2).mean() * math.nan)
    r = invoke("train", *FAST, "--steps", "30", "--runs-dir", tmp_path, "--name", "n", "--set", "train.max_bad_steps=4")
    assert r.exit_code == 1, r.output
    assert "train.max_bad_steps: 4 steps in a row" in r.output and "train.lr" in r.output


def test_max_bad_steps_is_checked():
    with pytest.raises(ValueError, match="train.max_bad_steps: expected a positive int, got 0"):
        config(**{"train.max_bad_steps": 0})


# -- a full disk -----------------------------------------------------------------------------------
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    c = config()
    t = Trainer(c, tmp_path / "r")
    t.fit(until=5)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r" / "checkpoints").iterdir()}
    real = os.write

    def full(fd, data):
        real(fd, bytes(data)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", full)
    with pytest.raises(OSError, match=r"could not save step 10 .*No space left on device.*intact"):
        t.fit()
    monkeypatch.undo()
    t.close()
    assert {p.name: p.read_bytes() for p in (tmp_path / "r" / "checkpoints").iterdir()} == before
    resumed = Trainer(c, tmp_path / "r", resume=True)  # space is back: continue where the checkpoint is
    assert resumed.step == 5
    result = resumed.fit()
    resumed.close()
    whole = train(c)
    assert all(torch.equal(a, b) for a, b in zip(result.model.state_dict().values(), whole.model.state_dict().values()))


def test_the_command_line_exits_1_on_a_full_disk(tmp_path, monkeypatch):
    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write", full)
    r = invoke("train", *FAST, "--steps", "6", "--runs-dir", tmp_path, "--name", "f")
    assert r.exit_code == 1 and "No space left on device" in r.output, r.output


# -- the memory guard --------------------------------------------------------------------------------
def test_the_memory_guard_refuses_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1 << 20)  # 1 MiB
    c = config(**{"task.seq_len": 2000, "train.batch_size": 64})
    with pytest.raises(ValueError, match=r"task.seq_len, train.batch_size: .*T = 2000.*lower task.seq_len to at most \d+"):
        Trainer(c, tmp_path / "r")
    assert not (tmp_path / "r").exists()
    r = invoke("train", *FAST, "--seq-len", "2000", "--batch-size", "64", "--runs-dir", tmp_path, "--name", "m")
    assert r.exit_code == 2 and "task.seq_len" in r.output and "GiB" in r.output, r.output
    assert not (tmp_path / "m").exists()
    r = invoke("train", *FAST, "--hidden", str(1 << 16), "--runs-dir", tmp_path, "--name", "p")
    assert r.exit_code == 2 and "hidden_size" in r.output and "parameters" in r.output, r.output
    assert not (tmp_path / "p").exists()


# -- determinism ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["auto", "native", "torch", "reference"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_same_seed_same_weights_and_metrics_bitwise(engine, cell):
    c = config(**{"model.engine": engine, "model.cell": cell, "model.reset": "after", "model.layers": 2,
                  "model.dropout": 0.25, "model.bidirectional": True, "train.steps": 6, "train.eval_every": 3})
    a, b = train(c), train(c)
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k
    strip = [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in b.history]
    assert a.final == b.final


# -- checkpoints that do not belong --------------------------------------------------------------------
def test_a_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    assert invoke("train", *FAST, "--steps", "5", "--runs-dir", tmp_path, "--name", "lstm").exit_code == 0
    assert invoke("train", *FAST, "--steps", "5", "--cell", "gru", "--hidden", "16", "--layers", "2",
                  "--runs-dir", tmp_path, "--name", "gru").exit_code == 0
    lstm, _ = checkpoint.load(tmp_path / "lstm" / "checkpoints", "last")
    # a checkpoint copied from another run: resuming names every setting that differs
    shutil.copytree(tmp_path / "gru" / "checkpoints", tmp_path / "lstm" / "checkpoints", dirs_exist_ok=True)
    r = invoke("train", "--runs-dir", tmp_path, "--name", "lstm", "--resume", "--steps", "8")
    assert r.exit_code == 2, r.output
    for words in ("model.cell: run has 'gru', got 'lstm'", "model.hidden: run has 16, got 8", "model.layers"):
        assert words in r.output, r.output
    # tensors that do not fit the model their own record describes: named, shape by shape
    tensors, meta = checkpoint.load(tmp_path / "gru" / "checkpoints", "last")
    checkpoint.save(tmp_path / "gru" / "checkpoints", "last", {**tensors, **{k: v for k, v in lstm.items()
                    if k.startswith("model.rnn.")}}, {k: v for k, v in meta.items() if k != "format"})
    r = invoke("eval", tmp_path / "gru", "--checkpoint", "last")
    assert r.exit_code == 2 and "do not fit the model" in r.output and "rnn.weight_hh_l0" in r.output, r.output
    r = invoke("train", "--runs-dir", tmp_path, "--name", "gru", "--resume", "--steps", "8")
    assert r.exit_code == 2 and "do not fit the model" in r.output, r.output


def test_a_checkpoint_without_a_trainer_record_is_refused(tmp_path):
    assert invoke("train", *FAST, "--steps", "5", "--runs-dir", tmp_path, "--name", "r").exit_code == 0
    tensors, _ = checkpoint.load(tmp_path / "r" / "checkpoints", "last")
    checkpoint.save(tmp_path / "r" / "checkpoints", "last", tensors, {"step": 5})
    for args in (["eval", tmp_path / "r", "--checkpoint", "last"],
                 ["train", "--runs-dir", tmp_path, "--name", "r", "--resume", "--steps", "8"]):
        r = invoke(*args)
        assert r.exit_code == 2 and "lacks 'config'" in r.output, r.output


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "json-mixed"])
def test_a_corrupt_checkpoint_is_refused_by_eval_and_resume(tmp_path, damage):
    assert invoke("train", *FAST, "--steps", "5", "--runs-dir", tmp_path, "--name", "r").exit_code == 0
    d = tmp_path / "r" / "checkpoints"
    blob = (d / "last.safetensors").read_bytes()
    if damage == "truncate":
        (d / "last.safetensors").write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        (d / "last.safetensors").write_bytes(blob[:-10] + bytes([blob[-10] ^ 0x40]) + blob[-9:])
    elif damage == "empty":
        (d / "last.safetensors").write_bytes(b"")
    else:
        meta = json.loads((d / "last.json").read_text())
        meta["config"]["model"]["hidden"] = 99
        (d / "last.json").write_text(json.dumps(meta))
    for args in (["eval", tmp_path / "r", "--checkpoint", "last"],
                 ["train", "--runs-dir", tmp_path, "--name", "r", "--resume", "--steps", "8"]):
        r = invoke(*args)
        assert r.exit_code == 2 and "last.safetensors" in r.output, r.output
        assert {"truncate": "truncated", "flip": "digest", "empty": "truncated",
                "json-mixed": "config.model.hidden"}[damage] in r.output, r.output


# -- data files --------------------------------------------------------------------------------------------
DATA = [
    ("char_lm", None, "no such file"),
    ("char_lm", b"", "0 bytes"),
    ("char_lm", b"caf\xe9 au lait " * 50, "not UTF-8"),
    ("char_lm", "ab", "shorter than"),
    ("forecast", None, "no such file"),
    ("forecast", b"", "0 bytes"),
    ("forecast", b"\xff\xfe" + "year,v\n".encode("utf-16-le"), "not UTF-8"),
    ("forecast", "year,v\n", "too few"),
    ("forecast", "year,v\n1,2\n2,x\n", "expected a number in column 'v', got 'x' on line 3"),
    ("forecast", "year,v\n" + "".join(f"{i},{i % 7}\n" for i in range(40)) + "41,nan\n", "expected a finite number"),
    ("forecast", "year,v\n" + "".join(f"{i},{i % 7}\n" for i in range(40)) + "41,inf\n", "expected a finite number"),
    ("forecast", "year,w\n1,2\n", "expected one of the columns"),
    ("forecast", "year,v\n" + "".join(f"{i},3\n" for i in range(40)), "constant"),
    ("forecast", "dir", "not a regular file"),
]


@pytest.mark.parametrize("task, content, words", DATA)
def test_bad_data_files_are_usage_errors_that_write_nothing(tmp_path, task, content, words):
    path = tmp_path / "data"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    extra = ["--column", "v"] if task == "forecast" else []
    r = invoke("train", *FAST, "--task", task, "--data", path, *extra, "--runs-dir", tmp_path / "runs", "--name", "d")
    assert r.exit_code == 2, r.output
    assert words in r.output and ("task.path" in r.output or "task.seq_len" in r.output or "task.column" in r.output), r.output
    assert not (tmp_path / "runs").exists()
