"""The trainer: AdamW, clipping, a schedule, truncated BPTT, held-out evaluation, early stopping,
checkpoints that resume exactly, and data parallelism.

One step (``Trainer._step``):

    lr      = schedule(step)                       warm-up, then cosine
    batch   = next(stream)                         seeded; sliced per process under torchrun
    state   = carried state if batch.continues     truncated BPTT: the state is detached, so
                                                   gradients stop at the chunk boundary
    loss    = task.loss(model(batch.x, state))
    g       = ∇loss                                averaged across processes by DDP
    norm    = ‖g‖₂ before clipping                 logged: the seed's exploding gradients show here
    g      *= min(1, clip / norm)                  clipping by global norm
    AdamW step

A run directory ``runs/<name>/`` holds ``config.toml`` (the resolved config), ``task.json``
(what the task needs later: vocabulary, normalisation), ``metrics.jsonl`` (one JSON record per
line: kind "train" or "eval"), ``checkpoints/{last,best}.{safetensors,json}`` and, when
tensorboard is installed, ``tensorboard/``.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models import SequenceModel
from ..tasks import Task, get_task
from . import checkpoint, distributed
from .config import RunConfig, resolve, to_toml
from .schedule import learning_rate

# settings a resumed run may change; anything else would make it a different run
RESUMABLE_CHANGES = {"train.steps", "train.progress", "train.device", "train.tensorboard", "train.patience"}


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns. ``history``: every metrics record in order (as in
    metrics.jsonl): ``{"kind": "train", "step", "loss", "grad_norm", "lr", "tokens_per_s"}`` and
    ``{"kind": "eval", "step", "loss", <task metrics>, "improved"}``."""

    config: RunConfig
    run_dir: Path | None
    history: list[dict[str, Any]]
    final: dict[str, float]  # held-out metrics of the parameters at the end
    best: dict[str, Any]  # the best held-out evaluation (lowest loss), with its "step"
    baselines: dict[str, float]  # the task's trivial solution, per metric
    step: int
    finished: bool  # reached train.steps or stopped early (False when stopped by ``until``)
    stopped_early: bool
    parameters: int
    seconds: float
    model: SequenceModel = field(repr=False)
    task: Task = field(repr=False)

    def evals(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r["kind"] == "eval"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: expected a device this machine has, got {name!r} (no CUDA available); use 'cpu' or 'auto'")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _as_tuple(state) -> tuple[torch.Tensor, ...]:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


@torch.no_grad()
def evaluate(model: SequenceModel, task: Task, batches: list) -> dict[str, float]:
    """``task``'s metrics of ``model`` over ``batches`` (state carried where a batch continues)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals: dict[str, tuple[float, int]] = {}
    state = None
    for batch in batches:
        batch = batch.to(device)
        out, state = model(batch.x, state if batch.continues else None)
        for k, (s, n) in task.sums(out, batch).items():
            s0, n0 = totals.get(k, (0.0, 0))
            totals[k] = (s0 + s, n0 + n)
    model.train(was_training)
    return task.summarize(totals)


class Trainer:
    """Trains ``SequenceModel`` on a task under a ``RunConfig``.

    ``run_dir``: where the run's files go; None keeps everything in memory. An existing run
    directory is never touched unless ``resume`` (continue from its last checkpoint) or
    ``overwrite`` (delete it first). Everything that can fail on bad input — the config, the data
    files, the sizes — is checked before the directory is touched.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
                 overwrite: bool = False, task: Task | None = None):
        if resume and overwrite:
            raise ValueError("resume, overwrite: expected at most one of them, got both")
        if resume and run_dir is None:
            raise ValueError("resume: needs a run directory to resume from, got run_dir=None")
        self.config = config
        tc = config.train
        self.task = task if task is not None else get_task(config.task_name, **config.task.to_dict())
        self.rank, self.world, self.device, self._owns_group = distributed.setup(resolve_device(tc.device))
        if tc.batch_size % self.world:
            raise ValueError(f"train.batch_size: expected a multiple of the {self.world} processes, got {tc.batch_size}")
        _seed_everything(tc.seed)
        self.model = SequenceModel(self.task.spec, config.model).to(self.device)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.net = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        # decay weight matrices and embeddings, not biases: decaying the forget-gate bias would pull
        # it from its initial 1 back to 0, undoing the initialisation that helps long memories
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        rest = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": tc.weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=tc.lr
        )
        self.stream = self.task.train_stream(tc.batch_size, tc.seed)
        self.eval_set = self.task.eval_batches(tc.batch_size, tc.eval_samples)
        self.step = 0
        self.carry: tuple[torch.Tensor, ...] | None = None
        self.best: dict[str, Any] = {}
        self.bad_evals = 0
        self.stopped_early = False
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []  # training losses since the last "train" record
        self._saved_step = -1
        self._writer = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self._open_run(resume, overwrite)

    # -- the run directory ----------------------------------------------------------------------
    @property
    def _checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def _open_run(self, resume: bool, overwrite: bool) -> None:
        d = self.run_dir
        if resume:
            if not checkpoint.exists(self._checkpoints, "last"):
                raise ValueError(f"resume: expected a run with a checkpoint in {str(d)!r}, found none; start it without --resume")
            tensors, meta = checkpoint.load(self._checkpoints, "last")
            self._check_same_run(resolve(meta["config"]))
            self._restore(tensors, meta)
            self.history = [r for r in self._read_metrics() if r["step"] <= self.step]
            if self.rank == 0:  # records after the checkpoint describe steps that will be redone
                checkpoint.atomic_write(d / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())
                checkpoint.atomic_write(d / "config.toml", to_toml(self.config).encode())
        elif self.rank == 0:
            if d.exists() and (not d.is_dir() or any(d.iterdir())):
                if not overwrite:
                    raise ValueError(
                        f"run: the directory {str(d)!r} already exists; pass --resume to continue that run, "
                        f"--overwrite to replace it, or choose another --name"
                    )
                shutil.rmtree(d) if d.is_dir() else d.unlink()
            d.mkdir(parents=True, exist_ok=True)
            checkpoint.atomic_write(d / "config.toml", to_toml(self.config).encode())
            checkpoint.atomic_write(d / "task.json", json.dumps(self.task.describe(), indent=1).encode())
        if self.rank == 0 and self.config.train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._writer = SummaryWriter(str(d / "tensorboard"))

    def _check_same_run(self, saved: RunConfig) -> None:
        def flat(c: RunConfig) -> dict[str, Any]:
            d = c.to_dict()
            return {"name": d["name"], **{f"{s}.{k}": v for s in ("task", "model", "train") for k, v in d[s].items()}}

        old, new = flat(saved), flat(self.config)
        changed = sorted(k for k in old if old[k] != new[k] and k not in RESUMABLE_CHANGES)
        if changed:
            diffs = "; ".join(f"{k}: run has {old[k]!r}, got {new[k]!r}" for k in changed)
            raise ValueError(f"resume: these settings cannot change when resuming ({diffs}); only {', '.join(sorted(RESUMABLE_CHANGES))} can")

    def _read_metrics(self) -> list[dict[str, Any]]:
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def _record(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if self.run_dir is None or self.rank != 0:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for k, v in record.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._writer.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    # -- checkpoints ------------------------------------------------------------------------------
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt = self.optimizer.state_dict()
        for i, st in opt["state"].items():
            for k, v in st.items():
                tensors[f"optim.{i}.{k}"] = v
        stream = {}
        for k, v in self.stream.state_dict().items():
            if isinstance(v, torch.Tensor):
                tensors[f"stream.{k}"] = v
            else:
                stream[k] = v
        tensors["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        np_state = np.random.get_state()
        tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
        if self.carry is not None:  # (L, B/world, H) per process -> (L, B, H): the whole batch's state
            for i, c in enumerate(self.carry):
                tensors[f"carry.{i}"] = distributed.gather(c, self.world, dim=1)
        py = random.getstate()
        meta = {
            "step": self.step,
            "config": self.config.to_dict(),
            "task": self.task.describe(),
            "param_groups": opt["param_groups"],
            "stream": stream,
            "rng_numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "rng_python": [py[0], list(py[1]), py[2]],
            "best": self.best,
            "bad_evals": self.bad_evals,
            "stopped_early": self.stopped_early,
            "carry": 0 if self.carry is None else len(self.carry),
            "losses": self._losses,
        }
        return tensors, meta

    def _save(self, tag: str, state=None) -> None:
        tensors, meta = state if state is not None else self._state()
        if self.run_dir is not None and self.rank == 0:
            checkpoint.save(self._checkpoints, tag, tensors, meta)

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, name = k.split(".", 2)
                state.setdefault(int(i), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        stream = dict(meta["stream"])
        stream.update({k[7:]: v for k, v in tensors.items() if k.startswith("stream.")})
        self.stream.load_state_dict(stream)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        name, pos, has_gauss, cached = meta["rng_numpy"]
        np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = meta["rng_python"]
        random.setstate((version, tuple(internal), gauss))
        self.carry = None
        if meta["carry"]:
            b = self.config.train.batch_size // self.world
            self.carry = tuple(
                tensors[f"carry.{i}"][:, self.rank * b:(self.rank + 1) * b].to(self.device) for i in range(meta["carry"])
            )
        self.step, self.best, self.bad_evals = meta["step"], meta["best"], meta["bad_evals"]
        self.stopped_early = meta["stopped_early"]
        self._losses = list(meta["losses"])
        self._saved_step = self.step

    # -- training -----------------------------------------------------------------------------
    def _step(self) -> tuple[float, float, float, int]:
        """One optimiser step. Returns (loss, pre-clip gradient norm, learning rate, tokens)."""
        tc = self.config.train
        lr = learning_rate(self.step, tc.lr, tc.steps, tc.warmup, tc.schedule, tc.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = next(self.stream)
        if self.world > 1:
            batch = batch.shard(self.rank, self.world)
        batch = batch.to(self.device)
        state = None
        if batch.continues and self.carry is not None:
            state = self.carry if len(self.carry) > 1 else self.carry[0]
        self.net.train()
        out, state = self.net(batch.x, state)
        loss = self.task.loss(out, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip if tc.clip > 0 else math.inf)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the training loss is {value} at step {self.step + 1} (gradient norm {float(norm):.3g}); "
                f"lower train.lr or clip harder with train.clip"
            )
        self.optimizer.step()
        # truncated BPTT: keep the state's value for the next chunk, cut its history
        self.carry = tuple(s.detach() for s in _as_tuple(state))
        self.step += 1
        return value, float(norm), lr, batch.x.shape[0] * batch.x.shape[1] * self.world

    def evaluate(self) -> dict[str, float]:
        """The task's metrics on the held-out set, for the current parameters."""
        return evaluate(self.model, self.task, self.eval_set)

    def _evaluate_and_checkpoint(self) -> dict[str, float]:
        metrics = self.evaluate()
        improved = not self.best or metrics["loss"] < self.best["loss"]
        if improved:
            self.best, self.bad_evals = {"step": self.step, **metrics}, 0
        else:
            self.bad_evals += 1
            patience = self.config.train.patience
            self.stopped_early = bool(patience) and self.bad_evals >= patience
        self._record({"kind": "eval", "step": self.step, **metrics, "improved": improved})
        state = self._state()
        if improved:
            self._save("best", state)
        self._save("last", state)
        self._saved_step = self.step
        return metrics

    def fit(self, until: int | None = None) -> TrainResult:
        """Train up to ``train.steps`` (or to step ``until``, to stop early and resume later)."""
        tc = self.config.train
        stop = tc.steps if until is None else min(until, tc.steps)
        start = time.perf_counter()
        bar = tqdm(total=tc.steps, initial=self.step, desc=self.config.run_name(), unit="step",
                   disable=not tc.progress or self.rank != 0, dynamic_ncols=True, leave=True)
        postfix: dict[str, str] = {}
        tokens, t_log = 0, time.perf_counter()
        last_eval: dict[str, float] | None = None
        while self.step < stop and not self.stopped_early:
            loss, norm, lr, n = self._step()
            self._losses.append(loss)
            tokens += n
            bar.update(1)
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                now = time.perf_counter()
                mean_loss = distributed.mean(sum(self._losses) / len(self._losses), self.world, self.device)
                rate = tokens / max(now - t_log, 1e-9)
                self._record({"kind": "train", "step": self.step, "loss": mean_loss, "grad_norm": norm, "lr": lr,
                              "tokens_per_s": rate})
                postfix.update(loss=f"{mean_loss:.4g}", grad_norm=f"{norm:.3g}", tok_s=f"{rate:,.0f}")
                bar.set_postfix(postfix)
                self._losses, tokens, t_log = [], 0, now
            last_eval = None
            if self.step % tc.eval_every == 0 or self.step == tc.steps:
                last_eval = self._evaluate_and_checkpoint()
                postfix["val_loss"] = f"{last_eval['loss']:.4g}"
                bar.set_postfix(postfix)
        bar.close()
        if self._saved_step != self.step:
            self._save("last")
            self._saved_step = self.step
        final = last_eval if last_eval is not None else self.evaluate()
        if self._writer is not None:
            self._writer.flush()
        return TrainResult(
            config=self.config, run_dir=self.run_dir, history=list(self.history), final=final, best=dict(self.best),
            baselines=self.task.baselines(), step=self.step, finished=self.step >= tc.steps or self.stopped_early,
            stopped_early=self.stopped_early, parameters=self.parameters, seconds=time.perf_counter() - start,
            model=self.model, task=self.task,
        )

    def close(self) -> None:
        """Release the TensorBoard writer and a process group this trainer created."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owns_group = False


def train(config: RunConfig, run_dir: str | Path | None = None, **kwargs: Any) -> TrainResult:
    """Build a ``Trainer`` and ``fit`` it: ``train(RunConfig(...)).final["mse"]``."""
    trainer = Trainer(config, run_dir, **kwargs)
    try:
        return trainer.fit()
    finally:
        trainer.close()
