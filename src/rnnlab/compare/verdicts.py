"""The seed's comparison table, row by row: its claims, what was measured, and a verdict computed
from the measurements.

Each row's claim is split into parts that a measurement can decide (e.g. "RNN has the fewest
parameters", "GRU fewer than LSTM"). A part is *confirmed* or *refuted* only when the measured
difference clears a stated margin; otherwise it is *not resolved at this budget*. A row is
confirmed when all its parts are, refuted when all are refuted, and otherwise says which parts went
which way.
"""

from __future__ import annotations

import statistics

from ..cells import GRUCell, LSTMCell, RNNCell
from ..analysis.gates import SIGMOID_GATES

CONFIRMED, REFUTED, OPEN = "confirmed", "refuted", "not resolved at this budget"
CELL_CLASSES = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
SPEED_MARGIN = 0.10  # a time per step must differ by more than 10 % to order two cells
RUN_MARGIN = 2  # solved runs must differ by at least 2 (more than one seed's worth at one length)

SEED_TABLE = [
    ("Complexity", "Low", "High", "Medium"),
    ("Parameters", "Fewest", "Most", "Fewer than LSTMs"),
    ("Long-Term Memory", "Poor", "Excellent", "Very Good"),
    ("Training Speed", "Fast (but often ineffective)", "Slower", "Faster than LSTMs"),
    ("Performance", "Limited for complex sequences", "High, widely used for state-of-the-art results",
     "Often comparable to LSTMs, good for efficiency"),
    ("Gates", "None (simple recurrence)", "Forget, Input, Output", "Update, Reset"),
    ("Cell State", "No explicit cell state", "Yes", "No (hidden state acts as memory)"),
]


def combine(parts: list[tuple[str, str]]) -> str:
    """Row verdict from (description, verdict) parts."""
    verdicts = [v for _, v in parts]
    if all(v == CONFIRMED for v in verdicts):
        return CONFIRMED
    if all(v == REFUTED for v in verdicts):
        return REFUTED
    if all(v == OPEN for v in verdicts):
        return OPEN
    return "partly: " + "; ".join(f"{d} {v}" for d, v in parts)


def _order(a: float, b: float, margin: float) -> str:
    """CONFIRMED if a < b by more than the relative margin, REFUTED if b < a by more, else OPEN."""
    if a < b * (1 - margin):
        return CONFIRMED
    if b < a * (1 - margin):
        return REFUTED
    return OPEN


def complexity(m: dict):
    X, H = m["parameters"]["X"], m["parameters"]["H"]
    gates = {c: len(CELL_CLASSES[c].GATES) for c in CELL_CLASSES}
    macs = {c: gates[c] * H * (X + H) for c in gates}  # multiply-adds per step and sequence
    ok = macs["rnn"] < macs["gru"] < macs["lstm"]
    measured = (f"multiply-adds per step (X={X}, H={H}): RNN {macs['rnn']:,}, GRU {macs['gru']:,}, LSTM {macs['lstm']:,} "
                f"(1 : {macs['gru'] / macs['rnn']:.0f} : {macs['lstm'] / macs['rnn']:.0f}, from the gate counts "
                f"{gates['rnn']}, {gates['gru']}, {gates['lstm']})")
    return measured, CONFIRMED if ok else REFUTED


def parameters(m: dict):
    c = m["parameters"]["cells"]
    n = {k: v["counted"] for k, v in c.items()}
    exact = all(v["counted"] == v["closed_form"] for v in c.values())
    parts = [("RNN fewest", CONFIRMED if n["rnn"] < min(n["lstm"], n["gru"]) else REFUTED),
             ("LSTM most", CONFIRMED if n["lstm"] > max(n["rnn"], n["gru"]) else REFUTED),
             ("GRU fewer than LSTM", CONFIRMED if n["gru"] < n["lstm"] else REFUTED)]
    measured = (f"RNN {n['rnn']:,}, LSTM {n['lstm']:,} ({c['lstm']['ratio_to_rnn']:.2f}×), GRU {n['gru']:,} "
                f"({c['gru']['ratio_to_rnn']:.2f}×) at X={m['parameters']['X']}, H={m['parameters']['H']}; "
                + ("every count equals its closed form" if exact else "a count differs from its closed form"))
    return measured, combine(parts)


