"""The engine benchmark runs end to end on a tiny grid (structure only: no timing is asserted)."""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from rnnlab.cli import main
from rnnlab.bench import engine as bench
from rnnlab.bench import onnx_peer, split


def _finite(*values) -> bool:
    return all(math.isfinite(v) for v in values)


def test_bench_report_structure():
    with_onnx = onnx_peer.version() is not None
    threads = torch.get_num_threads()
    report = bench.run(grid=((3, 2, 2, 4),), cells=bench.CELLS, threads=threads + 1, jax=False, budget_s=0.001,
                       scaling_lengths=(3, 6), variant_shape=(3, 2, 2, 4), batch1_shapes=((3, 1, 2, 4),),
                       stacked_shapes=((4, 2, 2, 4),), stream_steps=3)
    assert torch.get_num_threads() == threads  # the caller's thread count set back
    assert report["threads"] == threads + 1
    assert [r.cell for r in report["rows"]] == list(bench.CELLS)
    for row in report["rows"]:
        for path in (row.path, row.infer_path):  # the engine's path, then the native loops' routes the call took
            engine, *routes = path.replace("split back", "split-back").replace("rows back", "rows-back").split()
            assert engine in ("native-cpp", "reference", "torch-onednn") and set(routes) <= {
                "split", "split-back", "rows", "rows-back", "small", "bf16"}
        assert row.infer_path.startswith("native-cpp small") == (bench.ops.available() and row.path != "torch-onednn")
        assert set(row.train_ms) >= {"native", "torch.nn"}
        assert ("rnnlab-torch" in row.train_ms) == (row.cell != "gru-before")
        assert ("onnxruntime" in row.infer_ms) == with_onnx
        assert all(v > 0 for v in [*row.train_ms.values(), *row.infer_ms.values(), *row.saved_mb.values()])
        assert set(row.bf16_ms) == set(row.bf16_out) == {"rnnlab", "torch.nn"} and min(row.bf16_ms.values()) > 0
        assert set(row.bf16_out.values()) <= {"float32", "bfloat16"}
        assert _finite(bench.infer_ratio(row), bench.bf16_ratio(row))
    assert report["sgemm_gflops"] > 0 and report["bf16_gflops"] > 0
    text = bench.to_markdown(report)
    # one row in each table: training, inference, bf16 and (with the native library) the split
    assert text.count("\n| gru-before | 3, 2, 2, 4 |") == (4 if bench.ops.available() else 3)
    assert "SGEMM rate measured here" in text and "JAX not run" in text and "Targets:" in text
    assert "bf16 kernel: " in text and "bfloat16 GEMM rate" in text
    assert ("onnxruntime " + (onnx_peer.version() or "not installed")) in text
    data = json.loads(bench.as_json(report))
    assert len(data["rows"]) == 4 and len(data["batch1"]) == 4 and len(data["stacked"]) == 8 and len(data["stream"]) == 4
    assert set(report["scaling"]) == set(bench.SCALING_CELLS)
    assert all(set(by_T) == {3, 6} and min(by_T.values()) > 0 for by_T in report["scaling"].values())
    assert "| mingru |" in text and "| T = 3 | T = 6 |" in text
    assert len(report["variants"]) == len(bench.VARIANTS)
    assert all(set(r) == {"native", "reference"} and min(r.values()) > 0 for r in report["variants"].values())
    assert "| lstm layer_norm |" in text and "| gru (plain) |" in text and "| lstm zoneout=0.1 |" in text
    assert "Speed targets" in text
    assert bench.to_markdown(bench.from_json(bench.as_json(report))) == text  # the JSON renders the same page


def test_speed_misses_name_each_row_over_its_target():
    slow = bench.Row("lstm", (100, 32, 64, 128), train_ms={"native": 2.0, "torch.nn": 2.0},
                     infer_ms={"rnnlab": 1.0, "torch.nn": 2.0, "onnxruntime": 0.5},
                     bf16_ms={"rnnlab": 1.0, "torch.nn": 2.0})
    slow.rnnlab_ms = 2.0
    fast = bench.Row("gru-after", (3, 1, 2, 4), infer_ms={"rnnlab": 1.0, "torch.nn": 1.0})
    report = {"rows": [slow], "batch1": [fast],
              "stacked": [{"cell": "rnn", "shape": (4, 2, 2, 4), "directions": 2,
                           "train_ms": {"rnnlab": 0.8, "torch.nn": 1.0}}]}
    missed = bench.speed_misses(report)
    assert missed == {"training": ["lstm (100, 32, 64, 128) 1.00"], "bf16": [],
                      "inference": ["lstm (100, 32, 64, 128) 2.00"],
                      "stacked": ["rnn (4, 2, 2, 4; bidirectional) 0.80"]}


