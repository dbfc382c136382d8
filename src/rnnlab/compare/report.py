"""The report: one renderer per section lays that section's measurements (a dataclass from
``measure.py``) and verdicts out as blocks of a Document, which renders them as Markdown and as one
self-contained HTML page. Renderers format numbers; they compute no statistics.

``RENDERERS`` is the report, in order: (heading, renderer) pairs, each renderer called as
``render(doc, ctx)`` with a :class:`Context`. A new section is one new pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import plots
from .document import Document
from .measure import Measurements, Stat
from .protocol import CELLS, Profile
from .textview import gate_text_html
from .unrolled import TITLE as UNROLLED, render_unrolled
from .verdicts import SeedRow, seed_table
from .yardsticks import BETTER, MATCHES, WORSE

TITLE = "rnnlab compare: RNN, LSTM and GRU under one protocol"

LADDER_YARDSTICKS = [
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


@dataclass
class Context:
    """What every renderer may read: the profile, the measurements, the run's facts and the seed table."""

    profile: Profile
    m: Measurements
    info: dict  # trained and cached counts, elapsed seconds, date, engine
    rows: list[SeedRow]


def _duration(hours: float) -> str:
    return f"{hours:.1f} hours" if hours >= 1 else f"{60 * hours:.0f} minutes"


def _model(name: str) -> str:
    return name.upper() if name in CELLS else name


def _params(n: int) -> str:
    return f"{n:,}"


def _metric(x: float) -> str:
    """A metric value: 3 decimals from 0.1 up, 3 significant digits below (5.3e-05, 0.0204)."""
    if x != x:
        return "—"
    return f"{x:.3g}" if abs(x) < 0.1 else f"{x:.3f}"


def _stat(s: Stat) -> str:
    """mean ± sd, the sd in the mean's format (3 decimals from 0.1 up)."""
    if not s.values:
        return "—"
    if len(s.values) == 1:
        return _metric(s.mean)
    return f"{_metric(s.mean)} ± {s.sd:.3f}" if abs(s.mean) >= 0.1 else f"{_metric(s.mean)} ± {s.sd:.2g}"


# -- sections ----------------------------------------------------------------------------------------
def protocol_section(doc: Document, ctx: Context) -> None:
    p, mem, info = ctx.profile, ctx.m.memory, ctx.info
    doc.paragraph(
        f"Profile **{p.name}** (`rnnlab compare --profile {p.name}`). Every cell gets the same tasks and data, "
        f"the same optimiser (Adam, gradient clipping at global norm {p.clip}), batch size {p.batch}, step budget, "
        f"evaluation schedule (every {p.eval_every} steps on {p.eval_samples} held-out sequences) and seeds "
        f"{', '.join(map(str, p.seeds))}; every run trains through `rnnlab.train.Trainer`. Cells are the seed's: "
        f"tanh RNN, LSTM, GRU with the reset gate applied before W_h (the seed's equations), except where a "
        f"yardstick's source used torch.nn's GRU. Same hidden size H = {p.hidden} (input embedding E = {p.embedding}) "
        f"for every cell, and as a second view an equal parameter budget (each cell's H chosen so that its model has "
        f"as nearly as possible the LSTM model's parameter count). Training ran on rnnlab's engine "
        f"(`engine=\"auto\"`, which ran {info.get('engine', '?')}).")
    doc.bullets([f"{t}: T ∈ {{{', '.join(map(str, mem.lengths[t]))}}}, {mem.steps[t]} steps, learning rate {mem.lr[t]:g}, "
                 f"solved when {mem.thresholds[t]} (a memoryless answer scores {mem.baselines[t]:.3g})"
                 + (f"; task settings {mem.settings[t]}" if mem.settings[t] else "") for t in mem.lengths]
                + [f"char-LM: {dict(p.charlm.settings)}, H = {p.charlm.hidden}, {p.charlm.steps} steps, learning rate {p.charlm.lr:g}",
                   f"forecasting: {dict(p.forecast.settings)}, H = {p.forecast.hidden}, {p.forecast.steps} steps, learning rate {p.forecast.lr:g}",
                   f"tagging: {dict(p.tagging.settings)}, H = {p.tagging.hidden}, {p.tagging.steps} steps, learning rate {p.tagging.lr:g}"]
                + [f"yardstick {y.title}: {y.steps} steps, batch {y.batch}, learning rate {y.lr:g}, "
                   + (f"clipping at {y.clip:g}" if y.clip else "no clipping") + " (see [Yardsticks](#yardsticks))"
                   for y in p.yardsticks])
    doc.paragraph(f"This report: {info.get('trained', 0)} runs trained and {info.get('cached', 0)} taken from the run "
                  f"cache; written {info.get('date', '')} in {info.get('elapsed', 0) / 60:.1f} minutes"
                  + (f" (training {info['training_minutes']:.1f} of them)" if "training_minutes" in info else "")
                  + (f"; the runs' training steps, timed one by one, add up to {info['train_core_minutes']:.0f} minutes "
                     f"(summed over runs, {p.jobs} at a time, under whatever else shared the machine when they ran)"
                     if "train_core_minutes" in info else "")
                  + f". Timings {ctx.m.speed.timing_note()}")


