"""The engine benchmark runs end to end on a tiny grid (structure only: no timing is asserted)."""

import json

from click.testing import CliRunner

from rnnlab.cli import main
from rnnlab.bench import engine as bench


def test_bench_report_structure():
    report = bench.run(grid=((3, 2, 2, 4),), cells=bench.CELLS, threads=1, jax=False, budget_s=0.001,
                       scaling_lengths=(3, 6), variant_shape=(3, 2, 2, 4))
    assert [r.cell for r in report["rows"]] == list(bench.CELLS)
    for row in report["rows"]:
        assert row.path in ("native-cpp", "reference", "torch-onednn")
        assert set(row.train_ms) >= {"native", "torch.nn"}
        assert ("rnnlab-torch" in row.train_ms) == (row.cell != "gru-before")
        assert all(v > 0 for v in [*row.train_ms.values(), *row.infer_ms.values(), *row.saved_mb.values()])
    assert report["sgemm_gflops"] > 0
    text = bench.to_markdown(report)
    assert text.count("\n| gru-before | 3, 2, 2, 4 |") == 2  # one row in each table
    assert "SGEMM rate measured here" in text and "JAX not run" in text and "Targets:" in text
    assert len(json.loads(bench.as_json(report))["rows"]) == 4
    assert set(report["scaling"]) == set(bench.SCALING_CELLS)
    assert all(set(by_T) == {3, 6} and min(by_T.values()) > 0 for by_T in report["scaling"].values())
    assert "| mingru |" in text and "| T = 3 | T = 6 |" in text
    assert len(report["variants"]) == len(bench.VARIANTS)
    assert all(set(r) == {"native", "reference"} and min(r.values()) > 0 for r in report["variants"].values())
    assert "| lstm layer_norm |" in text and "| gru (plain) |" in text and "| lstm zoneout=0.1 |" in text


def test_flops_formula():
    # 6·G·T·B·H·(X+H): an LSTM (G = 4) at T=2, B=3, X=5, H=7
    assert bench.flops("lstm", (2, 3, 5, 7)) == 6 * 4 * 2 * 3 * 7 * 12


def test_saved_bytes_grow_with_sequence_length():
    import torch

    layer = bench._rnnlab_layer("gru-before", 3, 4, "native")
    short, long = bench.saved_mb(layer, torch.randn(10, 2, 3)), bench.saved_mb(layer, torch.randn(20, 2, 3))
    assert 1.8 < long / short < 2.1


def test_cli_quick_without_jax(tmp_path):
    out = tmp_path / "b.md"
    res = CliRunner().invoke(main, ["bench", "--quick", "--no-jax", "--threads", "1", "--cells", "rnn", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| rnn | 20, 2, 4, 8 |" in out.read_text()
    bad = CliRunner().invoke(main, ["bench", "--cells", "transformer"])
    assert bad.exit_code != 0 and "transformer" in bad.output


def test_misses_name_each_target_missed():
    row = bench.Row("gru-before", (50, 128, 256, 512), train_ms={"native": 2.0, "torch.nn": 1.5, "jax": 1.9})
    row.path, row.rnnlab_ms = "native-cpp", 2.0
    fast = bench.Row("rnn", (100, 64, 256, 256), train_ms={"native": 1.0, "torch.nn": 1.2})
    fast.path, fast.rnnlab_ms = "native-cpp", 1.0
    rate = fast.flops / 1e-3 / 1e9  # GFLOP/s of the fast row
    report = {"rows": [row, fast], "sgemm_gflops": rate / 0.9}  # fast row at 90 % of SGEMM, gru-before far above
    assert bench.misses(report) == ["gru-before (50, 128, 256, 512): 1.33 × torch.nn (target ≤ 1.10)"]
    report["sgemm_gflops"] = rate / 0.5  # now the fast row reaches only 50 %
    assert bench.misses(report)[1] == "rnn (100, 64, 256, 256): 50 % of the SGEMM rate (target ≥ 60 %)"