def test_speed_misses_give_the_per_round_ratios():
    """With the rounds' times, a miss carries the lowest and highest of its per-round ratios: in each round rnnlab
    over the fastest peer of that round (JAX, timed in its own process, with its one time in every round)."""
    row = bench.Row("rnn", (50, 128, 256, 512), path="native-cpp",
                    train_ms={"native": 9.0, "torch.nn": 10.0, "jax": 11.0},
                    train_rounds={"native": [9.0, 8.0, 10.0], "torch.nn": [10.0, 12.0, 9.0]},
                    infer_ms={"rnnlab": 3.0, "torch.nn": 2.0, "onnxruntime": 4.0},
                    infer_rounds={"rnnlab": [3.0, 3.3, 2.0], "torch.nn": [2.0, 3.0, 2.5], "onnxruntime": [4.0, 4, 4]})
    row.rnnlab_ms = 9.0
    stacked = {"cell": "lstm", "shape": (4, 2, 2, 4), "directions": 1, "train_ms": {"rnnlab": 0.9, "torch.nn": 1.0},
               "train_rounds": {"rnnlab": [0.9, 0.7, 1.0], "torch.nn": [1.0, 1.0, 1.0]}}
    assert bench.train_round_ratios(row) == pytest.approx([0.9, 8 / 11, 10 / 9])
    assert bench.infer_round_ratios(row) == pytest.approx([1.5, 1.1, 0.8])
    missed = bench.speed_misses({"rows": [row], "stacked": [stacked]})
    assert missed["training"] == ["rnn (50, 128, 256, 512) 0.90 (rounds 0.73–1.11)"]
    assert missed["inference"] == ["rnn (50, 128, 256, 512) 1.50 (rounds 0.80–1.50)"]
    assert missed["stacked"] == ["lstm (4, 2, 2, 4) 0.90 (rounds 0.70–1.00)"]
    assert bench.bf16_round_ratios(row) == []  # no bf16 rounds: no brackets


def test_round_ratios_refuse_rounds_that_do_not_pair():
    from rnnlab.bench import timing

    assert timing.round_ratios([2.0, 4.0], {"a": [1.0, 8.0], "b": 2.0}) == [2.0, 2.0]
    assert timing.round_ratios([], {"a": 1.0}) == [] and timing.round_ratios([1.0], {}) == []
    with pytest.raises(ValueError, match="every peer's rounds must number 2, as ours do"):
        timing.round_ratios([2.0, 4.0], {"a": [1.0, 8.0, 3.0]})


def test_bench_batch1_stream_and_stacked_rows():
    report = bench.run(grid=(), cells=("lstm", "gru-before"), threads=1, jax=False, budget_s=0.001,
                       scaling_lengths=(), variant_shape=None, batch1_shapes=((3, 1, 2, 4),),
                       stacked_shapes=((4, 2, 2, 4),), stream_steps=3)
    assert [(r.cell, r.shape) for r in report["batch1"]] == [("lstm", (3, 1, 2, 4)), ("gru-before", (3, 1, 2, 4))]
    assert all({"rnnlab", "torch.nn"} <= set(r.infer_ms) and _finite(*r.infer_ms.values()) for r in report["batch1"])
    assert [(r["cell"], r["X"], r["H"]) for r in report["stream"]] == [("lstm", 2, 4), ("gru-before", 2, 4)]
    for r in report["stream"]:
        assert {"Streamer", "torch.nn"} <= set(r["step_us"]) and min(r["step_us"].values()) > 0
    assert [(r["cell"], r["directions"]) for r in report["stacked"]] == [("lstm", 1), ("lstm", 2), ("gru-before", 1),
                                                                        ("gru-before", 2)]
    assert all(set(r["train_ms"]) == {"rnnlab", "torch.nn"} and min(r["train_ms"].values()) > 0
               for r in report["stacked"])
    assert all(len(r["train_rounds"]["rnnlab"]) == bench.ROUNDS for r in report["stacked"])  # each round's time
    assert all(len(r.infer_rounds["rnnlab"]) == bench.ROUNDS for r in report["batch1"])
    text = bench.to_markdown(report)
    assert "Inference at batch 1" in text and "| lstm | 3, 1, 2, 4 |" in text
    assert "Streaming at batch 1" in text and "| gru-before | 2, 4 |" in text
    assert "Stacked layers" in text and "| gru-before | 4, 2, 2, 4 | 2 |" in text


