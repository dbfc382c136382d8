"""``rnnlab bench``: the engine benchmark (``rnnlab.bench.engine``) from the command line."""

from __future__ import annotations

from pathlib import Path

import click

from ..bench import engine as b


@click.command("bench")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch (and XLA) threads.")
@click.option("--quick", is_flag=True, help="A tiny grid and short timings: a smoke run, not a measurement.")
@click.option("--cells", default="rnn,lstm,gru-before,gru-after", show_default=True,
              help="Comma-separated cells among rnn, lstm, gru-before, gru-after.")
@click.option("--jax/--no-jax", default=True, show_default=True, help="Time JAX/Flax too (in a subprocess).")
@click.option("--onnxruntime/--no-onnxruntime", default=True, show_default=True,
              help="Time onnxruntime too (inference and streaming; needs the onnx extra).")
@click.option("--budget", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds of repeats per timing (median taken; at least 3 repeats after 2 warm-ups).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the markdown report here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the raw numbers as JSON.")
@click.option("--render", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Time nothing: write the markdown report of a JSON file an earlier run wrote with --json.")
def bench(threads, quick, cells, jax, onnxruntime, budget, out, json_out, render):
    """Time one training step (and inference) of each cell: rnnlab against torch.nn, JAX/Flax and onnxruntime."""
    if render is not None:
        try:
            report = b.from_json(render.read_text())
        except (ValueError, KeyError, TypeError) as e:
            raise click.BadParameter(f"expected a JSON report written by `rnnlab bench --json`, got {render} "
                                     f"({type(e).__name__}: {e})", param_hint="--render") from None
        _write(b.to_markdown(report), out)
        return
    names = tuple(c.strip() for c in cells.split(",") if c.strip())
    unknown = [c for c in names if c not in b.CELLS]
    if unknown or not names:
        raise click.BadParameter(f"expected cells among {', '.join(b.CELLS)}, got {cells!r}", param_hint="--cells")
    grid = b.QUICK_GRID if quick else b.GRID
    report = b.run(grid, names, threads=threads, jax=jax, budget_s=0.05 if quick else budget,
                   progress=lambda s: click.echo(s, err=True),
                   scaling_lengths=b.QUICK_SCALING_LENGTHS if quick else b.SCALING_LENGTHS,
                   variant_shape=b.QUICK_VARIANT_SHAPE if quick else b.VARIANT_SHAPE, onnxruntime=onnxruntime,
                   batch1_shapes=b.QUICK_BATCH1_SHAPES if quick else b.BATCH1_SHAPES,
                   stacked_shapes=b.QUICK_STACKED_SHAPES if quick else b.STACKED_SHAPES,
                   stream_steps=b.QUICK_STREAM_STEPS if quick else b.STREAM_STEPS)
    _write(b.to_markdown(report), out)
    if json_out:
        json_out.write_text(b.as_json(report))


def _write(text: str, out: Path | None) -> None:
    click.echo(text)
    if out:
        out.write_text(text)
