"""``rnnlab train``: train a network on a task, writing runs/<name>/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..tasks import TASKS
from ..train import Trainer, load_config
from ..train.trainer import Interrupted

# command-line options that set one config key each; None (not given) leaves the config's value
OPTION_KEYS = {
    "task": "task.name", "seq_len": "task.seq_len", "data": "task.path", "column": "task.column",
    "cell": "model.cell", "hidden": "model.hidden", "layers": "model.layers", "bidirectional": "model.bidirectional",
    "dropout": "model.dropout", "nonlinearity": "model.nonlinearity", "reset": "model.reset", "engine": "model.engine",
    "steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr", "clip": "train.clip",
    "seed": "train.seed", "device": "train.device", "patience": "train.patience", "eval_every": "train.eval_every",
    "progress": "train.progress", "name": "name",
}


def parse_sets(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE (e.g. train.clip=0.5), got {item!r}", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


def fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@click.command("train")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="A TOML config file (see configs/).")
@click.option("--task", type=click.Choice(sorted(TASKS)), help="The task (default adding).")
@click.option("--seq-len", type=int, help="The task's sequence length T (char_lm: the BPTT chunk).")
@click.option("--data", type=str, help="char_lm: a UTF-8 text file; forecast: a CSV file.")
@click.option("--column", type=str, help="forecast: the CSV column to forecast.")
@click.option("--cell", type=click.Choice(["rnn", "lstm", "gru"]), help="The recurrent cell.")
@click.option("--hidden", type=int, help="Hidden size H.")
@click.option("--layers", type=int, help="Stacked levels.")
@click.option("--bidirectional/--unidirectional", default=None, help="Read the sequence both ways.")
@click.option("--dropout", type=float, help="Dropout between stacked levels.")
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), help="rnn cell: tanh or relu.")
@click.option("--reset", type=click.Choice(["before", "after"]), help="gru cell: reset before (seed) or after (cuDNN).")
@click.option("--engine", type=str, help="The layer's engine (auto, reference, ...; see rnnlab.engine).")
@click.option("--steps", type=int, help="Optimiser steps.")
@click.option("--batch-size", type=int, help="Global batch size.")
@click.option("--lr", type=float, help="Peak learning rate.")
@click.option("--clip", type=float, help="Gradient clipping by global norm (0: off).")
@click.option("--seed", type=int, help="Seed of initialisation, data and dropout.")
@click.option("--device", type=str, help="cpu, cuda, cuda:N or auto.")
@click.option("--patience", type=int, help="Early stopping: evaluations without improvement (0: off).")
@click.option("--eval-every", type=int, help="Steps between evaluations and checkpoints.")
@click.option("--progress/--no-progress", default=None, help="Show a progress bar.")
@click.option("--name", type=str, help="Run name: the directory runs/<name>.")
@click.option("--runs-dir", type=click.Path(file_okay=False), default="runs", show_default=True, help="Where runs go.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any setting, e.g. --set train.warmup=100 (repeatable).")
@click.option("--resume", is_flag=True, help="Continue the run runs/<name> from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace an existing runs/<name>.")
def train_command(config_path, runs_dir, sets, resume, overwrite, **options):
    """Train a network on a task; the run goes to RUNS_DIR/<name>/.

    \b
    Examples:
      rnnlab train --task adding --cell lstm --seq-len 200 --hidden 128
      rnnlab train --config configs/adding_lstm.toml --set train.lr=0.001
      rnnlab train --task char_lm --data book.txt --cell gru --name book
      rnnlab train --name book --resume --steps 5000
      torchrun --nproc_per_node 2 $(which rnnlab) train --task adding   # data parallel

    Settings come from the defaults, then --config, then the options; an unknown setting or a
    value of the wrong type is an error. Outputs: config.toml, metrics.jsonl, checkpoints/.

    \b
    Exit codes: 0 done; 1 stopped by train.max_bad_steps non-finite steps in a row, or a
    checkpoint that could not be written (the previous one is intact); 2 bad arguments, config or
    data (nothing written); 130 Ctrl-C (checkpoint 'last' saved at the current step; --resume).
    """
    overrides = {OPTION_KEYS[k]: v for k, v in options.items() if v is not None}
    overrides.update(parse_sets(sets))
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite: expected at most one of them, got both")
    try:
        if resume:
            if config_path:
                raise click.UsageError("--config: a resumed run keeps its own config (runs/<name>/config.toml); drop --config")
            if "name" not in overrides:
                raise click.UsageError("--resume: expected --name of the run to continue")
            saved = Path(runs_dir) / overrides["name"] / "config.toml"
            if not saved.is_file():
                raise click.UsageError(f"--resume: expected a run at {str(saved.parent)!r}, found no config.toml there")
            config = load_config(saved, overrides)
        else:
            config = load_config(config_path, overrides)
        run_dir = Path(runs_dir) / config.run_name()
        trainer = Trainer(config, run_dir, resume=resume, overwrite=overwrite)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    except OSError as e:  # a full or read-only disk while writing the run's first files
        raise click.ClickException(f"run: could not write the run directory {str(run_dir)!r}: {e}") from None
    main_process = trainer.rank == 0
    echo = click.echo if main_process else (lambda *a, **k: None)
    try:
        echo(f"run {run_dir}  ({config.task_name}, {config.model.label()}, H={config.model.hidden}, "
             f"{trainer.parameters:,} parameters, {trainer.world} process{'es' if trainer.world > 1 else ''})")
        if resume:
            echo(f"resuming at step {trainer.step} of {config.train.steps}")
        again = f"rnnlab train --name {config.run_name()} --runs-dir {runs_dir} --resume"
        try:
            result = trainer.fit()
        except (FloatingPointError, OSError) as e:  # K bad steps in a row; a checkpoint that could not be written
            raise click.ClickException(str(e)) from None
        except Interrupted as e:
            echo(f"\ninterrupted: saved checkpoint 'last' at step {e.step} in {run_dir / 'checkpoints'}; continue with {again}")
            raise SystemExit(130)
        except KeyboardInterrupt:  # a second Ctrl-C, mid-step: nothing saved beyond the last checkpoint
            echo(f"\ninterrupted mid-step; the last complete checkpoint is in {run_dir / 'checkpoints'}; continue with {again}")
            raise SystemExit(130)
    finally:
        trainer.close()
    base = result.baselines
    echo(f"step {result.step}" + (" (stopped early)" if result.stopped_early else ""))
    echo(f"{'held-out':<12} {'final':>10} {'best':>10} {'baseline':>10}")
    for k, v in result.final.items():
        echo(f"{k:<12} {fmt(v):>10} {fmt(result.best.get(k, float('nan'))):>10} {fmt(base[k]) if k in base else '':>10}")
    echo(f"best at step {result.best.get('step')}; outputs in {run_dir}/ (config.toml, metrics.jsonl, checkpoints/)")
    if trainer.world > 1:
        # a torchrun worker ends here, every output written and closed and the process group destroyed: without the
        # interpreter's teardown, in which torch's gloo threads were seen to abort a worker that had finished
        # ("terminate called without an active exception", rarely, in CI runs of the two-process test)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