def seed_table_section(doc: Document, ctx: Context) -> None:
    doc.paragraph("Each row: the seed's claims for RNN, LSTM and GRU, what this run measured, and a verdict computed "
                  "from the measurements (see `rnnlab/compare/verdicts.py` for the rules and margins).")
    doc.table(["Feature", "RNN (seed)", "LSTM (seed)", "GRU (seed)", "Measured", "Verdict"],
              [[r.feature, r.rnn, r.lstm, r.gru, r.measured, f"**{r.verdict}**"] for r in ctx.rows], numeric=False)


def yardsticks_section(doc: Document, ctx: Context) -> None:
    results = ctx.m.yardsticks.results
    if not results:
        doc.paragraph(f"Profile {ctx.profile.name} runs no yardsticks; `rnnlab compare --profile standard` does.")
        return
    doc.paragraph(
        "Published protocols reproduced: each source's task, model size, training settings and metric, all three "
        f"cells, {results[0].seeds} seeds, our mean ± sd at the end of training beside the published number (a cell "
        "with no published number of its own is set against the source's reference model, named in brackets). Verdict "
        "rule (`rnnlab/compare/yardsticks.py`): with margin = max(2·sd, the yardstick's tolerance), *matches* when "
        "|ours − published| ≤ margin, otherwise *better* or *worse* by the metric's direction. A published number "
        "marked *unverified* could not be read in its source while this comparison was built; its verdict is "
        "computed all the same, but rests on that number.")
    rows = []
    for r in results:
        y = r.yardstick
        for c in r.cells:
            pub = c.published
            rows.append([y.title, f"{c.cell.upper()} (H = {c.hidden}, {_params(c.params)} params)", y.metric,
                         _stat(c.result) + (f" ({c.missing} of {r.seeds} runs not trained: no verdict)" if c.missing else ""),
                         "—" if pub is None else _metric(pub.value) + ("" if pub.model == c.cell else f" ({_model(pub.model)})")
                         + ("" if pub.verified else " (unverified)"),
                         "—" if c.difference is None else f"{c.difference:+.3g}",
                         "—" if c.verdict is None else f"**{c.verdict}** (margin {_metric(c.margin)})"])
    doc.table(["yardstick", "cell", "metric", "ours (mean ± sd)", "published", "ours − published", "verdict"], rows,
              numeric=False)
    for r in results:
        y = r.yardstick
        doc.heading(y.title, 3)
        doc.paragraph(y.protocol)
        budget = (f"Our budget: {y.steps:,} steps; the source's: {y.paper_steps:,}"
                  + (f" — at our measured median time per step of the slowest cell, the source's budget would take "
                     f"about {_duration(r.paper_hours_per_run)} per run on this machine" if r.paper_hours_per_run else "")
                  + "." if y.paper_steps else f"Our budget: {y.steps:,} steps (no published recurrent budget).")
        doc.paragraph(budget + f" A trivial answer scores {_metric(r.baseline)} ({y.metric}).")
        notes = []
        for c in r.cells:
            if c.published is None or c.verdict is None:
                continue
            gap = abs(c.difference)
            words = {MATCHES: "matches it", BETTER: f"is better by {gap:.3g}", WORSE: f"is worse by {gap:.3g}"}[c.verdict]
            against = "" if c.published.model == c.cell else f" ({_model(c.published.model)})"
            short = not (c.result.mean > r.baseline if y.higher_is_better else c.result.mean < r.baseline)
            notes.append(f"{c.cell.upper()}: ours {_stat(c.result)} against {_metric(c.published.value)}{against}, {words}"
                         + (f" — and not yet past the trivial answer's {_metric(r.baseline)} at this budget" if short else ""))
        if notes:
            doc.paragraph("; ".join(notes) + ".")
        sources = [f"{_model(q.model)}: {_metric(q.value)} — {q.source}"
                   + (f"; {q.note}" if q.note else "") + (" (read in the source)" if q.verified else "")
                   for q in y.published]
        doc.bullets(sources)
    ys_ = ctx.m.yardsticks
    if ys_.full_hours is not None:
        doc.paragraph(f"`rnnlab compare --full` runs these yardsticks at their sources' budgets with {ys_.full_seeds} "
                      f"seeds: at the median step times measured here, about {ys_.full_hours:.0f} hours on "
                      f"{ys_.jobs} cores for the yardsticks alone — a job for a bigger machine.")


