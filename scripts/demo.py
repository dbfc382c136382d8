"""The rnnlab demo: the seed's three cells in numbers, then a real training run.

1. Each of the seed's layers built and its parameter count set beside the seed's closed form.
2. An LSTM trained on the adding problem at T = 100 (configs/adding_lstm.toml): always predicting
   1 scores MSE 0.167; the network must carry two marked values across up to 100 steps to do
   better. The run goes to runs/demo-adding-lstm/ (replacing a previous demo's run).
"""

import time
from pathlib import Path

import torch

import rnnlab
from rnnlab.analysis import closed_form_parameters, count_parameters
from rnnlab.train import Trainer, load_config

ROOT = Path(__file__).resolve().parents[1]
X, H = 16, 32
print(f"1. the seed's layers, X={X} inputs, H={H} hidden: parameters counted and by the closed form")
for name, layer, reset in [
    ("RNN (tanh)", rnnlab.RNN(X, H), "before"),
    ("LSTM", rnnlab.LSTM(X, H), "before"),
    ("GRU (seed, reset before)", rnnlab.GRU(X, H), "before"),
    ("GRU (cuDNN, reset after)", rnnlab.GRU(X, H, reset="after"), "after"),
]:
    formula = closed_form_parameters(layer.mode, X, H, layer.num_layers, layer.bidirectional, reset=reset)
    print(f"   {name:<26} {count_parameters(layer):>6} {formula:>6}")

config = load_config(ROOT / "configs" / "adding_lstm.toml", {"name": "demo-adding-lstm"})
run_dir = ROOT / "runs" / config.name
print(f"\n2. training an LSTM (H={config.model.hidden}) on the adding problem, T={config.task.seq_len}, "
      f"{config.train.steps} steps of batch {config.train.batch_size}, {torch.get_num_threads()} CPU threads")
start = time.perf_counter()
trainer = Trainer(config, run_dir, overwrite=True)
print(f"   {trainer.parameters:,} parameters; baseline (always predict 1): MSE {trainer.task.baselines()['mse']:.3f}")
try:
    result = trainer.fit()
finally:
    trainer.close()
seconds = time.perf_counter() - start
print("   held-out MSE by step:", ", ".join(f"{e['step']}: {e['mse']:.4f}" for e in result.evals()))
norms = [r["grad_norm"] for r in result.history if r["kind"] == "train"]
print(f"   largest pre-clip gradient norm logged: {max(norms):.2f} (clipped to {config.train.clip})")
print(f"   final held-out MSE {result.final['mse']:.4f} (baseline {result.baselines['mse']:.3f}) after {seconds:.0f} s")
print(f"\noutputs: {run_dir}/ (config.toml, metrics.jsonl, checkpoints/)")
print(f"next: rnnlab eval {run_dir.relative_to(ROOT)}   |   rnnlab train --config configs/adding_lstm.toml --help")
