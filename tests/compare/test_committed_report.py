"""The committed report (report/, the standard profile) and the README's comparison section agree:
every yardstick mean the README quotes is the report's, and the report is the standard profile's."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEASUREMENTS = ROOT / "report" / "measurements.json"
README = ROOT / "README.md"
ROWS = {"MNIST-1D": "mnist1d", "Japanese vowels": "japanese_vowels", "Adding T = 600": "adding600",
        "Copy T = 1000": "copy1000"}


@pytest.fixture(scope="module")
def measured():
    return json.loads(MEASUREMENTS.read_text())


def _comparison() -> str:
    text = README.read_text()
    start = text.index("\n## Comparison\n")
    return text[start:text.index("\n## ", start + 1)]


def test_the_committed_report_is_the_standard_profile(measured):
    assert measured["profile"] == "standard" and len(measured["seeds"]) == 3
    assert [r["yardstick"]["key"] for r in measured["yardsticks"]["results"]] == list(ROWS.values())


def test_readme_yardstick_table_quotes_the_report(measured):
    results = {r["yardstick"]["key"]: {c["cell"]: c for c in r["cells"]} for r in measured["yardsticks"]["results"]}
    lines = [line for line in _comparison().splitlines() if line.startswith("| ") and not line.startswith("| yardstick")]
    seen = set()
    for line in lines:
        title = next((t for t in ROWS if line[2:].startswith(t)), None)
        if title is None:
            continue
        cols = [c.strip() for c in line.strip("|").split("|")]
        for cell, col in zip(("rnn", "lstm", "gru"), cols[1:4]):
            mean = float(re.search(r"[0-9.]+(?:e-?\d+)?", col.replace("*", "")).group())
            assert mean == pytest.approx(results[ROWS[title]][cell]["result"]["mean"], abs=6e-4), (title, cell)
        seen.add(title)
    assert seen == set(ROWS)


def test_readme_quotes_the_char_lm_and_its_verdict(measured):
    lm = measured["real"]["charlm"]
    text = _comparison()
    assert f"{lm['bpc']['lstm']['mean']:.3f}" in text and f"{lm['ngram_bpc']:.3f}" in text
    performance = next(r for r in measured["seed_table"] if r["feature"] == "Performance")
    assert "LSTM beats the n-gram confirmed" in performance["verdict"]
