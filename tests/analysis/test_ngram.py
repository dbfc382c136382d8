"""The Witten–Bell n-gram model against a direct dictionary implementation of its definition."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from rnnlab.analysis import NGramLM, best_order

TEXT = "the cat sat on the mat. the bat ate the hat; a rat sat at that mat!"


def _reference_prob(train, vocab, order, history, c):
    """P_WB(c | history) by the recursive definition, with plain Counters."""
    counts = Counter()
    followers = defaultdict(set)
    for j in range(order):
        for t in range(j, len(train)):
            h = train[t - j : t]
            counts[h + "|" + train[t]] += 1
            counts[h] += 1
            followers[h].add(train[t])

    def p(h, c):
        if h == "":
            lower = 1.0 / len(vocab)
        else:
            lower = p(h[1:], c)
        if counts[h] == 0:
            return lower
        n1 = len(followers[h])
        return (counts[h + "|" + c] + n1 * lower) / (counts[h] + n1)

    return p(history[-(order - 1) :] if order > 1 else "", c)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_definition(order):
    vocab = sorted(set(TEXT) | set("xyz"))
    model = NGramLM(order, vocab).fit(TEXT)
    test = "the rat ate a cat; xyz sat."
    got = model.probabilities(test)
    want = [_reference_prob(TEXT, vocab, order, test[max(0, t - order + 1) : t], test[t]) for t in range(len(test))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert model.bits_per_char(test) == pytest.approx(-np.mean(np.log2(want)), rel=1e-12)


@pytest.mark.parametrize("context", ["", "th", "the ", "qqq", "at"])
def test_distribution_sums_to_one(context):
    vocab = sorted(set(TEXT) | set("q"))
    model = NGramLM(3, vocab).fit(TEXT)
    total = sum(model.probabilities(context + c)[-1] for c in vocab)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_best_order_and_errors():
    vocab = sorted(set(TEXT))
    order, bpc = best_order(TEXT[:40], TEXT[40:], vocab, orders=(1, 2, 3))
    assert order in (1, 2, 3)
    assert bpc == pytest.approx(NGramLM(order, vocab).fit(TEXT[:40]).bits_per_char(TEXT[40:]))
    with pytest.raises(ValueError, match="order"):
        NGramLM(0, vocab)
    with pytest.raises(ValueError, match="vocab"):
        NGramLM(2, ["a", "a"])
    with pytest.raises(ValueError, match="text: expected only characters of the vocabulary"):
        NGramLM(2, vocab).fit("Q" + TEXT)
    with pytest.raises(ValueError, match="fit"):
        NGramLM(2, vocab).probabilities("the")
