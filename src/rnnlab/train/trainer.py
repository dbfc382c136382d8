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
    AdamW step                                     skipped when the loss or norm is NaN/Inf (below)

Faults. A step whose loss or gradient norm is not finite changes nothing: the update is skipped,
the carried state is dropped, a ``{"kind": "skipped"}`` record is logged, and after
``train.max_bad_steps`` such steps in a row the run stops with a ``FloatingPointError``. Ctrl-C
(SIGINT) is taken at the next step boundary: the trainer saves ``last`` at that step and raises
``Interrupted`` (a KeyboardInterrupt); a second Ctrl-C interrupts at once. Checkpoints are
written atomically (``checkpoint.py``), so a process killed at any moment — mid-save included —
resumes from its last complete checkpoint, losing at most the steps since it
(``train.eval_every``). Before the run directory is touched, a configuration whose training step
cannot fit in memory is refused (``layers/memory.py``), naming task.seq_len and train.batch_size.

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
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..layers import memory
from ..models import SequenceModel
from ..tasks import Task, get_task
from . import checkpoint, distributed
from .config import RunConfig, resolve, to_toml
from .schedule import learning_rate

# settings a resumed run may change; anything else would make it a different run
RESUMABLE_CHANGES = {"train.steps", "train.progress", "train.device", "train.tensorboard", "train.patience",
                     "train.max_bad_steps"}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``fit`` at a step boundary, after saving checkpoint ``last`` at ``step``
    (``saved`` is False when the run keeps no files)."""

    def __init__(self, step: int, saved: bool):
        super().__init__(f"interrupted at step {step}")
        self.step, self.saved = step, saved


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns. ``history``: every metrics record in order (as in
    metrics.jsonl): ``{"kind": "train", "step", "loss", "grad_norm", "lr", "tokens_per_s"}`` and
    ``{"kind": "eval", "step", "loss", <task metrics>, "improved"}`` and, for a step whose update was
    skipped, ``{"kind": "skipped", "step", "loss", "grad_norm", "bad_steps"}`` (values as strings: "nan", "inf")."""

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
        out, state = model(batch.x, state if batch.continues else None, **batch.model_kwargs())
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
        self._check_memory()
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
        self.bad_steps = 0  # consecutive steps skipped for a non-finite loss or gradient
        self.stopped_early = False
        self.history: list[dict[str, Any]] = []
        self._losses: list[float] = []  # training losses since the last "train" record
        self._saved_step = -1
        self._writer = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self._open_run(resume, overwrite)

    def _check_memory(self) -> None:
        """Refuse, before any file is written, a training step whose activations cannot fit (the
        layer's memory guard would refuse it at the first step, after the run directory exists)."""
        tc = self.config.train
        x = next(self.task.train_stream(tc.batch_size, tc.seed)).x  # a fresh stream: self.stream is untouched
        B, T = x.shape[0] // self.world, x.shape[1]
        element = torch.empty((), dtype=torch.get_default_dtype()).element_size()
        per_step = memory.bytes_per_step(self.model.rnn, B, element, training=True)
        have = memory.available_bytes(self.device)
        if have is None or per_step * T <= have:
            return
        fit = max(1, int(0.5 * have // per_step))
        gib = 1024**3
        raise ValueError(
            f"task.seq_len, train.batch_size: a training step over T = {T} steps of a batch of {B} needs about "
            f"{per_step * T / gib:.2f} GiB of activations (H={self.config.model.hidden}, layers={self.config.model.layers}, "
            f"engine {self.config.model.engine}) but only {have / gib:.2f} GiB is available on {self.device}; "
            f"lower task.seq_len to at most {fit} (for char_lm it is the BPTT chunk; the state carries across chunks) "
            f"or lower train.batch_size"
        )

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
            try:
                self._check_same_run(resolve(meta["config"]))
                self._restore(tensors, meta)
            except KeyError as e:
                raise ValueError(f"resume: the last checkpoint in {str(d)!r} lacks {e}; it was not written by rnnlab's trainer") from None
            if self.rank == 0:  # what a killed writer left half-written
                checkpoint.remove_temporaries(self._checkpoints)
                checkpoint.remove_temporaries(d)
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
        """metrics.jsonl's records. A last line cut short (the process was killed while appending it)
        is dropped; any other line that is not a JSON record is an error."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return []
        text = path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # no newline after it: the append was cut short
                    continue
                raise ValueError(f"resume: {str(path)!r} line {i + 1} is not a JSON record: {line[:80]!r}") from None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError(f"resume: {str(path)!r} line {i + 1}: expected a record with a step, got {line[:80]!r}")
            records.append(record)
        return records

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
            "bad_steps": self.bad_steps,
            "stopped_early": self.stopped_early,
            "carry": 0 if self.carry is None else len(self.carry),
            "losses": self._losses,
        }
        return tensors, meta

    def _save(self, tag: str, state=None) -> None:
        tensors, meta = state if state is not None else self._state()
        if self.run_dir is not None and self.rank == 0:
            try:
                checkpoint.save(self._checkpoints, tag, tensors, meta)
            except OSError as e:
                raise OSError(e.errno, (
                    f"checkpoint: could not save step {self.step} as {tag!r} in {str(self._checkpoints)!r} "
                    f"({e.strerror or e}); the files already there are intact (the last complete save is kept); "
                    f"free space and continue with --resume")) from e

    def _restore(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        checkpoint.check_tensors(self.model.state_dict(), model, f"model of this config ({self.config.model.label()}, "
                                 f"H={self.config.model.hidden}, layers={self.config.model.layers})")
        self.model.load_state_dict(model)
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
        self.bad_steps = meta.get("bad_steps", 0)
        self.stopped_early = meta["stopped_early"]
        self._losses = list(meta["losses"])
        self._saved_step = self.step

    # -- training -----------------------------------------------------------------------------
    def _step(self) -> tuple[float, float, float, int, bool]:
        """One optimiser step. Returns (loss, pre-clip gradient norm, learning rate, tokens, skipped)."""
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
        out, state = self.net(batch.x, state, **batch.model_kwargs())
        loss = self.task.loss(out, batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip if tc.clip > 0 else math.inf)
        value, norm = float(loss.detach()), float(norm)
        tokens = batch.x.shape[0] * batch.x.shape[1] * self.world
        # every process must agree to skip (DDP averaged the gradients, but each has its own loss)
        (bad,) = distributed.any_of([not (math.isfinite(value) and math.isfinite(norm))], self.world, self.device)
        if bad:
            self._skip(value, norm)
            return value, norm, lr, tokens, True
        self.bad_steps = 0
        self.optimizer.step()
        # truncated BPTT: keep the state's value for the next chunk, cut its history
        self.carry = tuple(s.detach() for s in _as_tuple(state))
        self.step += 1
        return value, norm, lr, tokens, False

    def _skip(self, loss: float, norm: float) -> None:
        """A step with a non-finite loss or gradient: no update, the carried state dropped (it may be
        what went wrong), the step logged; after train.max_bad_steps in a row the run stops."""
        self.optimizer.zero_grad(set_to_none=True)
        self.carry = None
        self.bad_steps += 1
        self.step += 1
        limit = self.config.train.max_bad_steps
        self._record({"kind": "skipped", "step": self.step, "loss": repr(loss) if not math.isfinite(loss) else loss,
                      "grad_norm": repr(norm) if not math.isfinite(norm) else norm, "bad_steps": self.bad_steps})
        if self.rank == 0:
            tqdm.write(f"step {self.step}: loss {loss:.4g}, gradient norm {norm:.4g}; update skipped "
                       f"({self.bad_steps} in a row, the run stops at train.max_bad_steps = {limit})", file=sys.stderr)
        if self.bad_steps >= limit:
            raise FloatingPointError(
                f"train.max_bad_steps: {self.bad_steps} steps in a row (to step {self.step}) had a non-finite loss or "
                f"gradient (last: loss {loss}, gradient norm {norm}); stopped. The last checkpoint is intact. Lower "
                f"train.lr, clip harder with train.clip, or look for NaN/Inf in the data"
            )

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

    def fit(self, until: int | None = None, *, on_step: Callable[[dict[str, Any]], None] | None = None,
            stop_when: Callable[[dict[str, float]], bool] | None = None) -> TrainResult:
        """Train up to ``train.steps`` (or to step ``until``, to stop early and resume later).

        ``on_step``: called after every step with ``{"step", "loss", "grad_norm" (before clipping),
        "lr", "seconds" (the step's wall time), "skipped"}``. ``stop_when``: called with the held-out
        metrics after every evaluation; True ends training there (e.g. a task's solve threshold met);
        the result then has ``finished`` False unless that was the last step.

        Ctrl-C ends the current step, saves checkpoint ``last`` and raises ``Interrupted``."""
        tc = self.config.train
        stop = tc.steps if until is None else min(until, tc.steps)
        start = time.perf_counter()
        bar = tqdm(total=tc.steps, initial=self.step, desc=self.config.run_name(), unit="step",
                   disable=not tc.progress or self.rank != 0, dynamic_ncols=True, leave=True)
        postfix: dict[str, str] = {}
        tokens, t_log = 0, time.perf_counter()
        last_eval: dict[str, float] | None = None
        interrupts: list[int] = []
        restore = self._catch_sigint(interrupts)
        try:
            while self.step < stop and not self.stopped_early:
                (interrupted,) = distributed.any_of([bool(interrupts)], self.world, self.device)
                if interrupted:  # at a step boundary: the state is consistent, save it
                    if self._saved_step != self.step:
                        self._save("last")
                        self._saved_step = self.step
                    raise Interrupted(self.step, self.run_dir is not None)
                t_step = time.perf_counter()
                loss, norm, lr, n, skipped = self._step()
                if on_step is not None:
                    on_step({"step": self.step, "loss": loss, "grad_norm": norm, "lr": lr,
                             "seconds": time.perf_counter() - t_step, "skipped": skipped})
                if not skipped:
                    self._losses.append(loss)
                tokens += n
                bar.update(1)
                if (self.step % tc.log_every == 0 or self.step == tc.steps) and self._losses:
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
                    if stop_when is not None and stop_when(last_eval):
                        break
        finally:
            restore()
            bar.close()
        if self._saved_step != self.step:
            self._save("last")
            self._saved_step = self.step
        final = last_eval if last_eval is not None else self.evaluate()
        if self._writer is not None:
            self._writer.flush()
        if self.world > 1:
            # every process past its last collective and rank 0's checkpoint before any of them tears the group down
            # (close): a rank that destroyed its gloo group while the other was still writing was seen to abort at
            # exit ("terminate called without an active exception", twice in many CI runs of the distributed test)
            torch.distributed.barrier()
        return TrainResult(
            config=self.config, run_dir=self.run_dir, history=list(self.history), final=final, best=dict(self.best),
            baselines=self.task.baselines(), step=self.step, finished=self.step >= tc.steps or self.stopped_early,
            stopped_early=self.stopped_early, parameters=self.parameters, seconds=time.perf_counter() - start,
            model=self.model, task=self.task,
        )

    @staticmethod
    def _catch_sigint(interrupts: list[int]):
        """Make Ctrl-C append to ``interrupts``, which ``fit`` reads between steps; a second Ctrl-C
        interrupts at once. Returns the function that puts the previous handler back. Outside the
        main thread (where handlers cannot be set) Ctrl-C keeps its usual effect."""
        try:
            previous = signal.getsignal(signal.SIGINT)
        except ValueError:
            return lambda: None
        previous = previous if previous is not None else signal.default_int_handler

        def handler(signum, frame):
            interrupts.append(signum)
            signal.signal(signal.SIGINT, previous)

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            return lambda: None

        def restore():
            if signal.getsignal(signal.SIGINT) is handler:
                signal.signal(signal.SIGINT, previous)

        return restore

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