@pytest.mark.skipif(not bench.ops.available(), reason="the native library is not built")
def test_split_times_the_weight_gradients_as_the_operator_runs_them(monkeypatch):
    """split.weight_grad is ∂aᵀ · operand (float64 reference) in both of the operator's forms, and runs the swapped
    form, (operandᵀ · ∂a)ᵀ, exactly where rnnlab::swaps_weight_grad says the operator does."""
    torch.manual_seed(0)
    da, x = torch.randn(300, 48), torch.randn(300, 16)
    want = (da.double().t() @ x.double()).float()
    asked, products = [], []
    mm = torch.mm
    monkeypatch.setattr(split.torch, "mm", lambda a, b: products.append((tuple(a.shape), tuple(b.shape))) or mm(a, b))
    for swap in (True, False):
        class Rule:  # the operator's rule, forced to one answer and recorded
            def swaps_weight_grad(self, rows, gh, k, swap=swap):
                asked.append((rows, gh, k))
                return swap
        monkeypatch.setattr(split.torch.ops, "rnnlab", Rule(), raising=False)
        got = split.weight_grad(da, x)
        assert got.is_contiguous() and got.shape == (48, 16)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert asked == [(300, 48, 16)] * 2
    assert products == [((16, 300), (300, 48)), ((48, 300), (300, 16))]  # swapped, then as given
    # bf16 operands: never swapped (the bf16 mode's MKL GEMM), and the rule is not asked
    monkeypatch.setattr(split.torch.ops, "rnnlab", None, raising=False)
    got = split.weight_grad(da.bfloat16(), x.bfloat16())
    assert products[-1] == ((48, 300), (300, 16))
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.3)


@pytest.mark.skipif(not bench.ops.available(), reason="the native library is not built")
def test_split_parts_add_up_to_the_step():
    parts = split.split("gru-before", (5, 3, 4, 8), step_ms=10.0, sgemm_gflops=100.0, budget_s=0.001)
    assert parts["recurrent"] > 0 and parts["large"] > 0
    assert parts["recurrent"] + parts["large"] + parts["rest"] == pytest.approx(parts["step"])
    assert _finite(parts["recurrent_sgemm"], parts["large_sgemm"]) and min(parts["recurrent_sgemm"], parts["large_sgemm"]) > 0
    assert torch.ops.rnnlab.time_step_gemms(2, 4, 12, 8, 3) > 0
    with pytest.raises(ValueError):
        torch.ops.rnnlab.time_step_gemms(2, 4, 12, 13, 3)  # first > GH


@pytest.mark.skipif(not bench.ops.available(), reason="the native library is not built")
def test_split_times_a_row_split_steps_products_as_it_runs_them(monkeypatch):
    """Where the step splits by row, (a) is timed as two halves of the batch on a thread each (rows=True)."""
    assert [split.kernel(c) for c in bench.CELLS] == ["rnn_tanh", "lstm", "gru_before", "gru_after"]
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert torch.ops.rnnlab.time_step_gemms(9, 16, 64, 64, 3, rows=True) > 0
        with pytest.raises(ValueError, match="rows: expected B >= 2"):
            torch.ops.rnnlab.time_step_gemms(1, 16, 64, 64, 3, rows=True)
        calls = []
        ops = torch.ops.rnnlab

        class Spy:  # torch.ops.rnnlab with time_step_gemms recorded
            def __getattr__(self, name):
                if name != "time_step_gemms":
                    return getattr(ops, name)
                return lambda *a, **k: calls.append(k["rows"]) or ops.time_step_gemms(*a, **k)

        monkeypatch.setattr(split.torch.ops, "rnnlab", Spy(), raising=False)
        for cell in ("lstm", "gru-after"):
            shape = (3, 16, 8, 32)  # W_hh far below half the L2, B >= 8: split by row in training
            split.step_gemms_ms(cell, shape, 0.001)
            assert ops.splits_rows(split.kernel(cell), 16, 32, True)  # (the shape splits by row)
            assert calls[-1] is True
        split.step_gemms_ms("lstm", (3, 1, 8, 32), 0.001)
        assert calls[-1] is False
    finally:
        torch.set_num_threads(old)


def test_split_flops():
    # (a) T steps of (B, H)·(H, G·H) forward and (B, G·H)·(G·H, H) backward; (b) x·W_ihᵀ, ∂W_ih, ∂W_hh
    T, B, X, H = 2, 3, 5, 7
    assert split.step_gemm_flops("lstm", (T, B, X, H)) == 2 * T * 2 * B * H * 4 * H
    assert split.large_gemm_flops("lstm", (T, B, X, H)) == 2 * T * B * 4 * H * (2 * X + H)
    assert split.first_block("gru-before", H) == 2 * H and split.first_block("gru-after", H) == 3 * H


