"""The rnnlab command end to end: train, eval, generate, forecast, resume, and bad input."""

import json

import pytest
from click.testing import CliRunner

from rnnlab.cli import main

FAST = ["--engine", "reference", "--hidden", "8", "--batch-size", "8", "--no-progress", "--eval-every", "5",
        "--set", "train.tensorboard=false", "--set", "train.eval_samples=16", "--set", "model.embedding=4"]
TEXT = "def add(a, b):\n    return a + b\n\n" * 40


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_everywhere():
    for cmd in ([], ["train"], ["eval"], ["generate"], ["forecast"]):
        r = invoke(*cmd, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_train_eval_and_resume(tmp_path):
    runs = tmp_path / "runs"
    r = invoke("train", "--task", "adding", "--cell", "gru", "--seq-len", "6", "--steps", "10", *FAST,
               "--runs-dir", runs, "--name", "a")
    assert r.exit_code == 0, r.output
    assert "parameters" in r.output and "baseline" in r.output and str(runs / "a") in r.output
    d = runs / "a"
    assert (d / "config.toml").is_file() and (d / "checkpoints" / "best.safetensors").is_file()
    records = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "eval" and records[-1]["step"] == 10
    r = invoke("eval", d, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["metrics"]) == {"loss", "mse"} and out["baselines"]["mse"] == pytest.approx(1 / 6)
    assert out["metrics"]["mse"] == pytest.approx(min(e["mse"] for e in records if e["kind"] == "eval"))
    r = invoke("eval", d, "--checkpoint", "last")
    assert r.exit_code == 0 and "step 10" in r.output
    r = invoke("train", "--runs-dir", runs, "--name", "a", "--resume", "--steps", "15", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "resuming at step 10" in r.output and "step 15" in r.output


def test_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('name = "fromfile"\n[task]\nname = "temporal_order"\nseq_len = 12\n[train]\nsteps = 3\n')
    r = invoke("train", "--config", cfg, *FAST, "--runs-dir", tmp_path, "--set", "train.lr=0.001")
    assert r.exit_code == 0, r.output
    saved = (tmp_path / "fromfile" / "config.toml").read_text()
    assert 'name = "temporal_order"' in saved and "seq_len = 12" in saved and "lr = 0.001" in saved


def test_generate_and_forecast(tmp_path):
    text = tmp_path / "code.txt"
    text.write_text(TEXT)
    r = invoke("train", "--task", "char_lm", "--data", text, "--seq-len", "10", "--steps", "5", *FAST,
               "--runs-dir", tmp_path, "--name", "lm")
    assert r.exit_code == 0, r.output
    r = invoke("generate", tmp_path / "lm", "--prime", "def ", "--length", "40", "--temperature", "0.5")
    assert r.exit_code == 0, r.output
    sample = r.output.rstrip("\n")
    assert sample.startswith("def ") and len(sample) == 44 and set(sample) <= set(TEXT)
    again = invoke("generate", tmp_path / "lm", "--prime", "def ", "--length", "40", "--temperature", "0.5")
    assert again.output == r.output  # seeded
    r = invoke("generate", tmp_path / "lm", "--prime", "xyz")
    assert r.exit_code != 0 and "vocabulary" in r.output
    r = invoke("generate", tmp_path / "lm", "--temperature", "0")
    assert r.exit_code != 0 and "temperature" in r.output
    r = invoke("train", "--task", "forecast", "--seq-len", "8", "--steps", "5", *FAST, "--runs-dir", tmp_path,
               "--name", "sun")
    assert r.exit_code == 0, r.output
    r = invoke("forecast", tmp_path / "sun", "--horizon", "4")
    assert r.exit_code == 0, r.output
    assert "naive" in r.output and [line.split("\t")[0] for line in r.output.splitlines()[1:]] == ["+1", "+2", "+3", "+4"]
    r = invoke("forecast", tmp_path / "lm")
    assert r.exit_code != 0 and "expected a forecast run" in r.output
    r = invoke("generate", tmp_path / "sun")
    assert r.exit_code != 0 and "expected a char_lm run" in r.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--task", "char_lm", "--data", "{tmp}/missing.txt"], "no such file"),
        (["--task", "char_lm", "--data", "{tmp}/empty.txt"], "non-empty"),
        (["--task", "char_lm", "--data", "{tmp}/latin1.txt"], "UTF-8"),
        (["--task", "forecast", "--data", "{tmp}/s.csv", "--column", "price"], "task.column"),
        (["--task", "temporal_order", "--seq-len", "5"], "T >= 10"),
        (["--task", "copy", "--seq-len", "0"], "task.seq_len"),
        (["--set", "train.nope=1"], "train.nope: unknown setting"),
        (["--set", "train.steps=1.5"], "train.steps: expected int"),
        (["--set", "noequals"], "KEY=VALUE"),
        (["--hidden", "0"], "model.hidden"),
        (["--resume"], "found no config.toml"),
    ],
)
def test_bad_input_is_a_usage_error_and_touches_nothing(tmp_path, args, words):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "latin1.txt").write_bytes("\u00e9t\u00e9 ".encode("latin-1") * 50)
    (tmp_path / "s.csv").write_text("t,v\n" + "".join(f"{i},{i}\n" for i in range(50)))
    runs = tmp_path / "runs"
    existing = runs / "x"
    existing.mkdir(parents=True)
    (existing / "keep.txt").write_text("mine")
    r = invoke("train", *FAST, "--runs-dir", runs, "--name", "x", "--steps", "2", *[a.format(tmp=tmp_path) for a in args])
    assert r.exit_code == 2 and words in r.output, r.output
    assert [p.name for p in existing.iterdir()] == ["keep.txt"] and (existing / "keep.txt").read_text() == "mine"


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    args = ["train", "--seq-len", "4", "--steps", "2", *FAST, "--runs-dir", tmp_path, "--name", "r"]
    assert invoke(*args).exit_code == 0
    before = (tmp_path / "r" / "metrics.jsonl").read_text()
    r = invoke(*args)
    assert r.exit_code == 2 and "already exists" in r.output
    assert (tmp_path / "r" / "metrics.jsonl").read_text() == before
    r = invoke(*args, "--overwrite", "--seed", "1")
    assert r.exit_code == 0 and (tmp_path / "r" / "metrics.jsonl").read_text() != before
    r = invoke(*args, "--overwrite", "--resume")
    assert r.exit_code == 2


def test_eval_of_a_missing_run(tmp_path):
    r = invoke("eval", tmp_path / "none")
    assert r.exit_code == 2 and "no such directory" in r.output


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from rnnlab.train import Trainer

    step = Trainer._step

    def interrupted_at_7(self):
        if self.step == 7:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "_step", interrupted_at_7)
    args = ["train", "--seq-len", "4", "--steps", "12", *FAST, "--runs-dir", tmp_path, "--name", "r"]
    r = invoke(*args)
    assert r.exit_code == 130 and "--resume" in r.output
    monkeypatch.setattr(Trainer, "_step", step)
    r = invoke("train", "--runs-dir", tmp_path, "--name", "r", "--resume", "--no-progress")
    assert r.exit_code == 0 and "resuming at step 5" in r.output and "step 12" in r.output
