"""``rnnlab generate``: sample text from a character-level language model."""

from __future__ import annotations

import click

from ..tasks import sample
from ..train import load_run


@click.command("generate")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--prime", type=str, default=None, help="Text to read first (default: the corpus' first character).")
@click.option("--length", type=int, default=300, show_default=True, help="Characters to generate.")
@click.option("--temperature", type=float, default=0.8, show_default=True, help="<1 sharper, >1 more random.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
def generate_command(run_dir, prime, length, temperature, seed, checkpoint):
    """Sample LENGTH characters from the char_lm run in RUN_DIR, after PRIME."""

    try:
        run = load_run(run_dir, checkpoint)
        if run.config.task_name != "char_lm":
            raise ValueError(f"run: expected a char_lm run, got a {run.config.task_name} run in {run_dir!r}")
        described = run.meta["task"]
        text = sample(run.model, described["vocab"], described["first"] if prime is None else prime,
                      length, temperature, seed)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    click.echo((described["first"] if prime is None else prime) + text)