def _solved_runs(ladder: dict) -> dict[str, int]:
    out: dict[str, int] = {}
    for by_cell in ladder.values():
        for cell, by_T in by_cell.items():
            out[cell] = out.get(cell, 0) + sum(sum(e["solved"]) for e in by_T.values())
    return out


def _runs_total(ladder: dict, cell: str) -> int:
    return sum(len(e["solved"]) for by_cell in ladder.values() for e in by_cell.get(cell, {}).values())


def long_term_memory(m: dict):
    mem = m["memory"]
    s = _solved_runs(mem["ladder"])
    b = _solved_runs(mem["budget"])
    total = _runs_total(mem["ladder"], "lstm")

    def cmp(x, y):  # x below y?
        return CONFIRMED if y - x >= RUN_MARGIN else (REFUTED if x - y >= RUN_MARGIN else OPEN)

    if len({s["rnn"], s["lstm"], s["gru"]}) == 1 and s["rnn"] in (0, total):
        rnn_poor = OPEN  # every cell at the floor (nothing solved) or the ceiling (everything solved)
    elif min(s["lstm"], s["gru"]) - s["rnn"] >= RUN_MARGIN:
        rnn_poor = CONFIRMED
    elif s["rnn"] >= max(s["lstm"], s["gru"]):
        rnn_poor = REFUTED  # the RNN solved as much as the better gated cell
    else:
        rnn_poor = OPEN
    lstm_over_gru = cmp(s["gru"], s["lstm"])
    longest = "; ".join(
        f"{task}: " + ", ".join(f"{c.upper()} {v if v is not None else '—'}" for c, v in by_cell.items())
        for task, by_cell in mem["longest"].items())
    measured = (f"solved runs over the ladders (same H): RNN {s['rnn']}, LSTM {s['lstm']}, GRU {s['gru']} of {total} each; "
                f"equal parameters: RNN {b.get('rnn', 0)}, LSTM {b.get('lstm', 0)}, GRU {b.get('gru', 0)} of "
                f"{_runs_total(mem['budget'], 'lstm')} each. "
                f"Longest T solved by most seeds — {longest}")
    return measured, combine([("RNN poorer than both gated cells", rnn_poor), ("LSTM better than GRU", lstm_over_gru)])


def speed_ratios(m: dict, impl: str) -> dict[str, float] | None:
    """Median over the timed configurations of each cell's time per step relative to the LSTM's."""
    rows = m["speed"]["rows"]
    gru = "gru" if impl == "native" else "gru-after"
    by = {}
    for cell in ("rnn", "lstm", gru):
        ratios = []
        for r in rows:
            if r["cell"] != cell or impl not in r:
                continue
            lstm = next(x for x in rows if x["task"] == r["task"] and x["T"] == r["T"] and x["cell"] == "lstm")
            if impl in lstm:
                ratios.append(r[impl] / lstm[impl])
        if not ratios:
            return None
        by[cell.split("-")[0]] = statistics.median(ratios)
    return by


def training_speed(m: dict):
    texts, verdicts = [], []
    for impl, name in (("native", "rnnlab's native engine (seed's GRU)"), ("torch_nn", "torch.nn CPU kernels (GRU reset after)")):
        r = speed_ratios(m, impl)
        if r is None:
            continue
        rnn_fast = CONFIRMED if r["rnn"] < min(1.0, r["gru"]) * (1 - SPEED_MARGIN) else (
            REFUTED if r["rnn"] > min(1.0, r["gru"]) * (1 + SPEED_MARGIN) else OPEN)
        gru_fast = _order(r["gru"], 1.0, SPEED_MARGIN)
        texts.append(f"{name}: time per step relative to the LSTM (median over configurations) RNN {r['rnn']:.2f}, "
                     f"GRU {r['gru']:.2f}")
        verdicts.append(f"{name}: " + combine([("RNN fastest", rnn_fast), ("GRU faster than LSTM", gru_fast)]))
    solved = m["memory"]["ladder"]
    s = _solved_runs(solved)
    texts.append(f"\"often ineffective\": the RNN solved {s['rnn']} ladder runs, LSTM {s['lstm']}, GRU {s['gru']}")
    return ". ".join(texts), " — ".join(verdicts) if verdicts else OPEN