def parameters_section(doc: Document, ctx: Context) -> None:
    pc = ctx.m.parameters
    doc.paragraph(f"One recurrent level with input size X = {pc.X} and hidden size H = {pc.H}: counted with "
                  f"`rnnlab.analysis.count_parameters` beside the closed forms RNN H(X+H)+H, LSTM 4(H(X+H)+H), "
                  f"GRU 3(H(X+H)+H).")
    doc.table(["cell", "counted", "closed form", "ratio to RNN"],
              [[c.upper(), v.counted, v.closed_form, round(v.ratio_to_rnn, 3)] for c, v in pc.cells.items()])
    doc.paragraph("Equal-parameter view: hidden sizes that give every cell's whole model (embedding, recurrent layer, "
                  "head) nearly the LSTM model's count.")
    doc.table(["task", *[f"{c.upper()} H" for c in CELLS], *[f"{c.upper()} params" for c in CELLS]],
              [[t, *[v[c].hidden for c in CELLS], *[v[c].params for c in CELLS]] for t, v in pc.budget.items()])


def memory_section(doc: Document, ctx: Context) -> None:
    mem = ctx.m.memory
    doc.paragraph("Share of seeds that reach the threshold within the step budget, at each sequence length "
                  "(same hidden size for every cell). The longest length is the longest T solved by a majority of seeds.")
    doc.figure("memory_ladder.png", plots.solve_ladder([(t, {c: {T: e.share for T, e in by_T.items()}
                                                              for c, by_T in by_cell.items()}) for t, by_cell in mem.ladder.items()]),
               "Share of seeds solving each length, per task.")
    for task, by_cell in mem.ladder.items():
        lengths = mem.lengths[task]
        doc.table(["cell", *[f"T={T}" for T in lengths], "longest solved"],
                  [[c.upper(), *[by_T[T].share_text for T in lengths], mem.longest[task][c] or "none"]
                   for c, by_T in by_cell.items()], numeric=False)
        panels = [(f"{task}, T={T}", {c: by_T[T].curves for c, by_T in by_cell.items()}) for T in lengths]
        doc.figure(f"memory_curves_{task}.png", plots.curves_grid(panels, f"held-out {mem.metric[task]}",
                                                                  log=(mem.metric[task] == "mse"),
                                                                  threshold=mem.threshold_value[task]),
                   f"Learning curves on {task} ({mem.thresholds[task]} counts as solved), one line per seed.")
    doc.paragraph("Equal parameter budget, at each task's second length:")
    rows = []
    for task, by_cell in mem.budget.items():
        T = next(iter(by_cell["lstm"]))
        rows.append([task, T, *[f"{by_cell[c][T].share_text} (H={by_cell[c][T].hidden})" for c in CELLS]])
    doc.table(["task", "T", *[f"{c.upper()} (H)" for c in CELLS]], rows, numeric=False)
    doc.paragraph("Published long-lag results (different sizes, budgets and training schemes; quoted for orientation — "
                  "the reproduced protocols are in [Yardsticks](#yardsticks)):")
    doc.bullets(LADDER_YARDSTICKS)


