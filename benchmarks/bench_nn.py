"""What rnnlab.nn's per-call weight conversion costs, and what it buys: ``python benchmarks/bench_nn.py [--lm]``.

rnnlab.nn keeps torch.nn's parameter layout and converts it to the seed's layout on every call
(``rnnlab.nn.stack``). This times, per shape, (a) the conversion alone (its forward; its backward is a
copy of each gradient block, paid inside the step) and (b) one training step (forward + backward) of ``rnnlab.nn.X``
against ``rnnlab.X`` holding the same function in its own layout, both on engine="native", and of
torch.nn.X. Medians of repeated runs (the three steps timed in turn), float32, on the CPU threads torch is given.

``--lm`` times instead the training step of a whole model, a 2-level character language model
(embedding 64 → LSTM or GRU, H = 256 → linear over 96 symbols; T = 100, B = 32; cross-entropy, backward,
SGD step), written with torch.nn's module and with rnnlab.nn's (the one-line change), the two timed in turn.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rnnlab
import rnnlab.nn
from rnnlab.nn.stack import TorchStack, flat

SHAPES = [("lstm", 100, 32, 64, 128, 2), ("gru", 100, 32, 64, 128, 2), ("lstm", 50, 64, 256, 256, 2)]
CLASSES = {"lstm": (torch.nn.LSTM, rnnlab.nn.LSTM, rnnlab.LSTM), "gru": (torch.nn.GRU, rnnlab.nn.GRU, rnnlab.GRU)}


def median_ms(fn, repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def interleaved_ms(fns, repeats: int = 30) -> list[float]:
    """Median milliseconds of each of ``fns``, timed in turn (so a change in the machine's load hits all alike)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [1e3 * statistics.median(t) for t in times]


def conversion(module) -> None:
    """What a call adds before the engine runs: the stack view and every level's converted weights."""
    levels = [[flat(module, k, 0)] for k in range(module.num_layers)]
    stack = TorchStack(module._cell, module._cell.SPEC.torch.options(module), levels, module.hidden_size,
                       dropout=0.0, training=True, engine="native")
    for k in range(module.num_layers):
        stack.weights(k, 0)


def step(module, x) -> None:
    out = module(x)[0]
    out.sum().backward()


class CharLM(torch.nn.Module):
    def __init__(self, rnn_cls, vocab: int = 96, embed: int = 64, hidden: int = 256):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, embed)
        self.rnn = rnn_cls(embed, hidden, num_layers=2)
        self.head = torch.nn.Linear(hidden, vocab)

    def forward(self, tokens):  # (T, B) -> logits (T, B, V)
        return self.head(self.rnn(self.embed(tokens))[0])


def lm_table(repeats: int = 20) -> None:
    print("| model | torch.nn step | rnnlab.nn step | rnnlab.nn / torch.nn |")
    print("| --- | ---: | ---: | ---: |")
    for name, pair in (("2-level LSTM char LM", (torch.nn.LSTM, rnnlab.nn.LSTM)), ("2-level GRU char LM", (torch.nn.GRU, rnnlab.nn.GRU))):
        torch.manual_seed(0)
        models = [CharLM(cls) for cls in pair]
        models[1].load_state_dict(models[0].state_dict())
        tokens = torch.randint(0, 96, (101, 32))

        def train_step(model, opt):
            loss = torch.nn.functional.cross_entropy(model(tokens[:-1]).flatten(0, 1), tokens[1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps = [lambda m=m, o=torch.optim.SGD(m.parameters(), lr=0.1): train_step(m, o) for m in models]
        ref, new = interleaved_ms(steps, repeats)
        print(f"| {name} | {ref:.1f} ms | {new:.1f} ms | {new / ref:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", action="store_true", help="time a whole char-LM training step instead")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.lm:
        lm_table()
        return
    print("| cell | T, B, X, H, levels | conversion (forward) | rnnlab.nn step | rnnlab step | torch.nn step |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for kind, T, B, X, H, L in SHAPES:
        ref_cls, nn_cls, own_cls = CLASSES[kind]
        ref = ref_cls(X, H, num_layers=L)
        twin = nn_cls(X, H, num_layers=L)
        twin.engine = "native"
        own = own_cls.from_torch(ref, engine="native")
        x = torch.randn(T, B, X)
        times = [median_ms(lambda: conversion(twin), 100)] + interleaved_ms([lambda m=m: step(m, x) for m in (twin, own, ref)])
        print(f"| {kind} | {T}, {B}, {X}, {H}, {L} | " + " | ".join(f"{t:.3f} ms" for t in times) + " |")


if __name__ == "__main__":
    main()
