"""The yardsticks' real data: MNIST-1D from rnnlab's own generator (against the mnist1d package's
arrays), the Japanese vowels from rnnlab's .ts parser, and the padded, variable-length batches that
must read exactly like their sequences one at a time."""

import importlib.util

import numpy as np
import pytest
import torch

from rnnlab.models import ModelConfig, SequenceModel
from rnnlab.tasks import Batch, ModelSpec, get_task
from rnnlab.tasks.japanese_vowels import default_folder, pad, read_ts
from rnnlab.tasks.mnist1d import _gaussian_filter, make_dataset

needs_aeon_data = pytest.mark.skipif(default_folder() is None, reason="the Japanese vowels .ts files come with "
                                     "'pip install --no-deps aeon' (make's setup installs them)")


@pytest.fixture(scope="module")
def mnist1d_data():
    return make_dataset()


def test_mnist1d_generator_equals_the_packages(mnist1d_data):
    if importlib.util.find_spec("mnist1d") is None or importlib.util.find_spec("scipy") is None:
        pytest.skip("the mnist1d package (and scipy, which it needs) is not installed")
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset as reference

    ref = reference(get_dataset_args())
    for key in ("x", "y", "x_test", "y_test"):
        assert mnist1d_data[key].shape == ref[key].shape, key
        np.testing.assert_allclose(mnist1d_data[key], ref[key], rtol=0, atol=1e-12, err_msg=key)


def test_mnist1d_shapes_and_standardisation(mnist1d_data):
    d = mnist1d_data
    assert d["x"].shape == (4000, 40) and d["x_test"].shape == (1000, 40)
    assert np.bincount(np.concatenate([d["y"], d["y_test"]])).tolist() == [500] * 10
    everything = np.concatenate([d["x"], d["x_test"]])
    assert abs(everything.mean()) < 1e-12 and everything.std() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_filter_is_scipys():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).normal(size=72)
    np.testing.assert_allclose(_gaussian_filter(x, 2), ndimage.gaussian_filter(x, 2), rtol=0, atol=1e-14)


def test_mnist1d_stream_reads_the_training_set_in_order():
    task = get_task("mnist1d")
    stream = task.train_stream(1500, seed=7)
    batches = [next(stream) for _ in range(3)]
    assert torch.equal(batches[0].x, task.x[:1500]) and torch.equal(batches[1].y, task.y[1500:3000])
    assert torch.equal(batches[2].x, task.x[3000:])  # the last batch of a pass is cut short, as in the authors' loop
    assert sum(len(b) for b in task.eval_batches(300, 0)) == 1000
    with pytest.raises(ValueError, match="task.head"):
        get_task("mnist1d", head="middle")


def test_flat_head_is_the_mnist1d_authors_gru():
    """The "flat" head on a bidirectional GRU (reset after, input map set to the identity) computes
    the dataset authors' GRU classifier: torch.nn.GRU, then a linear map of all steps' outputs."""
    torch.manual_seed(0)
    spec = ModelSpec("reals", 1, 10, "flat", steps=40)
    model = SequenceModel(spec, ModelConfig(cell="gru", reset="after", hidden=6, embedding=1, bidirectional=True,
                                            init="torch")).double()
    with torch.no_grad():
        model.input_map.weight.fill_(1.0)
        model.input_map.bias.zero_()
    gru = model.rnn.to_torch().double()
    x = torch.randn(5, 40, 1, dtype=torch.float64)
    ref_out, _ = gru(x)  # (B, 40, 12)
    ref = model.head(ref_out.reshape(5, -1))
    torch.testing.assert_close(model(x)[0], ref, rtol=1e-10, atol=1e-12)


def test_read_ts_parses_and_names_bad_lines(tmp_path):
    good = tmp_path / "a.ts"
    good.write_text("# comment\n@problemName x\n@classLabel true a b\n@data\n1,2,3:4,5,6:a\n7,8:9,10:b\n", encoding="utf-8")
    series, labels, classes = read_ts(good)
    assert classes == ["a", "b"] and labels == ["a", "b"]
    assert series[0].tolist() == [[1, 4], [2, 5], [3, 6]] and series[1].shape == (2, 2)
    bad = tmp_path / "b.ts"
    bad.write_text("@classLabel true a b\n@data\n1,2,3:4,5:a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="b.ts line 3: expected every dimension to have the same length"):
        read_ts(bad)
    bad.write_text("@classLabel true a b\n@data\n1,2:4,5:c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3: expected a label among"):
        read_ts(bad)
    bad.write_text("@classLabel true a b\n@data\n1,?:4,5:a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="comma-separated numbers"):
        read_ts(bad)
    with pytest.raises(ValueError, match="path: expected a .ts file"):
        read_ts(tmp_path / "missing.ts")
    with pytest.raises(ValueError, match="task.path: expected a folder holding"):
        get_task("japanese_vowels", path=str(tmp_path / "nowhere"))


@needs_aeon_data
def test_japanese_vowels_split_and_lengths():
    task = get_task("japanese_vowels")
    assert len(task.train) == 270 and len(task.test) == 370
    assert task.spec.input_size == 12 and task.spec.output_size == 9
    lengths = [len(s) for s in task.train + task.test]
    assert min(lengths) == 7 and max(lengths) == 29
    assert torch.bincount(task.y).tolist() == [30] * 9
    assert task.baselines()["accuracy"] == pytest.approx(88 / 370)
    frames = torch.cat(task.train)
    torch.testing.assert_close(frames.mean(0), torch.zeros(12, dtype=torch.float64), rtol=0, atol=1e-12)
    stream = task.train_stream(32, seed=0)
    b = next(stream)
    assert b.x.shape[0] == 32 and int(b.lengths.max()) == b.x.shape[1]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_reaches_the_output(cell, bidirectional):
    """A padded batch with lengths gives each sequence the logits it gets alone, unpadded; and the
    padding's values do not matter."""
    torch.manual_seed(1)
    model = SequenceModel(ModelSpec("reals", 3, 4, "last"), ModelConfig(cell=cell, hidden=5, embedding=4,
                                                                       bidirectional=bidirectional)).double()
    seqs = [torch.randn(n, 3).double() for n in (7, 3, 5)]  # float32 values: pad() keeps them exactly
    x, lengths = pad(seqs)
    x = x.double()
    alone = torch.cat([model(s.unsqueeze(0))[0] for s in seqs])
    torch.testing.assert_close(model(x, lengths=lengths)[0], alone, rtol=1e-10, atol=1e-12)
    noisy = x.clone()
    for i, n in enumerate(lengths.tolist()):
        noisy[i, n:] = 1e3
    torch.testing.assert_close(model(noisy, lengths=lengths)[0], alone, rtol=1e-10, atol=1e-12)
    assert Batch(x, torch.zeros(3), lengths=lengths).model_kwargs()["lengths"] is lengths
