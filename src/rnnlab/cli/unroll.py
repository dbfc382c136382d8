"""``rnnlab unroll``: draw trained runs or fresh models unrolled over one held-out sequence."""

from __future__ import annotations

import click
import torch

from ..models import CELLS, ModelConfig, SequenceModel
from ..tasks import TASKS, Batch, get_task
from ..train import load_run
from ..viz import unroll, write_page
from ..viz.png import render_png


def _units(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(u) for u in text.split(",") if u.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated unit indices such as 0,3,7; got {text!r}", param_hint="--units") from None


def _sample_batch(task, sample: int) -> Batch:
    """The task's held-out sequences up to ``sample``, in one batch."""
    if sample < 0:
        raise click.BadParameter(f"expected a held-out sequence index >= 0, got {sample}", param_hint="--sample")
    return task.eval_batches(sample + 1, sample + 1)[0]


def _loss(task, batch: Batch, sample: int):
    one = Batch(batch.x[sample:sample + 1], batch.y[sample:sample + 1])
    as64 = lambda t: t.double() if t.is_floating_point() else t
    one = Batch(as64(one.x), as64(one.y))
    return lambda y: task.loss(y, one)


@click.command("unroll")
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False))
@click.option("--sample", type=int, default=0, show_default=True, help="Which held-out sequence to draw.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="For runs: best (lowest held-out loss) or last.")
@click.option("--cell", "cells", multiple=True, type=click.Choice([*CELLS, "all"]),
              help="Without runs: a fresh model of this cell (repeatable; 'all' draws RNN, LSTM and GRU side by side).")
@click.option("--task", type=click.Choice(sorted(TASKS)), default="adding", show_default=True, help="Without runs: the task.")
@click.option("--seq-len", type=int, help="Without runs: the task's sequence length T.")
@click.option("--hidden", type=int, default=8, show_default=True, help="Without runs: hidden size H.")
@click.option("--layers", type=int, default=1, show_default=True, help="Without runs: stacked levels.")
@click.option("--bidirectional", is_flag=True, help="Without runs: read the sequence both ways.")
@click.option("--seed", type=int, default=0, show_default=True, help="Without runs: the fresh model's initialisation seed.")
@click.option("--units", help="Hidden units to draw, e.g. 0,3,7 (default: all up to 8, else the 8 that vary most).")
@click.option("--max-columns", type=click.IntRange(min=1), default=None, help="Draw longer sequences in blocks of steps (default 200 columns).")
@click.option("--out", default="unrolled.html", show_default=True, type=click.Path(dir_okay=False), help="The page to write.")
@click.option("--png", "png", type=click.Path(dir_okay=False), help="Also write the picture as a PNG.")
@click.option("--view", type=click.Choice(["forward", "bptt"]), default="forward", show_default=True, help="The PNG's view.")
def unroll_command(run_dirs, sample, checkpoint, cells, task, seq_len, hidden, layers, bidirectional, seed, units,
                   max_columns, out, png, view):
    """Draw networks unrolled over one held-out sequence, with their values, gates and BPTT's gradients.

    \b
    Examples:
      rnnlab unroll runs/adding-lstm-s0 --sample 3
      rnnlab unroll --cell gru --hidden 8 --task adding --seq-len 30
      rnnlab unroll --cell all --seq-len 50 --out three.html --png three.png --view bptt

    Each page is one self-contained HTML file: open it in a browser, click a box for its equations
    with this step's numbers, and press "Replay BPTT" for the gradients.
    """
    try:
        if run_dirs and cells:
            raise click.UsageError("give run directories or --cell, not both")
        if run_dirs:
            runs = [load_run(d, checkpoint) for d in run_dirs]
            settings = {(r.config.task_name, tuple(sorted(r.config.task.to_dict().items()))) for r in runs}
            if len(settings) > 1:
                raise click.UsageError(f"the runs {', '.join(run_dirs)} have different tasks; draw runs of one task together")
            the_task = runs[0].task()
            models = [(r.model, f"{d}: {r.config.model.label()}, step {r.step}") for r, d in zip(runs, run_dirs)]
        else:
            the_task = get_task(task, **({} if seq_len is None else {"seq_len": seq_len}))
            kinds = list(CELLS) if "all" in cells or not cells else list(dict.fromkeys(cells))
            models = []
            for cell in kinds:
                torch.manual_seed(seed)
                config = ModelConfig(cell=cell, hidden=hidden, layers=layers, bidirectional=bidirectional)
                models.append((SequenceModel(the_task.spec, config).eval(), f"{cell.upper()} at initialisation (seed {seed})"))
        batch = _sample_batch(the_task, sample)
        loss = _loss(the_task, batch, sample)
        nets = [unroll(m, batch.x, loss, sample=sample, units=_units(units), title=title) for m, title in models]
        size = write_page(out, nets, max_columns=max_columns)
        if png:
            render_png(nets, png, view=view, max_columns=max_columns)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"wrote {out} ({size:,} bytes): {', '.join(t for _, t in models)}, held-out sequence {sample}"
               + (f"; and {png}" if png else ""))
