"""The report: measurements and verdicts laid out as a Document (Markdown + self-contained HTML)."""

from __future__ import annotations

import statistics

import numpy as np

from . import plots
from .document import Document
from .protocol import CELLS, Profile
from .textview import gate_text_html
from .verdicts import speed_ratios, seed_table

SECTIONS = ("Protocol", "The seed's table, measured", "Parameters", "Long-term memory",
            "Vanishing and exploding gradients", "Training speed", "Gates", "Real data", "Variants",
            "Gates on the text", "Caveats")

YARDSTICKS = [
    "Hochreiter & Schmidhuber (1997, *Long short-term memory*, Neural Computation 9(8)) report LSTM solving the "
    "adding problem on sequences of 100 and more steps (their experiment 4) and the temporal-order problem on "
    "sequences of about 100 steps (experiment 6) — long-time-lag tasks that, they argue, earlier recurrent learning "
    "algorithms could not solve.",
    "Le, Jaitly & Hinton (2015, *A simple way to initialize recurrent networks of rectified linear units*) run the "
    "adding problem at T = 150 to 400 and report that their identity-initialised ReLU RNN performs comparably to the "
    "LSTM there; as we read their figures, the tanh RNN does not get far below the baseline at the longer lengths.",
    "Arjovsky, Shah & Bengio (2016, *Unitary evolution recurrent neural networks*) run the copy task (10 symbols of 8, "
    "delays of hundreds of steps) and report that the LSTM does not get below the memoryless baseline at the longest "
    "delays within their budget, while their unitary RNN does.",
]

CAVEATS = [
    "One optimiser setting (Adam, one learning rate per task, gradient clipping at norm {clip}) is shared by all cells; "
    "no cell's learning rate was tuned on its own. A vanilla RNN in particular often needs a smaller learning rate or "
    "a special initialisation (Le et al. 2015), so its results here are for this protocol, not its best case.",
    "{seeds} seeds per configuration: a share of 2/3 against 1/3 is one seed's difference. Verdicts only count "
    "differences that clear a stated margin.",
    "The step budgets are small (this profile: {profile}); a \"not solved\" means \"not solved within the budget\".",
    "Timings: {timing_note}",
]


def _mean_sd(xs) -> str:
    xs = [x for x in xs if x is not None and x == x]
    if not xs:
        return "—"
    return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"


def _share(e) -> str:
    return f"{sum(e['solved'])}/{len(e['solved'])}"


