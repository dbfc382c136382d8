"""A character n-gram language model with interpolated Witten–Bell smoothing, in numpy.

The baseline a character-level recurrent model must beat. For a context h of length j and its
shortening h' (drop the oldest character),

    P(c | h) = (C(h c) + N₁₊(h ·) · P(c | h')) / (C(h) + N₁₊(h ·))     if C(h) > 0, else P(c | h')

where C counts occurrences in the training text and N₁₊(h ·) is the number of distinct characters
seen after h (Witten & Bell 1991; Chen & Goodman 1998, §2.5). The empty context interpolates the
unigram counts with the uniform distribution over the vocabulary, so every character of the
vocabulary has a positive probability and an unseen context falls back to shorter ones.

n-grams are coded as base-V integers and counted with ``np.unique``; evaluation looks each context
up by ``np.searchsorted``, so fitting and scoring a megabyte takes seconds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _codes(ids: np.ndarray, n: int, V: int) -> np.ndarray:
    """Base-V codes of every n-gram of ids: element t codes ids[t : t + n] (len(ids) - n + 1 codes)."""
    m = len(ids) - n + 1
    code = np.zeros(max(m, 0), dtype=np.int64)
    for j in range(n):
        code = code * V + ids[j : j + m]
    return code


def _lookup(table: np.ndarray, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """counts[table == key] for each key, 0 where absent (table sorted)."""
    if table.size == 0:
        return np.zeros(keys.shape, dtype=np.float64)
    pos = np.clip(np.searchsorted(table, keys), 0, table.size - 1)
    return np.where(table[pos] == keys, counts[pos], 0).astype(np.float64)


class NGramLM:
    """Character n-gram model of ``order`` n (contexts up to n - 1 characters), Witten–Bell interpolated.

    ``vocab``: the characters it can predict (every character of the texts it is fitted on and scored
    on must be in it). ``fit(text)`` counts; ``probabilities(text)`` gives P(text[t] | text[:t]) for
    every t; ``bits_per_char(text)`` their mean negative log₂.
    """

    def __init__(self, order: int, vocab: Sequence[str]):
        if isinstance(order, bool) or not isinstance(order, int) or order < 1:
            raise ValueError(f"order: expected a positive int, got {order!r}")
        chars = list(vocab)
        if not chars or len(set(chars)) != len(chars) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("vocab: expected a non-empty sequence of distinct single characters")
        if len(chars) ** order >= 2**62:
            raise ValueError(f"order: {order} is too large for a vocabulary of {len(chars)} (codes overflow int64)")
        self.order = order
        self.vocab = chars
        self._index = {c: i for i, c in enumerate(chars)}
        self._tables: list[tuple] | None = None

    def _ids(self, text: str, name: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"{name}: expected a str, got {type(text).__name__}")
        missing = sorted(set(text) - set(self._index))
        if missing:
            raise ValueError(f"{name}: expected only characters of the vocabulary, got {len(missing)} others, e.g. {missing[:5]!r}")
        return np.fromiter((self._index[c] for c in text), dtype=np.int64, count=len(text))

    def fit(self, text: str) -> "NGramLM":
        ids = self._ids(text, "text")
        if ids.size == 0:
            raise ValueError("text: expected a non-empty training text")
        V = len(self.vocab)
        self._tables = []
        for j in range(self.order):  # context length j
            grams, gram_counts = np.unique(_codes(ids, j + 1, V), return_counts=True)
            ctx_of_gram = grams // V  # the context h of each distinct (h c)
            ctx, first = np.unique(ctx_of_gram, return_index=True)
            ctx_total = np.add.reduceat(gram_counts, first)  # C(h) = Σ_c C(h c)
            ctx_types = np.diff(np.append(first, grams.size))  # N₁₊(h ·)
            self._tables.append((grams, gram_counts, ctx, ctx_total, ctx_types))
        return self

    def probabilities(self, text: str) -> np.ndarray:
        """P(text[t] | the up to n - 1 characters before it, within ``text``), for every t: (len(text),)."""
        if self._tables is None:
            raise ValueError("NGramLM: call fit(text) before scoring")
        ids = self._ids(text, "text")
        V, N = len(self.vocab), ids.size
        p = np.full(N, 1.0 / V)
        for j, (grams, gram_counts, ctx, ctx_total, ctx_types) in enumerate(self._tables):
            if N <= j:
                break
            g = _codes(ids, j + 1, V)  # the gram ending at position t = j + index
            c_hc = _lookup(grams, gram_counts, g)
            c_h = _lookup(ctx, ctx_total, g // V)
            n1 = _lookup(ctx, ctx_types, g // V)
            lower = p[j:]
            seen = c_h > 0
            p[j:] = np.where(seen, (c_hc + n1 * lower) / np.where(seen, c_h + n1, 1.0), lower)
        return p

    def bits_per_char(self, text: str) -> float:
        """Mean −log₂ P(text[t] | context) over ``text``."""
        p = self.probabilities(text)
        if p.size == 0:
            raise ValueError("text: expected a non-empty text to score")
        return float(-np.log2(p).mean())


def best_order(train: str, valid: str, vocab: Sequence[str], orders: Sequence[int] = (1, 2, 3, 4, 5, 6)) -> tuple[int, float]:
    """The order with the lowest bits per character on ``valid`` after fitting on ``train``: (order, bpc)."""
    best = (0, math.inf)
    for n in orders:
        bpc = NGramLM(n, vocab).fit(train).bits_per_char(valid)
        if bpc < best[1]:
            best = (n, bpc)
    return best