def performance(m: dict):
    lm = m["real"]["charlm"]
    bpc = {c: statistics.fmean(v) for c, v in lm["cells"].items()}
    sd = max((statistics.stdev(v) if len(v) > 1 else 0.0) for v in lm["cells"].values())
    margin = max(0.02, 2 * sd)
    rnn_limited = CONFIRMED if bpc["rnn"] > bpc["lstm"] + margin else (REFUTED if bpc["rnn"] < bpc["lstm"] - margin else OPEN)
    comparable = CONFIRMED if abs(bpc["gru"] - bpc["lstm"]) <= max(0.05, margin) else REFUTED
    # losing to an n-gram after a short budget says the budget is short, not that LSTMs perform poorly
    lstm_high = CONFIRMED if bpc["lstm"] < lm["ngram"]["bpc"] else OPEN
    fc = m["real"]["forecast"]
    mse = {c: statistics.fmean(v["mse"]) for c, v in fc["cells"].items()}
    best_cell = min(mse, key=mse.get)
    beat_ar = mse[best_cell] < fc["ar"]["mse"]
    measured = (f"char-LM bits/char: RNN {bpc['rnn']:.3f}, LSTM {bpc['lstm']:.3f}, GRU {bpc['gru']:.3f} "
                f"(best n-gram {lm['ngram']['bpc']:.3f}, order {lm['ngram']['order']}; margin {margin:.3f}). "
                f"Forecasting MSE: best cell {best_cell.upper()} {mse[best_cell]:.1f} vs AR({fc['ar']['p']}) {fc['ar']['mse']:.1f}, "
                f"naive {fc['naive']['mse']:.1f} — " + ("a recurrent network wins" if beat_ar else "AR(p) wins"))
    return measured, combine([("RNN worse than LSTM", rnn_limited), ("GRU within margin of LSTM", comparable),
                              ("LSTM beats the n-gram", lstm_high)])


def gates(m: dict):
    names = {c: [g for g in CELL_CLASSES[c].GATES if g in SIGMOID_GATES] for c in CELL_CLASSES}
    want = {"rnn": [], "lstm": ["f", "i", "o"], "gru": ["z", "r"]}
    sat = m["gates"]["cells"]
    parts = []
    for c in ("lstm", "gru"):
        s = sat.get(c, {}).get("saturation", {})
        parts.append(f"{c.upper()} " + ", ".join(
            f"{g} {100 * statistics.fmean(v['left']):.0f} % left / {100 * statistics.fmean(v['right']):.0f} % right"
            for g, v in s.items()))
    measured = (f"σ gates in the code: RNN {names['rnn'] or 'none'}, LSTM {names['lstm']}, GRU {names['gru']}. "
                f"Saturated on the char-LM (< 0.1 / > 0.9): " + "; ".join(parts))
    return measured, CONFIRMED if names == want else REFUTED


def cell_state(m: dict):
    states = {c: CELL_CLASSES[c].STATE for c in CELL_CLASSES}
    ok = "c" in states["lstm"] and "c" not in states["rnn"] and "c" not in states["gru"]
    cs = m["gates"]["cells"].get("lstm", {}).get("cell_state", [])
    extra = ""
    if cs:
        extra = (f"; on the char-LM the LSTM's C_t reaches |C| = {max(x['max_abs'] for x in cs):.1f} and "
                 f"{100 * statistics.fmean(x['share_beyond_1'] for x in cs):.0f} % of its values lie beyond ±1, "
                 f"where h = o·tanh(C) can never go")
    measured = f"carried state: RNN {states['rnn']}, LSTM {states['lstm']}, GRU {states['gru']}" + extra
    return measured, CONFIRMED if ok else REFUTED


ROWS = {"Complexity": complexity, "Parameters": parameters, "Long-Term Memory": long_term_memory,
        "Training Speed": training_speed, "Performance": performance, "Gates": gates, "Cell State": cell_state}


def seed_table(m: dict) -> list[dict]:
    """One dict per row of the seed's table: feature, the three claims, measured, verdict."""
    rows = []
    for feature, rnn, lstm, gru in SEED_TABLE:
        measured, verdict = ROWS[feature](m)
        rows.append({"feature": feature, "rnn": rnn, "lstm": lstm, "gru": gru, "measured": measured, "verdict": verdict})
    return rows
