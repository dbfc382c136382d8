"""``rnnlab forecast``: continue a series with a trained forecasting run."""

from __future__ import annotations

import click

from ..train import evaluate, load_run


@click.command("forecast")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--horizon", type=int, default=10, show_default=True, help="Values to forecast past the series' end.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
def forecast_command(run_dir, horizon, checkpoint):
    """Score the forecast run in RUN_DIR against the naive last-value forecast on its held-out
    tail, then forecast HORIZON values after the series' end (each fed back as input)."""

    try:
        run = load_run(run_dir, checkpoint)
        if run.config.task_name != "forecast":
            raise ValueError(f"run: expected a forecast run, got a {run.config.task_name} run in {run_dir!r}")
        task = run.task()
        metrics = evaluate(run.model, task, task.eval_batches(run.config.train.batch_size, 0))
        values = task.forecast(run.model, horizon)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"held-out ({task.series.numel() - task.split} targets): "
               f"MSE {metrics['mse']:.4g} (naive {metrics['naive_mse']:.4g}), MAE {metrics['mae']:.4g} (naive {metrics['naive_mae']:.4g})")
    for i, v in enumerate(values, start=1):
        click.echo(f"+{i}\t{v:.4f}")