def gradients_section(doc: Document, ctx: Context) -> None:
    g, clip = ctx.m.gradients, ctx.profile.clip
    doc.paragraph(f"‖∂L/∂h_t‖ for the adding problem at T = {g.T}, loss at the last step only, on {g.batch} held-out "
                  f"sequences, computed with `rnnlab.analysis.hidden_gradient_norms` in float64, at initialisation and "
                  f"after training (the ladder's runs at that length). The per-step factor γ is "
                  f"`rnnlab.analysis.fit_decay_rate`: ‖∂L/∂h_(t-1)‖ ≈ γ·‖∂L/∂h_t‖ by a log-linear fit (γ < 1 vanishing).")
    doc.figure("gradients_profile.png", plots.gradient_profiles(
        [("at initialisation", {c: e.init for c, e in g.cells.items()}),
         ("after training", {c: e.trained for c, e in g.cells.items()})]),
        "‖∂L/∂h_t‖ against t (log scale), one line per seed.")
    doc.table(["cell", "γ at init", "γ trained", "‖∂L/∂h_1‖/‖∂L/∂h_T‖ init", "same, trained", "solved"],
              [[c.upper(), round(e.rate_init_mean, 4), round(e.rate_trained_mean, 4), e.ratio_init, e.ratio_trained,
                e.solved_text] for c, e in g.cells.items()])
    doc.figure("gradients_clipping.png", plots.curves_grid(
        [(f"adding, T={g.T}", {c: [(list(range(1, len(n) + 1)), n) for n in e.clip_norms] for c, e in g.cells.items()})],
        "global gradient norm before clipping", log=True, threshold=clip),
        f"Pre-clipping gradient norm at every training step (dotted: the clipping threshold {clip}).")


