"""A first look at rnnlab: each of the seed's layers built, run forward and backward, and its
parameter count set beside the seed's closed form."""

import torch

import rnnlab
from rnnlab.analysis import closed_form_parameters, count_parameters

X, H, T, B = 16, 32, 50, 4
torch.manual_seed(0)
x = torch.randn(T, B, X)
print(f"input: T={T} steps, B={B} sequences, X={X} features; hidden size H={H}\n")
print(f"{'layer':<34} {'params':>8} {'closed form':>12}  out shape        grad |dL/dx|")
for name, layer, reset in [
    ("RNN (tanh)", rnnlab.RNN(X, H), "before"),
    ("LSTM", rnnlab.LSTM(X, H), "before"),
    ("GRU (seed, reset before)", rnnlab.GRU(X, H), "before"),
    ("GRU (cuDNN, reset after)", rnnlab.GRU(X, H, reset="after"), "after"),
    ("LSTM, 2 layers, bidirectional", rnnlab.LSTM(X, H, num_layers=2, bidirectional=True), "before"),
]:
    xi = x.clone().requires_grad_()
    out, _ = layer(xi)
    out.pow(2).mean().backward()
    formula = closed_form_parameters(layer.mode, X, H, layer.num_layers, layer.bidirectional, reset=reset)
    print(f"{name:<34} {count_parameters(layer):>8} {formula:>12}  {str(tuple(out.shape)):<16} {xi.grad.norm():.3e}")
print("\nthe seed's closed forms: RNN H(X+H)+H, LSTM 4·(H(X+H)+H), GRU 3·(H(X+H)+H) (+H for reset='after')")
