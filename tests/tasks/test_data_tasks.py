"""Character-level language modelling and forecasting: data reading, splits, streams, baselines, errors."""

import csv
import math
from collections import Counter

import numpy as np
import pytest
import torch

from rnnlab.tasks import get_task
from rnnlab.tasks.corpus import DEFAULT_CORPUS_CHARS, STDLIB_MODULES, default_corpus

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


def test_char_lm_vocab_split_and_baseline(text_file):
    task = get_task("char_lm", path=text_file, seq_len=10, val_fraction=0.25)
    assert task.vocab == sorted(set(TEXT))
    n_val = int(len(TEXT) * 0.25)
    assert task.val_ids.numel() == n_val and task.train_ids.numel() == len(TEXT) - n_val
    decoded = "".join(task.vocab[i] for i in torch.cat([task.train_ids, task.val_ids]).tolist())
    assert decoded == TEXT
    counts = Counter(TEXT[:-n_val])
    n = sum(counts.values())
    entropy = -sum(c / n * math.log2(c / n) for c in counts.values())
    assert task.baselines()["bpc"] == pytest.approx(entropy, rel=1e-9)


def test_char_lm_stream_is_contiguous_and_wraps(text_file):
    task = get_task("char_lm", path=text_file, seq_len=7)
    stream = task.train_stream(4, seed=0)
    first = next(stream)
    assert first.x.shape == (4, 7) and not first.continues
    assert torch.equal(first.x[:, 1:], first.y[:, :-1])  # the target is the next character
    second = next(stream)
    assert second.continues and torch.equal(second.x[:, 0], first.y[:, -1])
    per_stream = task.train_ids.numel() // 4
    assert torch.equal(first.x[1], task.train_ids[per_stream:per_stream + 7])  # stream 1 starts a quarter in
    for _ in range(stream.chunks - 2):
        assert next(stream).continues
    again = next(stream)  # a new pass starts from fresh state
    assert not again.continues and torch.equal(again.x, first.x)


def test_char_lm_bpc_is_loss_in_bits(text_file):
    task = get_task("char_lm", path=text_file, seq_len=10)
    b = task.eval_batches(4, 0)[0]
    logits = torch.randn(*b.x.shape, len(task.vocab))
    m = task.summarize(task.sums(logits, b))
    assert m["bpc"] == pytest.approx(m["loss"] / math.log(2))
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, len(task.vocab)), b.y.reshape(-1))
    assert m["loss"] == pytest.approx(float(ref), rel=1e-5)


def test_char_lm_eval_covers_held_out_text(text_file):
    task = get_task("char_lm", path=text_file, seq_len=5)
    batches = task.eval_batches(3, 0)
    assert not batches[0].continues and all(b.continues for b in batches[1:])
    assert sum(b.y.numel() for b in batches) > 0.9 * task.val_ids.numel()


def test_default_corpus_is_the_standard_library():
    text = default_corpus()
    assert 100_000 < len(text) <= DEFAULT_CORPUS_CHARS
    import sysconfig
    from pathlib import Path

    first = (Path(sysconfig.get_paths()["stdlib"]) / STDLIB_MODULES[0]).read_text(encoding="utf-8")
    assert text.startswith(first)
    task = get_task("char_lm", max_chars=20_000)
    assert task.train_ids.numel() + task.val_ids.numel() == 20_000


@pytest.mark.parametrize("kind", ["missing", "empty", "latin1", "directory"])
def test_char_lm_bad_files(tmp_path, kind):
    p = tmp_path / "bad.txt"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "latin1":
        p.write_bytes("caf\u00e9 ".encode("latin-1") * 100)
    elif kind == "directory":
        p.mkdir()
    words = {"missing": "no such file", "empty": "non-empty", "latin1": "UTF-8", "directory": "not a regular file"}
    with pytest.raises(ValueError, match=words[kind]):
        get_task("char_lm", path=str(p))


def test_char_lm_text_too_short(tmp_path):
    p = tmp_path / "short.txt"
    p.write_text("abcdefghij" * 5)
    with pytest.raises(ValueError, match="seq_len"):
        get_task("char_lm", path=str(p), seq_len=20)
    task = get_task("char_lm", path=str(p), seq_len=2, val_fraction=0.2)
    with pytest.raises(ValueError, match="batch size"):
        task.train_stream(64, seed=0)


def test_forecast_default_is_sunspots():
    task = get_task("forecast")
    assert task.series.numel() == 309
    assert float(task.series[0]) == 5.0 and float(task.series[-1]) == 2.9  # 1700 and 2008


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return str(path)


def test_forecast_windows_normalisation_and_naive_baseline(tmp_path):
    rng = np.random.default_rng(0)
    series = np.cumsum(rng.normal(size=60)) + 10
    path = write_csv(tmp_path / "s.csv", [["t", "v"]] + [[i, f"{v:.6f}"] for i, v in enumerate(series)])
    T = 5
    task = get_task("forecast", path=path, column="v", seq_len=T, val_fraction=0.2)
    values = np.array([float(f"{v:.6f}") for v in series])
    n_val = int((60 - T) * 0.2)
    split = 60 - n_val
    assert task.split == split
    assert task.mean == pytest.approx(values[:split].mean()) and task.std == pytest.approx(values[:split].std(ddof=1))
    z = (values - values[:split].mean()) / values[:split].std(ddof=1)
    b = task.eval_batches(100, 0)[0]
    assert len(b) == n_val
    assert np.allclose(b.x[:, :, 0].numpy(), np.stack([z[j - T:j] for j in range(split, 60)]), atol=1e-5)
    assert np.allclose(b.y.numpy(), z[split:], atol=1e-5)
    naive = values[split - 1:-1]
    assert task.baselines()["mse"] == pytest.approx(np.mean((naive - values[split:]) ** 2))
    assert task.baselines()["mae"] == pytest.approx(np.mean(np.abs(naive - values[split:])))
    # a model output equal to the last input scores exactly the naive baseline
    m = task.summarize(task.sums(b.x[:, -1, :], b))
    assert m["mse"] == pytest.approx(task.baselines()["mse"]) and m["mae"] == pytest.approx(m["naive_mae"])
    train = task.draw(256, torch.Generator().manual_seed(0))
    # training targets come from the training part only
    allowed = torch.tensor(z[T:split], dtype=torch.float32)
    assert ((train.y.unsqueeze(1) - allowed).abs().min(1).values < 1e-5).all()


def test_forecast_errors(tmp_path):
    path = write_csv(tmp_path / "s.csv", [["t", "v"]] + [[i, i * 0.5] for i in range(30)])
    with pytest.raises(ValueError, match="column"):
        get_task("forecast", path=path, column="w")
    with pytest.raises(ValueError, match="column"):
        get_task("forecast", path=path)
    with pytest.raises(ValueError, match="seq_len"):
        get_task("forecast", path=path, column="v", seq_len=29)
    with pytest.raises(ValueError, match="no such file"):
        get_task("forecast", path=str(tmp_path / "none.csv"), column="v")
    bad = write_csv(tmp_path / "b.csv", [["v"], ["1"], ["x"]])
    with pytest.raises(ValueError, match="line 3"):
        get_task("forecast", path=bad, column="v")
