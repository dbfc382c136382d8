"""Report rendering: Markdown and HTML from the same blocks, escaping, no external links; the
gate-coloured text; the protocol's equal-parameter sizes."""

import numpy as np
import pytest

from rnnlab.compare.document import Document, anchor, inline_html
from rnnlab.compare.plots import grouped_bars
from rnnlab.compare.protocol import PROFILES, budget_hidden, model_parameters, schedule
from rnnlab.compare.textview import colour, gate_text_html, row_html
from rnnlab.compare.training import build
from rnnlab.analysis import count_parameters


def test_markdown_and_html_from_the_same_blocks():
    d = Document("T")
    d.heading("A b-c!")
    d.paragraph("x **y** `z` [in](#a-b-c) [out](https://example.com) <script>")
    d.table(["k", "v"], [["a|b", 1234567], ["c", 0.000123]])
    d.figure("f.png", grouped_bars(["a"], {"s": [1.0]}, "y"), "cap")
    md, page = d.markdown(), d.html()
    assert "## A b-c!" in md and f'<h2 id="{anchor("A b-c!")}">' in page
    assert "| a\\|b | 1,234,567 |" in md and "1.23e-04" in md
    assert "![cap](plots/f.png)" in md and 'src="data:image/png;base64,' in page
    assert '<a href="#a-b-c">in</a>' in page and "https://example.com" not in page.split("<body>")[1].split("href")[0] + ""
    assert 'href="https' not in page and "&lt;script&gt;" in page
    with pytest.raises(ValueError, match="rows"):
        d.table(["a"], [[1, 2]])
    with pytest.raises(ValueError, match="png"):
        d.figure("x.png", b"GIF89a", "no")


def test_inline_markup():
    assert inline_html("**a** *b* `c<d`") == "<strong>a</strong> <em>b</em> <code>c&lt;d</code>"


def test_gate_text_colours_each_character():
    assert colour(0.0) == "rgb(59,111,182)" and colour(0.5) == "rgb(255,255,255)" and colour(1.0) == "rgb(214,69,51)"
    text = "ab\nc"
    html = gate_text_html(text, {"lstm": {"f": np.array([[0.0, 0.5], [1.0, 0.5], [0.0, 0.5], [1.0, 0.5]]),
                                          "c": np.zeros((4, 2))}})
    assert html.count("<span style=\"background:") == 2 * len(text) + 11  # two rows + the legend
    assert "unit 0" in html  # unit 0 of f varies, unit 1 does not
    with pytest.raises(ValueError, match="values"):
        row_html("abc", np.zeros(2), "x", False)
    with pytest.raises(ValueError, match="per_cell"):
        gate_text_html("abc", {"gru": {"z": np.zeros((2, 3))}})


def test_equal_budget_sizes_match_built_models():
    p = PROFILES["quick"]
    settings = (("seq_len", 30),)
    sizes = budget_hidden("adding", settings, p.hidden, p.embedding)
    target = model_parameters("adding", settings, "lstm", p.hidden, p.embedding)
    for info, spec in schedule(p)["budget"]:
        if info["task"] == "adding" and info["seed"] == 0:
            _, model = build(spec)
            n = count_parameters(model)
            assert n == model_parameters("adding", settings, info["cell"], info["hidden"], p.embedding)
            step = model_parameters("adding", settings, info["cell"], info["hidden"] + 1, p.embedding) - n
            assert abs(n - target) <= step  # no other H comes nearer the LSTM's count by more than one step
    assert sizes["lstm"] == p.hidden and sizes["rnn"] > sizes["gru"] > sizes["lstm"]


def test_schedule_has_three_seeds_and_unique_runs():
    for name in ("tiny", "quick", "full"):
        s = schedule(PROFILES[name])
        assert len(PROFILES[name].seeds) >= 3
        keys = [spec.key() for _, spec in s["memory"]]
        assert len(keys) == len(set(keys))
