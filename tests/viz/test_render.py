"""The drawing without a browser: the SVG's structure (T columns × levels rows, padding, arrows and
their two encodings), block columns for long sequences, the PNG, the page's self-containment and
size, and files written whole or not at all."""

import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.models import ModelConfig, SequenceModel
from rnnlab.tasks import Batch, get_task
from rnnlab.viz import unroll, write_page
from rnnlab.viz.files import write_atomic
from rnnlab.viz.page import summary_rows
from rnnlab.viz.layout import DEFAULT_COLUMNS, Rect, bptt_style, columns, layout, value_colour

NS = "{http://www.w3.org/2000/svg}"


def _svg(text):
    return ET.fromstring(text)


def _boxes(root):
    return [r for r in root.iter(NS + "rect") if "box" in (r.get("class") or "").split()]


def test_svg_has_a_box_per_step_level_and_direction():
    torch.manual_seed(0)
    layer = rnnlab.LSTM(2, 6, num_layers=3, bidirectional=True)
    x = torch.randn(11, 2, 2)
    u = unroll(layer, x, lambda out: out.sum(), lengths=torch.tensor([11, 7]), sample=1)
    root = _svg(u.to_svg())
    boxes = _boxes(root)
    assert len(boxes) == 11 * 3 * 2
    pads = [b for b in boxes if "pad" in b.get("class").split()]
    assert len(pads) == (11 - 7) * 3 * 2 and all(int(b.get("data-t0")) >= 7 for b in pads)
    keys = {(int(b.get("data-k")), int(b.get("data-d")), int(b.get("data-t0"))) for b in boxes}
    assert keys == {(k, d, t) for k in range(3) for d in range(2) for t in range(11)}
    # rows: one y per (level, direction), reverse above forward, higher levels above
    ys = {(int(b.get("data-k")), int(b.get("data-d"))): float(b.get("y")) for b in boxes}
    order = sorted(ys, key=ys.get)
    assert order == [(2, 1), (2, 0), (1, 1), (1, 0), (0, 1), (0, 0)]
    # columns: one x per step, left to right
    xs = sorted({float(b.get("x")) for b in boxes})
    assert len(xs) == 11 and all(b > a for a, b in zip(xs, xs[1:]))
    arrows = [p for p in root.iter(NS + "polyline")]
    kinds = [p.get("class").split()[1] for p in arrows]
    real = 7 * 3 * 2
    assert kinds.count("rec-h") == kinds.count("rec-c") == kinds.count("in") == real
    assert kinds.count("out") == 7 * 2  # the top level's boxes, both directions


def test_reverse_arrows_point_left_and_bptt_view_differs():
    torch.manual_seed(1)
    u = unroll(rnnlab.GRU(2, 4, bidirectional=True), torch.randn(6, 1, 2), lambda out: out[-1].sum())
    fwd, bptt = _svg(u.to_svg("forward")), _svg(u.to_svg("bptt"))
    rec = [p for p in fwd.iter(NS + "polyline") if "rec-h" in p.get("class")]
    for p in rec:
        (x1, _), (x2, _) = [tuple(map(float, q.split(","))) for q in p.get("points").split()]
        assert x2 != x1
    directions = {np.sign(float(p.get("points").split()[1].split(",")[0]) - float(p.get("points").split()[0].split(",")[0]))
                  for p in rec}
    assert directions == {1.0, -1.0}
    fw = [(p.get("stroke"), p.get("stroke-width")) for p in fwd.iter(NS + "polyline")]
    bw = [(p.get("stroke"), p.get("stroke-width")) for p in bptt.iter(NS + "polyline")]
    assert len(set(fw) - {("#d95f02", "2.0")}) == 1 and len(set(bw)) > 3  # uniform wiring vs gradient encoding
    assert [p.get("data-bw") for p in bptt.iter(NS + "polyline")] == [" ".join(s) for s in bw]
    assert len([t for t in bptt.iter(NS + "text") if t.get("class") == "gnum"]) == 6 * 2
    assert not [t for t in fwd.iter(NS + "text") if t.get("class") == "gnum"]


def test_arrow_encoding_follows_the_gradient():
    top = 1.0
    assert bptt_style(1.0, top) == ("#c0392b", 4.4)
    assert bptt_style(1e-8, top)[1] == 0.4 and bptt_style(1e-12, top)[1] == 0.4
    assert bptt_style(1e-4, top)[1] == pytest.approx(2.4)
    assert bptt_style(float("nan"), top) == bptt_style(0.0, top) == ("#e4e4e4", 0.4)


def test_long_sequences_are_drawn_in_blocks():
    assert columns(1000, None) == [(t, t + 5) for t in range(0, 1000, 5)] and DEFAULT_COLUMNS == 200
    assert columns(7, 3) == [(0, 3), (3, 6), (6, 7)]
    torch.manual_seed(2)
    u = unroll(rnnlab.RNN(1, 3), torch.randn(23, 1, 1), lambda out: out[-1].sum())
    lay = layout(u, max_columns=5)
    assert lay.columns == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
    assert len(lay.boxes) == 5
    with pytest.raises(ValueError, match="max_columns: expected a positive int, got 0"):
        u.to_svg(max_columns=0)


