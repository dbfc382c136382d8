"""``rnnlab unroll``: fresh models side by side, a trained run, and its errors."""

import re

import numpy as np
from click.testing import CliRunner

from rnnlab.cli import main
from rnnlab.tasks import get_task
from rnnlab.train import RunConfig, load_run, train
from rnnlab.viz import unroll


def _invoke(*args):
    return CliRunner().invoke(main, ["unroll", *map(str, args)])


def test_fresh_models_side_by_side(tmp_path):
    out, png = tmp_path / "three.html", tmp_path / "three.png"
    result = _invoke("--cell", "all", "--hidden", "6", "--seq-len", "12", "--out", out, "--png", png, "--view", "bptt")
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert re.search(rf"wrote {re.escape(str(out))} \({len(page.encode()):,} bytes\)", result.output)
    assert page.count('<svg xmlns') == 3 and all(f"{c} at initialisation" in page for c in ("RNN", "LSTM", "GRU"))
    assert png.read_bytes().startswith(b"\x89PNG")


def test_a_trained_run_draws_its_held_out_sample(tmp_path):
    config = RunConfig().replace(**{"task.name": "adding", "task.seq_len": 10, "model.cell": "lstm", "model.hidden": 4,
                                    "model.embedding": 3, "train.steps": 4, "train.eval_every": 2,
                                    "train.progress": False})
    train(config, tmp_path / "run")
    out = tmp_path / "run.html"
    result = _invoke(tmp_path / "run", "--sample", 2, "--out", out)
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    x = get_task("adding", seq_len=10).eval_batches(3, 3)[0].x
    u = unroll(run.model, x, sample=2)
    page = out.read_text(encoding="utf-8")
    first = u.tracks[0].values["f"][0, u.units[0]]
    assert f"{float(f'{first:.7g}')!r}" in page  # the run's own gate value is on the page
    assert np.isfinite(u.tracks[0].values["c"]).all()


def test_errors_name_the_option(tmp_path):
    assert "--sample" in _invoke("--cell", "gru", "--sample", -1, "--out", tmp_path / "a.html").output
    bad_units = _invoke("--cell", "gru", "--units", "0,99", "--out", tmp_path / "a.html")
    assert bad_units.exit_code == 2 and "units: expected distinct ints in [0, 7]" in bad_units.output
    assert "--units" in _invoke("--cell", "gru", "--units", "a,b", "--out", tmp_path / "a.html").output
    assert "path: expected a file name ending in .html" in _invoke("--cell", "gru", "--out", tmp_path / "a.txt").output
    missing = _invoke(tmp_path / "nope", "--out", tmp_path / "a.html")
    assert missing.exit_code == 2 and "run" in missing.output and "nope" in missing.output
    both = _invoke(tmp_path / "nope", "--cell", "gru")
    assert both.exit_code == 2 and "not both" in both.output
