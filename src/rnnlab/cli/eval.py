"""``rnnlab eval``: a trained run's held-out metrics beside the task's baseline."""

from __future__ import annotations

import json

import click

from ..train import evaluate, load_run


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="best: lowest held-out loss; last: where training stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def eval_command(run_dir, checkpoint, as_json):
    """Evaluate the run in RUN_DIR (e.g. runs/adding-lstm-s0) on its task's held-out set."""

    try:
        run = load_run(run_dir, checkpoint)
        task = run.task()
        tc = run.config.train
        metrics = evaluate(run.model, task, task.eval_batches(tc.batch_size, tc.eval_samples))
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    base = task.baselines()
    if as_json:
        click.echo(json.dumps({"step": run.step, "checkpoint": checkpoint, "metrics": metrics, "baselines": base}))
        return
    click.echo(f"{run_dir} ({run.config.task_name}, {run.config.model.label()}), checkpoint {checkpoint} at step {run.step}")
    click.echo(f"{'metric':<12} {'held-out':>10} {'baseline':>10}")
    for k, v in metrics.items():
        click.echo(f"{k:<12} {v:>10.4g} " + (f"{base[k]:>10.4g}" if k in base else ""))