def speed_section(doc: Document, ctx: Context) -> None:
    sp = ctx.m.speed
    doc.paragraph(f"Median time of one training step (forward, backward through time, Adam update) on a batch of "
                  f"{sp.batch} sequences, H = {sp.hidden}, after warm-up, {sp.timing_steps} timed steps. "
                  f"**native** is rnnlab's own engine (`engine=\"native\"`: hand-written BPTT in C++ loops); **auto** is "
                  f"what `engine=\"auto\"` picks per call ({', '.join(sp.auto_paths)}); **torch.nn** is the same model with "
                  f"its recurrent layer replaced by `layer.to_torch()` (torch's fused CPU kernels). The seed's GRU (reset "
                  f"before W_h) has no torch.nn twin, so the GRU is also timed in cuDNN's form (reset after, `gru-after`). "
                  f"Timings {sp.timing_note()}")
    native, tnn = sp.ratios.get("native"), sp.ratios.get("torch_nn")
    if native and tnn:
        doc.paragraph(f"Per step, relative to the LSTM (median over all timed configurations): on rnnlab's native engine "
                      f"the RNN takes {native['rnn']:.2f}× and the seed's GRU {native['gru']:.2f}× the LSTM's time; on "
                      f"torch.nn's CPU kernels the RNN takes {tnn['rnn']:.2f}× and the GRU (reset after) {tnn['gru']:.2f}× — "
                      + ("so on torch.nn the GRU is *slower* than the LSTM, despite 3/4 of its arithmetic, the opposite of "
                         "the seed's claim." if tnn["gru"] > 1.1 else "so on torch.nn too the GRU is not slower than the LSTM.")
                      + " The verdict in the seed's table is given for each implementation.")
    longest = max(r.T for r in sp.rows if r.task == "adding")
    sel = [r for r in sp.rows if r.task == "adding" and r.T == longest]
    nan = float("nan")
    series = {"rnnlab native": [1000 * r.native for r in sel], "rnnlab auto": [1000 * r.auto for r in sel],
              "torch.nn": [1000 * r.torch_nn if r.torch_nn is not None else nan for r in sel]}
    doc.figure("speed_step.png", plots.grouped_bars([r.cell.upper() for r in sel], series, "ms per training step"),
               f"Time per training step on the adding problem at T = {longest}.")
    ms = lambda s: 1000 * s if s is not None else "—"
    tps = lambda r, s: round(r.tokens / s) if s is not None else "—"
    doc.table(["task", "T", "cell", "native ms/step", "auto ms/step", "torch.nn ms/step", "native tokens/s", "torch.nn tokens/s"],
              [[r.task, r.T, r.cell, ms(r.native), ms(r.auto), ms(r.torch_nn), tps(r, r.native), tps(r, r.torch_nn)]
               for r in sp.rows])
    doc.paragraph("Time to solve = steps to reach the threshold × the measured time per step (the steps are the same "
                  "for any implementation of the same function; the torch.nn column for the seed's GRU is empty).")
    doc.table(["task", "T", "cell", "seeds solved", "median steps", "median s (native)", "median s (torch.nn)"],
              [[s.task, s.T, s.cell.upper(), s.seeds, s.median_steps, s.median_seconds_native,
                s.median_seconds_torch_nn if s.median_seconds_torch_nn is not None else "—"] for s in sp.solve]
              or [["—"] * 7])


def gates_section(doc: Document, ctx: Context) -> None:
    gt = ctx.m.gates
    doc.paragraph("Gate activations of the char-LM models on held-out text. A gate unit is left-saturated at a step when "
                  "its activation is below 0.1 and right-saturated above 0.9 (Karpathy, Johnson & Fei-Fei 2015, who plot "
                  "the same per-unit fractions for LSTMs and GRUs); `rnnlab.analysis.gate_saturation` computes them.")
    hist = {c: e.hist for c, e in gt.cells.items() if e.hist}
    if hist:
        doc.figure("gates_histograms.png", plots.gate_histograms(hist), "Distribution of σ-gate activations (seed 0).")
        doc.figure("gates_saturation.png", plots.saturation_scatter(
            {c: {g: (v.left_units, v.right_units) for g, v in e.saturation.items()} for c, e in gt.cells.items()
             if e.saturation}),
            "Each point is one gate unit: fraction of steps left-saturated against right-saturated (seed 0).")
    notes = [f"{c.upper()} {g}: {v.units_right_mostly} of {len(v.right_units)} units right-saturated and "
             f"{v.units_left_mostly} left-saturated more than half the time"
             for c, e in gt.cells.items() for g, v in e.saturation.items()]
    if notes:
        doc.paragraph("Units that are mostly saturated act as switches: a forget gate (LSTM f) held above 0.9, or an "
                      "update gate (GRU z) held below 0.1, keeps its unit's memory across many steps. Seed 0: "
                      + "; ".join(notes) + ".")
    doc.table(["cell", "gate", "left-saturated (< 0.1)", "right-saturated (> 0.9)"],
              [[c.upper(), g, v.left.text(), v.right.text()] for c, e in gt.cells.items() for g, v in e.saturation.items()],
              numeric=False)


