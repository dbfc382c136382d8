"""The interactive page in headless Chromium (skipped when there is none): it loads without errors,
draws T columns × levels rows per network, the numbers its equation panel shows on click are the
model's gates (to 1e-6), the BPTT toggle changes every arrow's encoding, and a screenshot shows each
unit's square where the layout puts it, in the colour of its value."""

import random

import numpy as np
import pytest
import torch
from matplotlib.image import imread

import rnnlab
from rnnlab.viz import unroll, write_page
from rnnlab.viz.layout import layout, value_colour

from viz import chromium  # tests/viz/chromium.py (tests/ is on the path)

pytestmark = pytest.mark.skipif(chromium.find_chromium() is None, reason="no chromium on PATH (apt-get install -y chromium)")

T = 12


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    torch.manual_seed(0)
    x = torch.randn(T, 2, 2)
    lengths = torch.tensor([T, 8])
    loss = lambda out: out[-1].pow(2).sum()
    layers = [rnnlab.RNN(2, 5), rnnlab.LSTM(2, 5), rnnlab.GRU(2, 5),
              rnnlab.LSTM(2, 10, num_layers=2, bidirectional=True), rnnlab.GRU(2, 4, reset="after"),
              rnnlab.RNN(2, 3, nonlinearity="relu")]
    nets = [unroll(layer, x, loss, lengths=lengths if i == 3 else None, sample=1 if i == 3 else 0)
            for i, layer in enumerate(layers)]
    path = tmp_path_factory.mktemp("viz") / "unrolled.html"
    write_page(path, nets)
    rng = random.Random(0)
    picks = []
    for i, (layer, u) in enumerate(zip(layers, nets)):
        for _ in range(4):
            picks.append({"net": i, "k": rng.randrange(layer.num_layers), "d": rng.randrange(layer.num_directions),
                          "t": rng.randrange(u.length), "q": rng.randrange(len(u.units))})
    seen, console = chromium.probe(path, picks)
    return {"x": x, "lengths": lengths, "layers": layers, "nets": nets, "path": path, "seen": seen, "console": console}


def test_page_loads_without_errors(page):
    assert page["seen"]["errors"] == [] and page["console"] == []


def test_drawing_has_t_columns_by_level_rows(page):
    seen = page["seen"]
    assert seen["boxes"] == [T * layer.num_layers * layer.num_directions for layer in page["layers"]]
    assert seen["pads"] == [0, 0, 0, (T - 8) * 2 * 2, 0, 0]


def test_numbers_on_click_equal_the_models_gates(page):
    x, lengths = page["x"], page["lengths"]
    checked = 0
    for click in page["seen"]["clicks"]:
        p = click["pick"]
        layer, u = page["layers"][p["net"]], page["nets"][p["net"]]
        sample = 1 if p["net"] == 3 else 0
        with torch.no_grad():
            out, _, gates = layer(x, lengths=lengths if p["net"] == 3 else None, return_gates=True)
        key = f"l{p['k']}" + ("_reverse" if p["d"] else "")
        unit = u.units[p["q"]]
        assert click["unit"] == unit
        results = {name: float(value) for name, value, _, result in click["values"] if result}
        want = set(layer.gates if u.cell != "rnn" else ()) | {"h"} | ({"c"} if u.cell == "lstm" else set())
        assert set(results) == want
        for name, value in results.items():
            if name == "h":
                H = layer.hidden_size
                ref = out[p["t"], sample, p["d"] * H + unit] if p["k"] == layer.num_layers - 1 else None
                ref = float(ref) if ref is not None else float(u.track(p["k"], p["d"]).values["h"][p["t"], unit])
            else:
                ref = float(gates[key][name][p["t"], sample, unit])
            assert value == pytest.approx(ref, abs=1e-6)
            checked += 1
        for name, value, text, _ in click["values"]:  # what is displayed is the value, rounded
            if not name.startswith(("grad", "flow", "factor")) and value not in ("null", "undefined"):
                assert float(text) == pytest.approx(float(value), abs=5.01e-5)
        means = {name[5:]: float(value) for name, value, _, _ in click["values"] if name.startswith("mean_")}
        tr = u.track(p["k"], p["d"])  # the model's own traces where it returns them (h: the unrolled values)
        ref = {n: float((gates[key][n][p["t"], sample] if n in gates[key] and u.cell != "rnn" else torch.tensor(a[p["t"]])).mean())
               for n, a in tr.values.items()}
        assert means == pytest.approx(ref, abs=1e-6)
        assert f"Over all H = {layer.hidden_size} units" in click["text"]
        assert f"step {p['t'] + 1} of {T}" in click["text"]
        assert ("σ(W_f·[h_{t−1}, x_t] + b_f)" in click["text"]) == (u.cell == "lstm")
        assert ("r_t * (W_hn·h_{t−1} + b_hn)" in click["text"]) == (u.options.get("reset") == "after")
        assert ("h_t = relu(W_h·[h_{t−1}, x_t] + b_h)" in click["text"]) == (u.options.get("nonlinearity") == "relu")
    assert checked >= 60


def test_bptt_toggle_changes_the_arrows_encoding(page):
    before, after = page["seen"]["before"], page["seen"]["after"]
    assert len(before) == len(after) > 100
    assert {(s, w) for _, s, w in before} == {("#8a8a8a", "1.2"), ("#d95f02", "2.0")}
    changed = sum(b != a for b, a in zip(before, after))
    assert changed == len(before)  # none of these arrows carries the top gradient in the forward grey
    assert len({(s, w) for _, s, w in after}) > 10
    assert page["seen"]["gnum"][0] == 0 and page["seen"]["gnum"][1] > 0  # the gradient numbers appear


def test_screenshot_shows_each_unit_where_the_layout_puts_it(tmp_path):
    torch.manual_seed(1)
    u = unroll(rnnlab.GRU(2, 4), torch.randn(8, 1, 2), lambda out: out[-1].sum())
    path = tmp_path / "one.html"
    write_page(path, [u])
    seen, console = chromium.probe(path, [])
    assert seen["errors"] == [] and console == []
    left, top, width, height = seen["svgs"][0]
    shot = tmp_path / "shot.png"
    chromium.screenshot(path, shot, chromium.WINDOW)
    assert top + height < chromium.WINDOW[1]
    img = (imread(shot)[..., :3] * 255).round()
    lay = layout(u)
    z = width / lay.width  # short sequences open zoomed in
    assert z > 1 and height / lay.height == pytest.approx(z, rel=1e-3)
    strips = u.strips
    for (k, d, j), box in lay.boxes.items():
        # the box's outline is dark
        edge = img[int(top + z * (box.y + box.h / 2)), int(left + z * box.x) - 1:int(left + z * box.x) + 2]
        assert edge.min() < 200  # #444 at 1 px (zoomed), anti-aliased
        for s, name in enumerate(strips):
            for q, unit in enumerate(u.units):
                cx = left + z * (box.x + 2 + (q + 0.5) * (box.w - 4) / len(u.units))
                cy = top + z * (box.y + 2 + s * 7 + 3)
                want = np.array([int(value_colour(name, u.track(k, d).values[name][j, unit])[i:i + 2], 16) for i in (1, 3, 5)])
                assert np.abs(img[int(cy), int(cx)] - want).max() <= 3, (name, j, unit)
    assert (img[int(top) + 2, int(left + width) - 3] == 255).all()  # the margin is blank
