"""Character-level language modelling on any UTF-8 text, scored in bits per character.

The text (``task.path``, or the standard-library corpus of ``corpus.default_corpus``) is split
into a training part and a held-out tail (``val_fraction``). The vocabulary is every character of
the whole text. Training reads the training part as B parallel streams (B = batch size) in
chunks of ``seq_len`` steps, predicting each next character; consecutive chunks continue the same
streams, so the trainer carries the (detached) state across them: truncated BPTT.

Baseline: the unigram entropy of the training text, in bits per character (a model that ignores
context entirely can do no better).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .base import LOG2, Batch, Config, ModelSpec, Stream, Task, check_positive, cross_entropy_sums
from .corpus import default_corpus, read_text


@dataclass
class CharLMConfig(Config):
    path: str = ""  # a UTF-8 text file; "" for the standard-library corpus
    seq_len: int = 100  # steps per truncated-BPTT chunk
    val_fraction: float = 0.1  # the held-out tail of the text
    max_chars: int = 0  # read at most this many characters; 0 for all

    def __post_init__(self):
        check_positive("task.seq_len", self.seq_len)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"task.val_fraction: expected a float in (0, 1), got {self.val_fraction}")
        if self.max_chars < 0:
            raise ValueError(f"task.max_chars: expected 0 (all) or a positive int, got {self.max_chars}")


class TextStream(Stream):
    """``ids`` cut into B parallel streams, read in consecutive chunks of ``seq_len``."""

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, part: str):
        per_stream = ids.numel() // batch_size
        if per_stream < seq_len + 1:
            raise ValueError(
                f"task.seq_len: the {part} text ({ids.numel()} characters) split into {batch_size} streams gives "
                f"{per_stream} characters per stream, fewer than seq_len + 1 = {seq_len + 1}; "
                f"use a longer text, a smaller batch size or a shorter seq_len"
            )
        self.data = ids[:batch_size * per_stream].view(batch_size, per_stream)  # (B, N/B)
        self.seq_len = seq_len
        self.chunks = (per_stream - 1) // seq_len
        self.position = 0

    def __next__(self) -> Batch:
        if self.position == self.chunks:  # a new pass over the text starts from fresh state
            self.position = 0
        s, T = self.position * self.seq_len, self.seq_len
        batch = Batch(self.data[:, s:s + T], self.data[:, s + 1:s + T + 1], continues=self.position > 0)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class CharLMTask(Task):
    name = "char_lm"
    Config = CharLMConfig
    primary = ("bpc", "min")

    def __init__(self, config: CharLMConfig):
        super().__init__(config)
        text = read_text(config.path) if config.path else default_corpus()
        if config.max_chars:
            text = text[:config.max_chars]
        self.vocab = sorted(set(text))
        index = {c: i for i, c in enumerate(self.vocab)}
        ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
        n_val = int(len(text) * config.val_fraction)
        if n_val < config.seq_len + 1:
            raise ValueError(
                f"task.seq_len: the held-out text ({n_val} of {len(text)} characters) is shorter than "
                f"seq_len + 1 = {config.seq_len + 1}; use a longer text, a larger val_fraction or a shorter seq_len"
            )
        self.train_ids, self.val_ids = ids[:-n_val], ids[-n_val:]
        self.first = text[0]
        counts = torch.bincount(self.train_ids, minlength=len(self.vocab)).double()
        p = counts[counts > 0] / counts.sum()
        self.unigram_bits = float(-(p * p.log2()).sum())
        self.spec = ModelSpec(inputs="symbols", input_size=len(self.vocab), output_size=len(self.vocab), head="every")

    def train_stream(self, batch_size: int, seed: int) -> Stream:
        return TextStream(self.train_ids, batch_size, self.config.seq_len, "training")

    def eval_batches(self, batch_size: int, samples: int) -> list[Batch]:
        """The whole held-out text as up to ``batch_size`` streams (``samples`` is not used)."""
        streams = max(1, min(batch_size, self.val_ids.numel() // (self.config.seq_len + 1)))
        s = TextStream(self.val_ids, streams, self.config.seq_len, "held-out")
        return [next(s) for _ in range(s.chunks)]

    def loss(self, out, batch):
        # out (B, T, V)
        return torch.nn.functional.cross_entropy(out.flatten(0, 1), batch.y.flatten())

    def sums(self, out, batch):
        ce, right, n = cross_entropy_sums(out, batch.y)
        return {"loss": (ce, n), "accuracy": (right, n)}

    def summarize(self, totals):
        m = super().summarize(totals)
        m["bpc"] = m["loss"] / LOG2
        return m

    def baselines(self):
        return {"bpc": self.unigram_bits, "loss": self.unigram_bits * LOG2}

    def describe(self):
        return {**super().describe(), "vocab": "".join(self.vocab), "first": self.first}


def encode(vocab: str, text: str) -> torch.Tensor:
    """``text`` as symbol indices (T,); characters outside ``vocab`` are a ValueError."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise ValueError(f"prime: expected characters of the model's vocabulary, got {''.join(unknown)!r} outside it")
    return torch.tensor([index[c] for c in text], dtype=torch.int64)


@torch.no_grad()
def sample(model, vocab: str, prime: str, length: int, temperature: float = 1.0, seed: int = 0) -> str:
    """``length`` characters drawn one at a time from ``model`` after reading ``prime``.

    Each next character is drawn from softmax(logits / temperature): temperature < 1 sharpens the
    distribution towards the likeliest characters, > 1 flattens it towards uniform.
    """
    if not prime:
        raise ValueError("prime: expected at least one character to start from, got ''")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 or math.isinf(temperature):
        raise ValueError(f"temperature: expected a positive finite float, got {temperature!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length: expected a non-negative int, got {length!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    ids = encode(vocab, prime).to(device)
    logits, state = model(ids.unsqueeze(0))  # (1, T, V)
    drawn = []
    for _ in range(length):
        p = torch.softmax(logits[0, -1].double() / temperature, dim=-1).cpu()
        nxt = int(torch.multinomial(p, 1, generator=g))
        drawn.append(vocab[nxt])
        logits, state = model(torch.tensor([[nxt]], device=device), state)
    model.train(was_training)
    return "".join(drawn)