def real_data_section(doc: Document, ctx: Context) -> None:
    lm, fc = ctx.m.real.charlm, ctx.m.real.forecast
    doc.paragraph(f"Character-level language model on the default corpus (Python standard-library sources, "
                  f"{lm.train_chars:,} training and {lm.val_chars:,} held-out characters, {lm.vocab} symbols), held-out "
                  f"bits per character. Baselines: the unigram entropy ({lm.unigram_bpc:.3f}) and an interpolated "
                  f"Witten–Bell n-gram (`rnnlab.analysis.NGramLM`) whose order was chosen on the last 10 % of the "
                  f"training text (order {lm.ngram_order}).")
    doc.table(["model", "bits per character (mean ± sd over seeds)"],
              [[f"{c.upper()} (H = {lm.hidden}, {lm.params[c]:,} parameters)", s.text()] for c, s in lm.bpc.items()]
              + [[f"n-gram, order {lm.ngram_order}", f"{lm.ngram_bpc:.3f}"], ["unigram", f"{lm.unigram_bpc:.3f}"]],
              numeric=False)
    doc.paragraph(f"Best recurrent model: {lm.best.upper()}; it " + ("beats" if lm.best_beats_ngram else "does **not** beat")
                  + " the n-gram at this budget. n-gram by order: "
                  + ", ".join(f"{n}: {v:.3f}" for n, v in lm.ngram_by_order.items()) + ".")
    doc.figure("charlm_bpc.png", plots.grouped_bars(
        [c.upper() for c in lm.bpc], {"held-out bits/char": [s.mean for s in lm.bpc.values()]}, "bits per character",
        errors={"held-out bits/char": [s.sd for s in lm.bpc.values()]},
        hlines={f"n-gram (order {lm.ngram_order})": lm.ngram_bpc, "unigram": lm.unigram_bpc}),
        "Held-out bits per character, mean ± sd over seeds, against the n-gram and unigram baselines.")
    doc.paragraph(f"Forecasting the default real series (yearly sunspot numbers, {fc.length} values, the last "
                  f"{fc.held_out} held out), one step ahead from the {fc.seq_len} values before. Baselines fitted on the "
                  f"same split: the naive forecast (last value) and AR(p) by least squares (`rnnlab.analysis.fit_ar`, "
                  f"p = {fc.ar_p} chosen on the last 20 % of the training part).")
    doc.table(["model", "held-out MSE", "held-out MAE"],
              [[c.upper(), fc.mse[c].text(), fc.mae[c].text()] for c in fc.mse]
              + [[f"AR({fc.ar_p})", f"{fc.ar_mse:.3f}", f"{fc.ar_mae:.3f}"],
                 ["naive (last value)", f"{fc.naive_mse:.3f}", f"{fc.naive_mae:.3f}"]], numeric=False)
    doc.paragraph(("Recurrent networks do not always win here: " + ", ".join(c.upper() for c in fc.losers)
                   + f" did not beat AR({fc.ar_p}) on held-out MSE.") if fc.losers else
                  f"Every recurrent cell beat AR({fc.ar_p}) on held-out MSE at this budget.")
    speech = [r for r in ctx.m.yardsticks.results if r.yardstick.key == "japanese_vowels"]
    if speech:
        r = speech[0]
        doc.paragraph("Speech: the Japanese vowels (9 speakers, 12 LPC cepstra per frame, 7–29 frames) — held-out "
                      "accuracy " + ", ".join(f"{c.cell.upper()} {_stat(c.result)}" for c in r.cells)
                      + f" (largest class {_metric(r.baseline)}); see [Yardsticks](#yardsticks).")