def test_bf16_kernel_named_by_the_operators(monkeypatch):
    monkeypatch.delattr(bench.ops, "bf16_kernel", raising=False)
    assert bench.bf16_kernel() == "float32 (autocast casts up)"
    monkeypatch.setattr(bench.ops, "bf16_kernel", lambda: "bf16 loops (AVX-512 BF16)", raising=False)
    assert bench.bf16_kernel() == "bf16 loops (AVX-512 BF16)"


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
    data = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["bench", "--quick", "--no-jax", "--threads", "1", "--cells", "rnn", "--out", str(out),
                                    "--json", str(data)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    again = tmp_path / "again.md"
    rendered = CliRunner().invoke(main, ["bench", "--render", str(data), "--out", str(again)])
    assert rendered.exit_code == 0, rendered.output
    assert again.read_text() == text  # the JSON renders the same page, timing nothing
    broken = CliRunner().invoke(main, ["bench", "--render", str(out)])  # markdown, not JSON
    assert broken.exit_code != 0 and "--render" in broken.output
    assert "| rnn | 20, 2, 4, 8 |" in text and "| rnn | 10, 1, 4, 8 |" in text and "| rnn | 10, 2, 4, 8 | 2 |" in text
    assert "bf16 kernel: " in text and "Where the native engine's training step goes" in text
    assert "onnxruntime not run" not in text
    quiet = CliRunner().invoke(main, ["bench", "--quick", "--no-jax", "--no-onnxruntime", "--threads", "1", "--cells", "lstm"])
    assert quiet.exit_code == 0, quiet.output
    assert "onnxruntime not run" in quiet.output
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


def test_bf16_path_and_split(monkeypatch):
    """Which path a layer's autocast step runs, and the bf16 split of a step (the per-step GEMMs as the bf16 mode
    runs them) where this machine has the bf16 kernel."""
    small = bench._rnnlab_layer("gru-after", 4, 8, "auto")
    assert bench.bf16_path(small, torch.randn(3, 2, 4)) == "native-cpp float32"  # below the mode's threshold
    big = bench._rnnlab_layer("lstm", 8, 64, "auto")
    x = torch.randn(3, 64, 8)  # B·H = 4096: the native loops in training (oneDNN's kernel is auto's for inference only)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("RNNLAB_ROWS", "0")
        assert bench.bf16_path(big, x).startswith("native-cpp")
        monkeypatch.delenv("RNNLAB_ROWS")
        assert bench.bf16_path(big, x).startswith("native-cpp")
    finally:
        torch.set_num_threads(old)
    if not bench.bf16_kernel().startswith("mkl-bf16"):
        with pytest.raises(ValueError, match="bf16: expected False"):
            torch.ops.rnnlab.time_step_gemms(64, 64, 192, 192, 2, bf16=True)
        return
    assert bench.bf16_path(bench._rnnlab_layer("gru-after", 8, 64, "auto"), x) == "native-cpp bf16"
    p = split.split("gru-before", (3, 64, 8, 64), 5.0, 1000.0, 0.001, bf16=True)
    assert p["recurrent"] > 0 and p["large"] > 0 and math.isclose(p["rest"], 5.0 - p["recurrent"] - p["large"])
    row = bench.Row("gru-before", (3, 64, 8, 64), split=p, split_bf16=p)
    lines = bench._split_lines({"rows": [row]})
    assert sum(line.startswith("| gru-before | 3, 64, 8, 64 |") for line in lines) == 2
    assert any("% bf16 |" in line for line in lines)


def test_rounds_take_the_peers_in_turn(monkeypatch):
    """``timing.rounds_ms`` times its functions round after round, each in turn, and gives each the median of its
    rounds' medians: a slow minute falls on every peer alike instead of deciding one peer's block."""
    from rnnlab.bench import timing

    calls: list[tuple[str, float]] = []

    def fake_median(fn, budget_s, min_repeats, warmup):
        calls.append((fn(), budget_s, warmup))
        return {"a": [5.0, 1.0, 2.0], "b": [9.0, 7.0, 8.0]}[calls[-1][0]][sum(c[0] == calls[-1][0] for c in calls) - 1]

    monkeypatch.setattr(timing, "median_ms", fake_median)
    out = timing.rounds_ms({"a": lambda: "a", "b": lambda: "b"}, budget_s=0.3, rounds=3)
    assert [c[0] for c in calls] == ["a", "b"] * 3  # in turn, round after round
    assert all(c[1] == pytest.approx(0.1) for c in calls)  # the budget shared over the rounds
    assert [c[2] for c in calls] == [2, 2, 1, 1, 1, 1]  # warmed fully in the first round, once a call after
    assert out == {"a": 2.0, "b": 8.0}  # the median of each one's rounds
    with pytest.raises(ValueError, match="rounds must be >= 1, got 0"):
        timing.rounds_ms({"a": lambda: "a"}, rounds=0)
