"""The synthetic tasks' generators against their definitions, and their baselines."""

import math

import pytest
import torch

from rnnlab.tasks import TASKS, get_task
from rnnlab.tasks.temporal_order import CLASSES, SYMBOLS


def draw(task, n=256, seed=0):
    return task.draw(n, torch.Generator().manual_seed(seed))


def test_adding_definition():
    T = 17
    task = get_task("adding", seq_len=T)
    b = draw(task)
    assert b.x.shape == (256, T, 2) and b.y.shape == (256,)
    values, markers = b.x[..., 0], b.x[..., 1]
    assert values.min() >= 0 and values.max() <= 1
    assert set(markers.unique().tolist()) == {0.0, 1.0}
    assert (markers.sum(1) == 2).all()
    assert (markers[:, : T // 2].sum(1) == 1).all() and (markers[:, T // 2:].sum(1) == 1).all()
    assert torch.allclose(b.y, (values * markers).sum(1))


def test_adding_baseline_is_predicting_one():
    task = get_task("adding", seq_len=20)
    batches = task.eval_batches(500, 4000)
    se = sum(float(((torch.ones(len(b)) - b.y) ** 2).sum()) for b in batches)
    assert abs(se / 4000 - task.baselines()["mse"]) < 0.01
    assert task.baselines()["mse"] == pytest.approx(1 / 6)


def test_adding_sums_score_constant_prediction():
    task = get_task("adding", seq_len=8)
    b = draw(task, 64)
    out = torch.ones(64, 1)
    s, n = task.sums(out, b)["mse"]
    assert n == 64 and s == pytest.approx(float(((1 - b.y) ** 2).sum()), rel=1e-6)
    assert float(task.loss(out, b)) == pytest.approx(s / n, rel=1e-6)


def test_copy_definition():
    T, L, A = 7, 4, 5
    task = get_task("copy", seq_len=T, length=L, alphabet=A)
    b = draw(task, 64)
    assert b.x.shape == (64, T + 2 * L) and b.y.shape == (64, T + 2 * L)
    data = b.x[:, :L]
    assert data.min() >= 1 and data.max() <= A
    assert (b.x[:, L:T + L - 1] == 0).all()
    assert (b.x[:, T + L - 1] == A + 1).all()  # the delimiter
    assert (b.x[:, T + L:] == 0).all()
    assert (b.y[:, :T + L] == 0).all() and torch.equal(b.y[:, T + L:], data)
    assert task.spec.input_size == A + 2 and task.spec.output_size == A + 1


def test_copy_memoryless_baseline():
    T, L, A = 30, 10, 8
    task = get_task("copy", seq_len=T, length=L, alphabet=A)
    b = draw(task, 128)
    # blanks with certainty until the delimiter's echo, then uniform over the A data symbols
    logits = torch.full((128, T + 2 * L, A + 1), -1e4)
    logits[:, :T + L, 0] = 0.0
    logits[:, T + L:, 1:] = 0.0
    sums = task.sums(logits, b)
    assert sums["loss"][0] / sums["loss"][1] == pytest.approx(L * math.log(A) / (T + 2 * L), rel=1e-5)
    assert task.baselines()["loss"] == pytest.approx(10 * math.log(8) / (T + 20))
    assert task.baselines()["accuracy"] == 1 / 8


def test_temporal_order_definition():
    T = 40
    task = get_task("temporal_order", seq_len=T)
    b = draw(task, 512)
    X, Y = SYMBOLS.index("X"), SYMBOLS.index("Y")
    assert (b.x[:, 0] == SYMBOLS.index("B")).all() and (b.x[:, -1] == SYMBOLS.index("E")).all()
    relevant = (b.x == X) | (b.x == Y)
    assert (relevant.sum(1) == 2).all()
    (a1, b1), (a2, b2) = task.windows()
    assert (a1, b1, a2, b2) == (4, 8, 20, 24)
    for row, label in zip(range(512), b.y.tolist()):
        t1, t2 = relevant[row].nonzero().flatten().tolist()
        assert a1 <= t1 <= b1 and a2 <= t2 <= b2
        name = ("X" if b.x[row, t1] == X else "Y") + ("X" if b.x[row, t2] == X else "Y")
        assert CLASSES[label] == name
    middle = b.x[:, 1:-1][~relevant[:, 1:-1]]
    assert middle.min() >= 0 and middle.max() <= 3  # distractors a..d
    counts = torch.bincount(b.y, minlength=4)
    assert (counts > 80).all()  # the four classes appear about equally often
    assert task.baselines()["accuracy"] == 0.25


def test_tagging_definition():
    T, V, k = 12, 5, 3
    task = get_task("tagging", seq_len=T, vocab=V, shift=k)
    b = draw(task, 32)
    assert torch.equal(b.y[:, :T - k], b.x[:, k:])
    assert (b.y[:, T - k:] == -100).all()
    # a prediction that is exactly right scores accuracy 1 on the T - k labelled steps only
    logits = torch.nn.functional.one_hot(b.y.clamp(min=0), V).float() * 10
    s = task.sums(logits, b)
    assert s["accuracy"] == (32 * (T - k), 32 * (T - k))
    assert task.baselines() == {"loss": pytest.approx(math.log(V)), "accuracy": 1 / V}


@pytest.mark.parametrize("name", ["adding", "copy", "temporal_order", "tagging"])
def test_seeded_and_held_out(name):
    task = get_task(name, seq_len=12)
    s1, s2 = task.train_stream(8, seed=1), task.train_stream(8, seed=1)
    a, b = next(s1), next(s2)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    state = s1.state_dict()
    after = next(s1)
    s2.load_state_dict(state)
    assert torch.equal(next(s2).x, after.x)  # a stream resumes exactly
    assert not torch.equal(next(task.train_stream(8, seed=2)).x, a.x)
    e1, e2 = task.eval_batches(5, 12), task.eval_batches(5, 12)
    assert [len(e) for e in e1] == [5, 5, 2]
    assert all(torch.equal(p.x, q.x) for p, q in zip(e1, e2))
    assert not torch.equal(e1[0].x, next(task.train_stream(5, seed=0)).x)


@pytest.mark.parametrize(
    "name, settings, error, words",
    [
        ("adding", {"seq_len": 1}, ValueError, "T >= 2"),
        ("copy", {"seq_len": 0}, ValueError, "positive"),
        ("copy", {"alphabet": 1}, ValueError, "at least 2"),
        ("temporal_order", {"seq_len": 9}, ValueError, "T >= 10"),
        ("tagging", {"seq_len": 3, "shift": 3}, ValueError, "T > shift"),
        ("adding", {"seq_len": "100"}, TypeError, "expected int"),
        ("adding", {"seq_len": 10.0}, TypeError, "expected int"),
        ("adding", {"length": 10}, ValueError, "unknown setting"),
    ],
)
def test_bad_settings(name, settings, error, words):
    with pytest.raises(error, match=words):
        get_task(name, **settings)


def test_unknown_task():
    with pytest.raises(ValueError, match="expected one of adding"):
        get_task("addition")
    assert set(TASKS) == {"adding", "copy", "temporal_order", "tagging", "char_lm", "forecast", "mnist1d", "japanese_vowels"}