def build_report(p: Profile, m: dict, info: dict) -> Document:
    """``m`` from measure_all; ``info``: run facts (elapsed, cached counts, engine, date)."""
    doc = Document("rnnlab compare: RNN, LSTM and GRU under one protocol")
    sp = m["speed"]
    loaded = max(sp["load_before"][0], sp["load_after"][0]) > 1.2 * sp["threads"]
    timing_note = (f"taken with {sp['threads']} thread(s) on {sp['cpus']} CPUs; the 1-minute load average was "
                   f"{sp['load_before'][0]:.1f} before and {sp['load_after'][0]:.1f} after the timing runs"
                   + (" — the machine was busy with other work, so timings are disturbed." if loaded else "."))

    # -- protocol ------------------------------------------------------------------------------------
    doc.heading("Protocol")
    mem = m["memory"]
    doc.paragraph(
        f"Profile **{p.name}** (`rnnlab compare --profile {p.name}`). Every cell gets the same tasks and data, "
        f"the same optimiser (Adam, gradient clipping at global norm {p.clip}), batch size {p.batch}, step budget, "
        f"evaluation schedule (every {p.eval_every} steps on {p.eval_samples} held-out sequences) and seeds "
        f"{', '.join(map(str, p.seeds))}. Cells are the seed's: tanh RNN, LSTM, GRU with the reset gate applied "
        f"before W_h (the seed's equations). Same hidden size H = {p.hidden} (input embedding E = {p.embedding}) for "
        f"every cell, and as a second view an equal parameter budget (each cell's H chosen so that its model has as "
        f"nearly as possible the LSTM model's parameter count). Training ran on rnnlab's engine "
        f"(`engine=\"auto\"`, which ran {info.get('engine', '?')}).")
    doc.bullets([f"{t}: T ∈ {{{', '.join(map(str, m_.lengths))}}}, {m_.steps} steps, learning rate {m_.lr:g}, solved when "
                 f"{mem['thresholds'][t]} (a memoryless answer scores {mem['baselines'][t]:.3g})"
                 + (f"; task settings {dict(m_.settings)}" if m_.settings else "")
                 for t, m_ in ((x.name, x) for x in p.memory)]
                + [f"char-LM: {dict(p.charlm.settings)}, H = {p.charlm.hidden}, {p.charlm.steps} steps, learning rate {p.charlm.lr:g}",
                   f"forecasting: {dict(p.forecast.settings)}, H = {p.forecast.hidden}, {p.forecast.steps} steps, learning rate {p.forecast.lr:g}",
                   f"tagging: {dict(p.tagging.settings)}, H = {p.tagging.hidden}, {p.tagging.steps} steps, learning rate {p.tagging.lr:g}"])
    doc.paragraph(f"This report: {info.get('trained', 0)} runs trained and {info.get('cached', 0)} taken from the run "
                  f"cache; written {info.get('date', '')} in {info.get('elapsed', 0) / 60:.1f} minutes. Timings {timing_note}")

    # -- the seed's table -------------------------------------------------------------------------------
    doc.heading("The seed's table, measured")
    doc.paragraph("Each row: the seed's claims for RNN, LSTM and GRU, what this run measured, and a verdict computed "
                  "from the measurements (see `rnnlab/compare/verdicts.py` for the rules and margins).")
    rows = seed_table(m)
    doc.table(["Feature", "RNN (seed)", "LSTM (seed)", "GRU (seed)", "Measured", "Verdict"],
              [[r["feature"], r["rnn"], r["lstm"], r["gru"], r["measured"], f"**{r['verdict']}**"] for r in rows],
              numeric=False)

    # -- parameters ---------------------------------------------------------------------------------------
    doc.heading("Parameters")
    pc = m["parameters"]
    doc.paragraph(f"One recurrent level with input size X = {pc['X']} and hidden size H = {pc['H']}: counted with "
                  f"`rnnlab.analysis.count_parameters` beside the closed forms RNN H(X+H)+H, LSTM 4(H(X+H)+H), "
                  f"GRU 3(H(X+H)+H).")
    doc.table(["cell", "counted", "closed form", "ratio to RNN"],
              [[c.upper(), v["counted"], v["closed_form"], round(v["ratio_to_rnn"], 3)] for c, v in pc["cells"].items()])
    doc.paragraph("Equal-parameter view: hidden sizes that give every cell's whole model (embedding, recurrent layer, "
                  "head) nearly the LSTM model's count.")
    doc.table(["task", *[f"{c.upper()} H" for c in CELLS], *[f"{c.upper()} params" for c in CELLS]],
              [[t, *[v[c]["hidden"] for c in CELLS], *[v[c]["params"] for c in CELLS]] for t, v in pc["budget"].items()])

    # -- memory ------------------------------------------------------------------------------------------------
    doc.heading("Long-term memory")
    doc.paragraph("Share of seeds that reach the threshold within the step budget, at each sequence length "
                  "(same hidden size for every cell). The longest length is the longest T solved by a majority of seeds.")
    ladder = mem["ladder"]
    doc.figure("memory_ladder.png", plots.solve_ladder([(t, {c: {int(T): e["share"] for T, e in by_T.items()}
                                                              for c, by_T in by_cell.items()}) for t, by_cell in ladder.items()]),
               "Share of seeds solving each length, per task.")
    for task, by_cell in ladder.items():
        lengths = sorted({int(T) for by_T in by_cell.values() for T in by_T})
        doc.table(["cell", *[f"T={T}" for T in lengths], "longest solved"],
                  [[c.upper(), *[_share(by_T[str(T)]) for T in lengths], mem["longest"][task][c] or "none"]
                   for c, by_T in by_cell.items()], numeric=False)
        metric = mem["thresholds"][task].split()[0]
        panels = [(f"{task}, T={T}", {c: [tuple(cv) for cv in by_T[str(T)]["curves"]] for c, by_T in by_cell.items()})
                  for T in lengths]
        threshold = float(mem["thresholds"][task].split()[-1])
        doc.figure(f"memory_curves_{task}.png", plots.curves_grid(panels, f"held-out {metric}", log=(metric == "mse"),
                                                                  threshold=threshold),
                   f"Learning curves on {task} ({mem['thresholds'][task]} counts as solved), one line per seed.")
    doc.paragraph("Equal parameter budget, at each task's second length:")
    bud = mem["budget"]
    doc.table(["task", "T", *[f"{c.upper()} (H)" for c in CELLS]],
              [[t, next(iter(by_cell["lstm"])), *[f"{_share(next(iter(by_cell[c].values())))} (H={next(iter(by_cell[c].values()))['hidden']})"
                                                  for c in CELLS]] for t, by_cell in bud.items()], numeric=False)
    doc.paragraph("Published yardsticks (different sizes, budgets and training schemes; quoted for orientation, not "
                  "as numbers to match):")
    doc.bullets(YARDSTICKS)

    # -- gradients ------------------------------------------------------------------------------------------------
    doc.heading("Vanishing and exploding gradients")
    g = m["gradients"]
    doc.paragraph(f"‖∂L/∂h_t‖ for the adding problem at T = {g['T']}, loss at the last step only, on {16} held-out "
                  f"sequences, computed with `rnnlab.analysis.hidden_gradient_norms` in float64, at initialisation and "
                  f"after training (the ladder's runs at that length). The per-step factor γ is "
                  f"`rnnlab.analysis.fit_decay_rate`: ‖∂L/∂h_(t-1)‖ ≈ γ·‖∂L/∂h_t‖ by a log-linear fit (γ < 1 vanishing).")
    doc.figure("gradients_profile.png", plots.gradient_profiles(
        [("at initialisation", {c: e["init"] for c, e in g["cells"].items()}),
         ("after training", {c: e["trained"] for c, e in g["cells"].items()})]),
        "‖∂L/∂h_t‖ against t (log scale), one line per seed.")
    rows_g = []
    for c, e in g["cells"].items():
        ratio_init = statistics.median(n[0] / n[-1] if n[-1] > 0 else float("nan") for n in e["init"])
        ratio_tr = statistics.median(n[0] / n[-1] if n[-1] > 0 else float("nan") for n in e["trained"])
        rows_g.append([c.upper(), round(statistics.fmean(e["rate_init"]), 4), round(statistics.fmean(e["rate_trained"]), 4),
                       float(ratio_init), float(ratio_tr), f"{sum(e['solved'])}/{len(e['solved'])}"])
    doc.table(["cell", "γ at init", "γ trained", "‖∂L/∂h_1‖/‖∂L/∂h_T‖ init", "same, trained", "solved"], rows_g)
    doc.figure("gradients_clipping.png", plots.curves_grid(
        [(f"adding, T={g['T']}", {c: [(list(range(1, len(n) + 1)), n) for n in e["clip_norms"]] for c, e in g["cells"].items()})],
        "global gradient norm before clipping", log=True, threshold=p.clip),
        f"Pre-clipping gradient norm at every training step (dotted: the clipping threshold {p.clip}).")

    # -- speed -----------------------------------------------------------------------------------------------------
    doc.heading("Training speed")
    paths = sorted({f"{r['cell']}: {r['auto_path']}" for r in sp["rows"]})
    doc.paragraph(f"Median time of one training step (forward, backward through time, Adam update) on a batch of "
                  f"{sp['batch']} sequences, H = {sp['hidden']}, after warm-up, {sp['timing_steps']} timed steps. "
                  f"**native** is rnnlab's own engine (`engine=\"native\"`: hand-written BPTT in C++ loops); **auto** is "
                  f"what `engine=\"auto\"` picks per call ({', '.join(paths)}); **torch.nn** is the same model with its "
                  f"recurrent layer replaced by `layer.to_torch()` (torch's fused CPU kernels). The seed's GRU (reset "
                  f"before W_h) has no torch.nn twin, so the GRU is also timed in cuDNN's form (reset after, `gru-after`). "
                  f"Timings {timing_note}")
    ratios = {impl: speed_ratios(m, impl) for impl in ("native", "torch_nn")}
    if ratios["native"] and ratios["torch_nn"]:
        doc.paragraph(f"Per step, relative to the LSTM (median over all timed configurations): on rnnlab's native engine "
                      f"the RNN takes {ratios['native']['rnn']:.2f}× and the seed's GRU {ratios['native']['gru']:.2f}× the "
                      f"LSTM's time; on torch.nn's CPU kernels the RNN takes {ratios['torch_nn']['rnn']:.2f}× and the GRU "
                      f"(reset after) {ratios['torch_nn']['gru']:.2f}× — "
                      + ("so on torch.nn the GRU is *slower* than the LSTM, despite 3/4 of its arithmetic, the opposite of "
                         "the seed's claim." if ratios["torch_nn"]["gru"] > 1.1 else
                         "so on torch.nn too the GRU is not slower than the LSTM.")
                      + " The verdict in the seed's table is given for each implementation.")
    longest = max(r["T"] for r in sp["rows"] if r["task"] == "adding")
    sel = [r for r in sp["rows"] if r["task"] == "adding" and r["T"] == longest]
    series = {name: [1000 * r.get(impl, float("nan")) for r in sel]
              for impl, name in (("native", "rnnlab native"), ("auto", "rnnlab auto"), ("torch_nn", "torch.nn"))}
    doc.figure("speed_step.png", plots.grouped_bars([r["cell"].upper() for r in sel], series, "ms per training step"),
               f"Time per training step on the adding problem at T = {longest}.")
    ms = lambda r, k: 1000 * r[k] if k in r else "—"
    tps = lambda r, k: round(r["tokens"] / r[k]) if k in r else "—"
    doc.table(["task", "T", "cell", "native ms/step", "auto ms/step", "torch.nn ms/step", "native tokens/s", "torch.nn tokens/s"],
              [[r["task"], r["T"], r["cell"], ms(r, "native"), ms(r, "auto"), ms(r, "torch_nn"), tps(r, "native"), tps(r, "torch_nn")]
               for r in sp["rows"]])
    doc.paragraph("Time to solve = steps to reach the threshold × the measured time per step (the steps are the same "
                  "for any implementation of the same function; the torch.nn column for the seed's GRU is empty).")
    solve_rows = {}
    for s in sp["solve"]:
        solve_rows.setdefault((s["task"], s["T"], s["cell"]), []).append(s)
    doc.table(["task", "T", "cell", "seeds solved", "median steps", "median s (native)", "median s (torch.nn)"],
              [[k[0], k[1], k[2].upper(), len(v), statistics.median(x["steps"] for x in v),
                statistics.median(x["seconds_native"] for x in v),
                statistics.median(x["seconds_torch_nn"] for x in v) if v[0]["seconds_torch_nn"] is not None else "—"]
               for k, v in sorted(solve_rows.items())] or [["—"] * 7])

    # -- gates -------------------------------------------------------------------------------------------------------
    doc.heading("Gates")
    gt = m["gates"]
    doc.paragraph("Gate activations of the char-LM models on held-out text. A gate unit is left-saturated at a step when "
                  "its activation is below 0.1 and right-saturated above 0.9 (Karpathy, Johnson & Fei-Fei 2015, who plot "
                  "the same per-unit fractions for LSTMs and GRUs); `rnnlab.analysis.gate_saturation` computes them.")
    hist = {c: {gname: np.repeat((np.arange(40) + 0.5) / 40, np.asarray(h)) for gname, h in e["hist"].items()}
            for c, e in gt["cells"].items() if e["hist"]}
    if hist:
        doc.figure("gates_histograms.png", plots.gate_histograms(hist), "Distribution of σ-gate activations (seed 0).")
        doc.figure("gates_saturation.png", plots.saturation_scatter(
            {c: {gname: (np.asarray(v["left_units"]), np.asarray(v["right_units"])) for gname, v in e["saturation"].items()}
             for c, e in gt["cells"].items() if e["saturation"]}),
            "Each point is one gate unit: fraction of steps left-saturated against right-saturated (seed 0).")
    notes = []
    for c, e in gt["cells"].items():
        for gname, v in e["saturation"].items():
            right = np.asarray(v["right_units"] or [])
            left = np.asarray(v["left_units"] or [])
            if right.size:
                notes.append(f"{c.upper()} {gname}: {int((right > 0.5).sum())} of {right.size} units right-saturated "
                             f"and {int((left > 0.5).sum())} left-saturated more than half the time")
    if notes:
        doc.paragraph("Units that are mostly saturated act as switches: a forget gate (LSTM f) held above 0.9, or an "
                      "update gate (GRU z) held below 0.1, keeps its unit's memory across many steps. Seed 0: "
                      + "; ".join(notes) + ".")
    doc.table(["cell", "gate", "left-saturated (< 0.1)", "right-saturated (> 0.9)"],
              [[c.upper(), gname, _mean_sd(v["left"]), _mean_sd(v["right"])]
               for c, e in gt["cells"].items() for gname, v in e["saturation"].items()], numeric=False)

    # -- real data ------------------------------------------------------------------------------------------------------
    doc.heading("Real data")
    lm = m["real"]["charlm"]
    doc.paragraph(f"Character-level language model on the default corpus (Python standard-library sources, "
                  f"{lm['chars']['train']:,} training and {lm['chars']['val']:,} held-out characters, "
                  f"{lm['chars']['vocab']} symbols), held-out bits per character. Baselines: the unigram entropy "
                  f"({lm['unigram_bpc']:.3f}) and an interpolated Witten–Bell n-gram (`rnnlab.analysis.NGramLM`) whose "
                  f"order was chosen on the last 10 % of the training text (order {lm['ngram']['order']}).")
    best = min(lm["cells"], key=lambda c: statistics.fmean(lm["cells"][c]))
    doc.table(["model", "bits per character (mean ± sd over seeds)"],
              [[f"{c.upper()} (H = {p.charlm.hidden}, {lm['params'][c]:,} parameters)", _mean_sd(v)] for c, v in lm["cells"].items()]
              + [[f"n-gram, order {lm['ngram']['order']}", f"{lm['ngram']['bpc']:.3f}"], ["unigram", f"{lm['unigram_bpc']:.3f}"]],
              numeric=False)
    beats = statistics.fmean(lm["cells"][best]) < lm["ngram"]["bpc"]
    doc.paragraph(f"Best recurrent model: {best.upper()}; it " + ("beats" if beats else "does **not** beat")
                  + f" the n-gram at this budget. n-gram by order: "
                  + ", ".join(f"{n}: {v:.3f}" for n, v in lm["ngram"]["by_order"].items()) + ".")
    fc = m["real"]["forecast"]
    doc.paragraph(f"Forecasting the default real series (yearly sunspot numbers, {fc['length']} values, the last "
                  f"{fc['held_out']} held out), one step ahead from the {dict(p.forecast.settings)['seq_len']} values "
                  f"before. Baselines fitted on the same split: the naive forecast (last value) and AR(p) by least "
                  f"squares (`rnnlab.analysis.fit_ar`, p = {fc['ar']['p']} chosen on the last 20 % of the training part).")
    mse = {c: statistics.fmean(v["mse"]) for c, v in fc["cells"].items()}
    doc.table(["model", "held-out MSE", "held-out MAE"],
              [[c.upper(), _mean_sd(v["mse"]), _mean_sd(v["mae"])] for c, v in fc["cells"].items()]
              + [[f"AR({fc['ar']['p']})", f"{fc['ar']['mse']:.3f}", f"{fc['ar']['mae']:.3f}"],
                 ["naive (last value)", f"{fc['naive']['mse']:.3f}", f"{fc['naive']['mae']:.3f}"]], numeric=False)
    losers = [c.upper() for c, v in mse.items() if v >= fc["ar"]["mse"]]
    doc.paragraph(("Recurrent networks do not always win here: " + ", ".join(losers) + " did not beat AR("
                   + str(fc["ar"]["p"]) + ") on held-out MSE.") if losers else
                  f"Every recurrent cell beat AR({fc['ar']['p']}) on held-out MSE at this budget.")

    # -- variants ----------------------------------------------------------------------------------------------------------
    doc.heading("Variants")
    v = m["variants"]
    doc.paragraph(f"Tagging task {v['settings']}: each step's label is the symbol {v['settings'].get('shift')} steps later, "
                  f"so a forward-only network can do no better than chance ({v['chance']:.3f}); a bidirectional one can "
                  f"read it. Stacks of 1, 2 and 3 levels (uni-/bi-directional, as configured) under the same budget.")
    doc.table(["cell", *v["configs"]], [[c.upper(), *[f"{_mean_sd(v['accuracy'][c][k])} ({v['params'][c][k]:,} params)"
                                                      for k in v["configs"]]] for c in v["accuracy"]], numeric=False)
    solved = {k: all(min(v["accuracy"][c][k]) > 0.99 for c in v["accuracy"]) for k in v["configs"]}
    uni_chance = all(abs(statistics.fmean(v["accuracy"][c][k]) - v["chance"]) < 0.05
                     for c in v["accuracy"] for k in v["configs"] if k.startswith("uni"))
    bis = [k for k in v["configs"] if k.startswith("bi")]
    doc.paragraph(("Forward-only networks stay at chance, as they must. " if uni_chance else
                   "A forward-only network is above chance here, which the task's construction rules out: check the data. ")
                  + ("Every bidirectional stack solves the task, so extra depth buys nothing here but parameters and time."
                     if bis and all(solved[k] for k in bis) else
                     "Bidirectional stacks: " + ", ".join(f"{k} {'solved by every cell and seed' if solved[k] else 'not solved by every cell and seed'}"
                                                          for k in bis) + "."))
    doc.figure("variants.png", plots.grouped_bars(v["configs"], {c: [statistics.fmean(v["accuracy"][c][k]) for k in v["configs"]]
                                                                 for c in v["accuracy"]}, "held-out accuracy",
                                                  hlines={"chance": v["chance"]}),
               "Tagging accuracy by depth and direction.")
    cv = m["cell_variants"]
    doc.paragraph(f"LSTM variants on the adding problem at T = {cv['T']} (the memory ladder's longest rung, same "
                  f"protocol; solved when {cv['threshold']}): layer normalisation (Ba, Kiros & Hinton 2016), peepholes "
                  f"(Gers & Schmidhuber 2000) and the coupled input-forget gate (Greff et al. 2017), beside the plain LSTM.")
    doc.table(["LSTM", "parameters", "seeds solved", "final MSE", "step solved (mean)", "engine"],
              [[name, f"{r['params']:,}", f"{sum(r['solved'])}/{len(r['solved'])}", _mean_sd(r["final"]),
                (f"{statistics.fmean([s for s in r['solved_at'] if s is not None]):.0f}" if any(r["solved"]) else "—"),
                r["engine"]] for name, r in cv["rows"].items()], numeric=False)

    # -- gates on the text --------------------------------------------------------------------------------------------------
    doc.heading("Gates on the text")
    if gt["text"]:
        doc.raw_html(
            "<p>Held-out text read by the char-LMs (seed 0). For each gate (and the LSTM's cell state), the unit whose "
            "activation varies most over this passage colours each character: blue low, white middle, red high. "
            "Hover a character for the value.</p>" + gate_text_html(gt["text"], gt["text_traces"]),
            "This view needs colour: open `report.html` (section *Gates on the text*) in a browser.")

    doc.heading("Caveats")
    doc.bullets([c.format(clip=p.clip, seeds=len(p.seeds), profile=p.name, timing_note=timing_note) for c in CAVEATS])
    return doc