def test_page_is_self_contained_and_small(tmp_path):
    """T = 200, H = 64: the size README states. Three cells side by side share one input."""
    torch.manual_seed(3)
    task = get_task("adding", seq_len=200)
    batch = task.eval_batches(1, 1)[0]
    loss = lambda y: task.loss(y, Batch(batch.x.double(), batch.y.double()))
    nets = [unroll(SequenceModel(task.spec, ModelConfig(cell=c, hidden=64)), batch.x, loss) for c in ("rnn", "lstm", "gru")]
    one = nets[1].to_html(tmp_path / "lstm.html")
    page = (tmp_path / "lstm.html").read_text(encoding="utf-8")
    assert one == len(page.encode("utf-8")) < 500_000
    assert not re.search(r"\b(src|href)\s*=", page) and "@import" not in page and "url(http" not in page
    assert "fetch(" not in page and "XMLHttpRequest" not in page
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"]  # the SVG namespace, not a fetch
    data = json.loads(re.search(r'<script type="application/json" id="unroll-data">(.*?)</script>', page, re.S).group(1))
    net = data["nets"][0]
    assert net["T"] == 200 and net["H"] == 64 and len(net["units"]) == 8
    assert len(net["tracks"][0]["v"]["f"]) == 200 * 8
    three = write_page(tmp_path / "three.html", nets)
    assert three < 1_500_000
    assert (tmp_path / "three.html").read_text().count('<svg xmlns') == 3


def test_png_is_written(tmp_path):
    torch.manual_seed(4)
    u = unroll(rnnlab.LSTM(2, 4), torch.randn(9, 1, 2), lambda out: out[-1].sum())
    u.to_png(tmp_path / "a.png", view="bptt")
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="view: expected one of 'forward', 'bptt', got 'back'"):
        u.to_png(tmp_path / "b.png", view="back")
    with pytest.raises(ValueError, match=r"path: expected a file name ending in \.png, got"):
        u.to_png(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="path: expected an existing folder"):
        u.to_html(tmp_path / "missing" / "a.html")
    nograd = unroll(rnnlab.LSTM(2, 4), torch.randn(9, 1, 2))
    with pytest.raises(ValueError, match="view: 'bptt' needs gradients"):
        nograd.to_svg("bptt")
    with pytest.raises(ValueError, match="view: 'bptt' needs gradients"):
        nograd.to_png(tmp_path / "c.png", view="bptt")


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "page.html"
    target.write_text("the user's old page")

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_text() == "the user's old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]  # no temporary file left behind


def test_scale_long_deep_bidirectional_padded_and_wide(tmp_path):
    """T = 1000 in 200 columns of 5 steps, 4 levels both ways, a padded sample; H = 512 drawn as 8 units."""
    torch.manual_seed(9)
    layer = rnnlab.GRU(2, 2, num_layers=4, bidirectional=True)
    u = unroll(layer, torch.randn(1000, 2, 2), lambda out: out[-1].pow(2).sum(), lengths=torch.tensor([1000, 777]), sample=1)
    boxes = _boxes(_svg(u.to_svg("bptt")))
    assert len(boxes) == 200 * 4 * 2
    assert len([b for b in boxes if "pad" in b.get("class")]) == (1000 - 780) // 5 * 8  # the block 775–779 holds real steps
    lay = layout(u)
    j = 10  # column 10: steps 50–54; its squares are the block's means
    squares = [s for s in lay.shapes if isinstance(s, Rect) and s.stroke is None
               and lay.boxes[(0, 0, j)].x < s.x < lay.boxes[(0, 0, j)].x + lay.boxes[(0, 0, j)].w
               and lay.boxes[(0, 0, j)].y < s.y < lay.boxes[(0, 0, j)].y + lay.boxes[(0, 0, j)].h]
    means = u.track(0, 0).values["z"][50:55, u.units].mean(axis=0)
    assert [s.fill for s in squares[:len(u.units)]] == [value_colour("z", m) for m in means]
    size = u.to_html(tmp_path / "long.html")
    assert size < 3_000_000
    wide = unroll(rnnlab.LSTM(2, 512), torch.randn(4, 1, 2), lambda out: out[-1].sum())
    assert len(wide.units) == 8 and wide.tracks[0].values["f"].shape == (4, 512)
    assert wide.to_html(tmp_path / "wide.html") < 60_000


def test_written_files_get_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain.html"
    plain.write_bytes(b"x")
    atomic = tmp_path / "atomic.html"
    write_atomic(atomic, b"x")
    assert atomic.stat().st_mode == plain.stat().st_mode


def test_without_a_loss_the_page_has_values_and_no_bptt(tmp_path):
    torch.manual_seed(10)
    u = unroll(rnnlab.RNN(2, 3), torch.randn(5, 1, 2))
    assert u.loss is None and u.tracks[0].grads == {}
    u.to_html(tmp_path / "values.html")
    page = (tmp_path / "values.html").read_text(encoding="utf-8")
    assert '<button id="view" disabled>' in page and 'class="gnum"' not in page
    assert len(_boxes(_svg(u.to_svg()))) == 5


def test_summary_rows_are_the_geometric_mean_of_the_per_step_factors():
    torch.manual_seed(11)
    u = unroll(rnnlab.LSTM(2, 4, bidirectional=True), torch.randn(9, 1, 2), lambda out: out.pow(2).sum())
    rows = summary_rows(u)
    assert [r[:2] for r in rows] == [["level 0 forward", "h"], ["level 0 forward", "c"], ["level 0 reverse", "h"],
                                     ["level 0 reverse", "c"]]
    for row, (tr, state) in zip(rows, [(u.tracks[0], "h"), (u.tracks[0], "c"), (u.tracks[1], "h"), (u.tracks[1], "c")]):
        g = tr.grads[state] if tr.direction == 0 else tr.grads[state][::-1]  # in the direction's own order
        steps = g[:-1] / g[1:]  # one step further back each
        assert float(row[5]) == pytest.approx(float(np.exp(np.log(steps).mean())), abs=5e-4)
        assert float(row[4]) == pytest.approx(g[0] / g[-1], rel=0.05)
