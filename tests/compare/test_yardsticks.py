"""The yardsticks' protocols: model sizes as their sources state them, the schedule that runs them,
and the published numbers' bookkeeping."""

import pytest
import torch

from rnnlab.analysis import count_parameters
from rnnlab.compare import yardsticks as ys
from rnnlab.compare.protocol import CELLS, PROFILES, schedule, yardstick_spec
from rnnlab.compare.training import RunSpec, build


def _with_hidden(spec: RunSpec, h: int) -> RunSpec:
    return RunSpec(**{**spec.__dict__, "model": tuple((k, h if k == "hidden" else v) for k, v in spec.model)})


@pytest.mark.parametrize("yardstick", [ys.bai_adding(), ys.bai_copy()], ids=lambda y: y.key)
def test_hidden_sizes_come_nearest_the_sources_model_size(yardstick):
    for cell in CELLS:
        spec = yardstick_spec(yardstick, cell, 0, 8)
        count = lambda h: count_parameters(build(_with_hidden(spec, h))[1])
        H = yardstick.hidden_of(cell)
        n = count(H)
        assert abs(n - yardstick.parameters) <= min(abs(count(H - 1) - yardstick.parameters),
                                                    abs(count(H + 1) - yardstick.parameters))
        assert abs(n - yardstick.parameters) < 0.02 * yardstick.parameters


def test_mnist1d_models_are_the_authors_gru_shape():
    y = ys.mnist1d()
    spec = yardstick_spec(y, "gru", 0, 8)
    _, model = build(spec)
    assert dict(spec.model)["reset"] == "after" and model.config.bidirectional and model.config.hidden == 6
    # the authors' GRUBase: torch.nn.GRU(1, 6, bidirectional) + Linear(2·6·40, 10) = 324 + 4810 parameters; rnnlab's
    # GRU keeps one bias per gate plus b_hn (torch keeps two per gate: 12 redundant per direction), and the 1→1
    # input map adds 2
    assert count_parameters(model) == 324 + 4810 - 2 * 12 + 2
    for cell in ("rnn", "lstm"):
        assert "reset" not in dict(yardstick_spec(y, cell, 0, 8).model)  # a GRU setting stays with the GRU


def test_standard_profile_runs_every_yardstick_for_every_cell_and_seed():
    p = PROFILES["standard"]
    assert [y.key for y in p.yardsticks] == ["mnist1d", "japanese_vowels", "adding600", "copy1000"]
    runs = schedule(p)["yardsticks"]
    assert len(runs) == len(p.yardsticks) * len(CELLS) * len(p.seeds)
    assert len({spec.key() for _, spec in runs}) == len(runs)
    assert not PROFILES["quick"].yardsticks  # quick stays quick
    full = {y.key: y for y in PROFILES["full"].yardsticks}
    assert full["adding600"].steps == full["adding600"].paper_steps  # full runs the source's budget


def test_published_numbers_name_their_source():
    for y in (ys.mnist1d(), ys.japanese_vowels(), ys.bai_adding(), ys.bai_copy()):
        assert y.published
        for p in y.published:
            assert p.source and p.value > 0
            assert p.verified or "not verified" in p.note  # an unverified number says so
    assert ys.mnist1d().published_for("gru").value == 0.91
    assert ys.mnist1d().published_for("lstm").model == "gru"  # the RNN and LSTM stand in the GRU's place
    assert ys.japanese_vowels().published_for("lstm").model == "passing-through regions"
    assert ys.bai_copy().published_for("rnn").model == "rnn"
    # the copy task's memoryless cross-entropy is 10 ln 8 / 1020: the published LSTM sits on it
    import math
    assert ys.bai_copy().published_for("lstm").value == pytest.approx(10 * math.log(8) / 1020, abs=1e-4)


def test_adding_anywhere_puts_two_distinct_markers_anywhere():
    from rnnlab.tasks import get_task

    task = get_task("adding", seq_len=6, placement="anywhere")
    b = task.draw(4000, torch.Generator().manual_seed(0))
    markers = b.x[..., 1]
    assert torch.all(markers.sum(1) == 2)
    torch.testing.assert_close((b.x[..., 0] * markers).sum(1), b.y)
    share = markers.mean(0)  # every step is marked with probability 2/T
    assert torch.all((share - 2 / 6).abs() < 0.03)
    halves = get_task("adding", seq_len=6).draw(500, torch.Generator().manual_seed(0)).x[..., 1]
    assert torch.all(halves[:, :3].sum(1) == 1) and torch.all(halves[:, 3:].sum(1) == 1)
    with pytest.raises(ValueError, match="task.placement"):
        get_task("adding", placement="middle")