def variants_section(doc: Document, ctx: Context) -> None:
    v, cv = ctx.m.variants, ctx.m.cell_variants
    doc.paragraph(f"Tagging task {v.settings}: each step's label is the symbol {v.settings.get('shift')} steps later, "
                  f"so a forward-only network can do no better than chance ({v.chance:.3f}); a bidirectional one can "
                  f"read it. Stacks of 1, 2 and 3 levels (uni-/bi-directional, as configured) under the same budget.")
    doc.table(["cell", *v.configs], [[c.upper(), *[f"{v.accuracy[c][k].text()} ({v.params[c][k]:,} params)"
                                                  for k in v.configs]] for c in v.accuracy], numeric=False)
    bis = [k for k in v.configs if k.startswith("bi")]
    doc.paragraph(("Forward-only networks stay at chance, as they must. " if v.forward_at_chance else
                   "A forward-only network is above chance here, which the task's construction rules out: check the data. ")
                  + ("Every bidirectional stack solves the task, so extra depth buys nothing here but parameters and time."
                     if bis and all(v.solved[k] for k in bis) else
                     "Bidirectional stacks: " + ", ".join(f"{k} {'solved by every cell and seed' if v.solved[k] else 'not solved by every cell and seed'}"
                                                          for k in bis) + "."))
    doc.figure("variants.png", plots.grouped_bars(v.configs, {c: [v.accuracy[c][k].mean for k in v.configs]
                                                              for c in v.accuracy}, "held-out accuracy",
                                                  hlines={"chance": v.chance}),
               "Tagging accuracy by depth and direction.")
    doc.paragraph(f"LSTM variants on the adding problem at T = {cv.T} (the memory ladder's longest rung, same "
                  f"protocol; solved when {cv.threshold}): layer normalisation (Ba, Kiros & Hinton 2016), peepholes "
                  f"(Gers & Schmidhuber 2000) and the coupled input-forget gate (Greff et al. 2017), beside the plain LSTM.")
    doc.table(["LSTM", "parameters", "seeds solved", "final MSE", "step solved (mean)", "engine"],
              [[name, f"{r.params:,}", r.solved_text, r.final.text(),
                f"{r.mean_solve_step:.0f}" if r.mean_solve_step is not None else "—", r.engine]
               for name, r in cv.rows.items()], numeric=False)


def text_view_section(doc: Document, ctx: Context) -> None:
    gt = ctx.m.gates
    if gt.text:
        doc.raw_html(
            "<p>Held-out text read by the char-LMs (seed 0). For each gate (and the LSTM's cell state), the unit whose "
            "activation varies most over this passage colours each character: blue low, white middle, red high. "
            "Hover a character for the value.</p>" + gate_text_html(gt.text, gt.text_traces),
            "This view needs colour: open `report.html` (section *Gates on the text*) in a browser.")


def caveats_section(doc: Document, ctx: Context) -> None:
    p = ctx.profile
    doc.bullets([c.format(clip=p.clip, seeds=len(p.seeds), profile=p.name, timing_note=ctx.m.speed.timing_note())
                 for c in CAVEATS])


RENDERERS = (
    ("Protocol", protocol_section),
    ("The seed's table, measured", seed_table_section),
    ("Yardsticks", yardsticks_section),
    ("Parameters", parameters_section),
    ("Long-term memory", memory_section),
    ("Vanishing and exploding gradients", gradients_section),
    (UNROLLED, render_unrolled),
    ("Training speed", speed_section),
    ("Gates", gates_section),
    ("Real data", real_data_section),
    ("Variants", variants_section),
    ("Gates on the text", text_view_section),
    ("Caveats", caveats_section),
)
SECTIONS = tuple(title for title, _ in RENDERERS)


def build_report(p: Profile, m: Measurements, info: dict) -> Document:
    """``m`` from measure_all; ``info``: run facts (elapsed, cached counts, engine, date)."""
    doc = Document(TITLE)
    ctx = Context(p, m, info, seed_table(m))
    for title, render in RENDERERS:
        doc.heading(title)
        render(doc, ctx)
    return doc
