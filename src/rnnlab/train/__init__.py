"""Training: configs, the trainer, checkpoints and runs on disk.

    from rnnlab.train import RunConfig, train
    result = train(RunConfig().replace(**{"task.seq_len": 50, "train.steps": 300}))
    result.final["mse"], result.baselines["mse"], result.history[-1]

``RunConfig`` = task config (``rnnlab.tasks``) + ``ModelConfig`` (``rnnlab.models``) +
``TrainConfig``; ``load_config(path, overrides)`` reads TOML; ``Trainer(config, run_dir, resume=,
overwrite=)`` writes ``runs/<name>/``; ``load_run(run_dir)`` brings a trained model back.
"""

from .config import RunConfig, TrainConfig, load_config, resolve, to_toml
from .run import Run, load_run
from .schedule import learning_rate
from .trainer import Trainer, TrainResult, evaluate, train

__all__ = [
    "RunConfig", "TrainConfig", "load_config", "resolve", "to_toml", "Trainer", "TrainResult", "train", "evaluate",
    "Run", "load_run", "learning_rate",
]
