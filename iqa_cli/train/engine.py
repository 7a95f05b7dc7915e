"""The training loop every recipe shares: one split, from start (or a resumable state) to the kept model.

Per epoch: the recipe sets what trains; the training part is shuffled by (seed, epoch) and sharded
over DDP ranks; each batch gets a seed `seed * 10**9 + batches_per_epoch * epoch + batch` (for seed 0
exactly the authors' `len(loader) * epoch + batch`) that drives its augmentation (and, for recipes
that re-seed per batch, dropout); the forward pass runs under autocast; the loss is checked to be
finite on all ranks before the step. Then the selection part (validation, or test with
`--select-on test`) and the test part are evaluated, the best model is kept, the schedule decides
(learning rate, reload best, stop), a JSONL line per evaluated part is written, and a resumable
state is saved. SIGTERM/SIGUSR1 and a first Ctrl-C finish the current step, save the resumable state
and stop.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, cast

import numpy as np
import torch
from torch import nn

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import EXIT_DIVERGED, CheckpointError, ConfigError, IQAError, Stopped
from iqa_cli.jsonio import dumps
from iqa_cli.models.checkpoint import read_state_dict, save_checkpoint
from iqa_cli.progress import NullProgress, Progress, end_overall, overall
from iqa_cli.stop import clear_stop, stopped_by
from iqa_cli.train.config import EngineConfig, to_plain, write_json
from iqa_cli.train.data import LAST_EPOCH, DatasetLike, SplitParts
from iqa_cli.train.distributed import RUN_FOLDER_ADVICE, DistContext, shard
from iqa_cli.train.precision import amp_dtype, autocast, low_precision_ties
from iqa_cli.train.recipes.base import P, Recipe, TrainBatch
from iqa_cli.train.runs import (
    BEST,
    CURVES,
    LAST,
    LOG,
    PREDICTIONS,
    RESULT,
    STEP_LIMIT,
    append_log,
    drop_logged_epochs,
    read_log,
)
from iqa_cli.train.scoring import TestTimeProtocol, predict_scores
from iqa_cli.train.state import capture_rng, check_resumed_identity, load_state, restore_rng, save_state
from iqa_cli.train.views import ViewStore, preload_budget
from iqa_cli.train.watch import WATCH_PREFIX, summarize_log

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from iqa_cli.train.watch import WatchedDataset

SEED_STRIDE = 10**9
READBACK_STEPS = 50  # GPU: training statistics are read on the host every this many steps (and at epoch end)


class TrainingDiverged(IQAError):
    """The loss became NaN or infinite."""

    exit_code = EXIT_DIVERGED


class TrainingInterrupted(Stopped):
    """A stop was requested (signal or time limit); a resumable state was saved."""

    def __init__(
        self,
        reason: str,
        epoch: int,
        step: int,
        checkpoint: Path | None,
        exit_code: int,
        *,
        run: Path | None = None,
        before_split: str | None = None,
        splits_done: int = 0,
    ) -> None:
        self.reason, self.epoch, self.step, self.checkpoint, self.exit_code = reason, epoch, step, checkpoint, exit_code
        self.run = run  # the run folder, where no checkpoint names it (a stop between splits)
        if before_split is not None:
            done = f" (the {splits_done} split(s) before it are done)" if splits_done else ""
            super().__init__(f"stopped by {reason} before split {before_split} began{done}")
            return
        where = f"; resumable state saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"stopped by {reason} at epoch {epoch} step {step}{where}")


def stop_exit_code(reason: str) -> int:
    """The exit code of a stop: 124 for the time limit, else 128 + the signal's number."""
    return 124 if reason == "time limit" else 128 + int(getattr(signal, reason, signal.SIGTERM))


# `--time-limit` counts from the start of the outermost training call of a command (every split of a run,
# every run of a sweep, every AL-IQA round), not from each split's start: a job sized by it stops in time.
_TIME_LIMIT_START: list[float] = []


@contextlib.contextmanager
def time_limit_clock() -> Iterator[None]:
    """Start the `--time-limit` clock unless an outer call has started it."""
    outermost = not _TIME_LIMIT_START
    if outermost:
        _TIME_LIMIT_START.append(time.monotonic())
    try:
        yield
    finally:
        if outermost:
            _TIME_LIMIT_START.clear()


def over_time_limit(minutes: float) -> bool:
    """Whether `minutes` (0: no limit) have passed since the `--time-limit` clock started (never, where no
    training call started it)."""
    return bool(minutes and _TIME_LIMIT_START) and time.monotonic() - _TIME_LIMIT_START[0] > minutes * 60


class StopRequest:
    """Turns SIGTERM / SIGUSR1 (what SLURM sends before preemption) and a first Ctrl-C into a flag the loop
    polls: the step finishes, a resumable state is saved. A second Ctrl-C stops at once (the state of
    the last finished epoch stays), for a step that takes too long to wait for."""

    SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def after_step(self, step: int) -> bool:
        """Polled by the training loop after each optimiser step (`step`: the split's step count)."""
        return self.requested

    @classmethod
    def for_this_process(cls) -> StopRequest:
        """The stop request a run uses: this one, or, when IQA_DEBUG_SIGNAL_AT_STEP=N[:SIGNAL] is set (tests
        of the signal path end to end), one that sends this process SIGTERM (or SIGNAL) after step N."""
        step, _, name = (os.environ.get(DEBUG_SIGNAL_ENV, "") or "0").partition(":")
        number = int(step or 0)
        if name and (not name.startswith("SIG") or not hasattr(signal, name)):
            raise ConfigError(f"{DEBUG_SIGNAL_ENV}: unknown signal {name!r} (e.g. 7:SIGINT)")
        return SignalAfterStep(number, name or "SIGTERM") if number > 0 else cls()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.signal_name is not None:
            raise KeyboardInterrupt()  # asked twice: no waiting for the step
        self.signal_name = name
        if name == "SIGINT":
            log.warning("Ctrl-C: stopping after this step with a resumable state (Ctrl-C again to stop now)")

    def __enter__(self) -> StopRequest:
        by = stopped_by()
        if by is not None:
            # A signal before training began whose exception was lost (see iqa_cli.stop): the loop
            # honours it at its first step, saving a resumable state, which the request must not block.
            clear_stop()
            self.signal_name = by
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    if signal.getsignal(number) is signal.SIG_IGN and name == "SIGINT":
                        continue  # a job started with Ctrl-C ignored (in the background) keeps it ignored
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()


DEBUG_SIGNAL_ENV = "IQA_DEBUG_SIGNAL_AT_STEP"


class SignalAfterStep(StopRequest):
    """Sends this process a real SIGTERM (or `signal_name`) after step N, so a test runs the whole signal
    path."""

    def __init__(self, step: int, signal_name: str = "SIGTERM") -> None:
        super().__init__()
        self.step, self.signal_name_to_send = step, signal_name

    def after_step(self, step: int) -> bool:
        if step == self.step:
            os.kill(os.getpid(), getattr(signal, self.signal_name_to_send))
        return self.requested


# ----------------------------------------------------------------------------------------- helpers


def use_channels_last(cfg: EngineConfig, recipe: Recipe[Any]) -> bool:
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and recipe.channels_last_helps)


def batch_seed(seed: int, epoch: int, batch: int, batches_per_epoch: int) -> int:
    return seed * SEED_STRIDE + batches_per_epoch * epoch + batch


def epoch_order(train: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The epoch's shuffled training order; identical on every rank and after resumption."""
    return np.random.default_rng([seed, epoch]).permutation(train)


def weights_digest(model: nn.Module) -> str:
    """Short fingerprint of the weights (ranks compare it to prove they stayed in sync)."""
    digest = hashlib.sha1()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def shard_report(shares: list[list[int]]) -> dict[str, Any]:
    """How the ranks' shares of one epoch relate: sizes, union, and indices seen by more than one rank
    (only DistributedSampler-style padding may repeat)."""
    seen: dict[int, int] = {}
    for share in shares:
        for index in set(share):
            seen[index] = seen.get(index, 0) + 1
    digests = [hashlib.sha1(np.asarray(sorted(s), dtype=np.int64).tobytes()).hexdigest()[:12] for s in shares]
    return {
        "per_rank": [len(s) for s in shares],
        "union": len(seen),
        "shared": sum(1 for c in seen.values() if c > 1),
        "digests": digests,
    }


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class BatchDynamic(nn.Module):
    """Calls a compiled module with the batch dimension of every tensor argument marked dynamic, so the
    first graph already serves any batch size: an epoch's smaller last batch (and, under DDP, each
    rank's share) does not recompile."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] > 1:
                torch._dynamo.mark_dynamic(value, 0)
        return self.compiled(*args, **kwargs)


# ------------------------------------------------------------------------------------------- fit


@dataclass
class Position:
    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    loss_count: float = 0.0
    images: float = 0.0
    seconds: float = 0.0
    best_metric: float = -math.inf
    best_epoch: int = -1
    evaluations: int = 0


@dataclass
class FitResult:
    split: str
    best_epoch: int
    best_metric: float
    epochs: int
    steps: int
    stopped_because: str
    test: dict[str, Any]
    val: dict[str, Any] | None
    weights: Path | None
    ranks: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] | None = None  # per watched dataset: last-epoch and max-over-epochs metrics


@dataclass
class FitContext(Generic[P]):
    """Everything `fit` needs besides the split."""

    recipe: Recipe[P]
    params: P
    cfg: EngineConfig
    dataset: DatasetLike
    labels: np.ndarray  # training label scale, one per dataset image
    device: torch.device
    meta: dict[str, Any]  # written into checkpoints (method, dataset, labels, params, ...)
    tiny: bool = False
    dist: DistContext = field(default_factory=DistContext)
    progress: Progress = field(default_factory=NullProgress)
    stop: StopRequest = field(default_factory=StopRequest)
    watched: list[WatchedDataset] = field(default_factory=list)  # `--watch`: scored at every evaluation


Evaluation = Callable[["Trainer", np.ndarray], tuple[dict[str, Any], np.ndarray]]


class Trainer:
    """Trains one split into `out_dir` (only rank 0 writes).

    Hooks for methods whose steps differ from the plain protocol:
    - `evaluation(trainer, indices) -> (metrics, predictions)` replaces the default evaluation of a part
      (AL-IQA scores all three prompt heads; it may call `trainer.predict`);
    - `evaluate_before_training`: on a fresh start, evaluate the start weights first and make them the
      kept model, so the first evaluation must beat them (AL-IQA's steps do this, as the authors'
      scripts compare with the evaluation they run before training)."""

    def __init__(
        self,
        ctx: FitContext[Any],
        parts: SplitParts,
        out_dir: Path,
        *,
        evaluation: Evaluation | None = None,
        evaluate_before_training: bool = False,
    ) -> None:
        self.evaluation, self.evaluate_before_training = evaluation, evaluate_before_training
        self.ctx, self.parts, self.out_dir = ctx, parts, out_dir
        self.recipe, self.params, self.cfg, self.dist = ctx.recipe, ctx.params, ctx.cfg, ctx.dist
        self.device = ctx.device
        self.dtype = amp_dtype(self.cfg.amp, self.device)
        self.eval_dtype = amp_dtype(self.cfg.eval_amp, self.device, evaluation=True)
        self.ties_said = False  # the half-precision ties warning, given once per split
        self.drift_said = False  # the DDP weight-drift warning, given once per split
        self.channels_last = use_channels_last(self.cfg, self.recipe)
        self.per_rank_batch = max(1, -(-self.params.batch_size // self.dist.world))
        self.pool = np.asarray(self.recipe.train_pool(parts, self.params), dtype=np.int64)
        shard_size = -(-self.pool.size // self.dist.world)
        self.batches_per_epoch = -(-shard_size // self.per_rank_batch)
        self.labels = torch.as_tensor(np.asarray(ctx.labels, dtype=np.float32))
        targets = self.recipe.train_targets(ctx.dataset, ctx.labels, self.params)  # what batches train on
        self.targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.pos = Position()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.wrapped: nn.Module | None = None
        self.wrapped_for: tuple[bool, ...] | None = None
        self.rank_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ set-up

    @property
    def main(self) -> bool:
        return self.dist.is_main

    def log(self, message: str) -> None:
        if self.main:
            log.info(message)

    def _setup(self, resume: bool) -> None:
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed % 2**32)
        last = self.out_dir / LAST
        state = load_state(last) if resume and last.is_file() else None
        if state is None and self.main:  # a fresh start: nothing stale from an earlier attempt
            for stale in (LOG, BEST, LAST, RESULT, PREDICTIONS):
                (self.out_dir / stale).unlink(missing_ok=True)
        model = self.recipe.build_model(self.params, tiny=self.ctx.tiny, pretrained=state is None)
        if state is None:
            self.recipe.initialize(model, self.params, split=self.parts.name, meta=self.ctx.meta)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.optimizer = self.recipe.make_optimizer(model, self.params)
        self.schedule = self.recipe.make_schedule(self.params)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if state is not None:
            check_resumed_identity(state.get("iqa_meta") or {}, self.ctx.meta, last)
            try:
                model.load_state_dict(state["state_dict"])
            except (RuntimeError, KeyError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(f"does not fit this run's network ({first})", path=last) from None
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self.pos = Position(**state["position"])
            best = self.out_dir / BEST
            if best.is_file():
                self.best_state, best_meta = read_state_dict(best)
                self._adopt_later_best(best_meta)
            restore_rng(state["rng"])
            self.log(f"split {self.parts.name}: resumed at epoch {self.pos.epoch} step {self.pos.step} from {last}")
            if self.main and drop_logged_epochs(self.out_dir / LOG, self.pos.epoch):  # logged, then killed
                log.info(f"split {self.parts.name}: epoch {self.pos.epoch} was logged but not saved; it trains again")
        if resume:  # a node that reads another copy of the run folder would train on from elsewhere
            self.dist.check_same_data(
                "--resume",
                last,
                {
                    "resumed_at": None if state is None else [self.pos.epoch, self.pos.step],
                    "best_saved": None if state is None else self.best_state is not None,
                },
                advice=RUN_FOLDER_ADVICE,
            )
        needed = np.concatenate([self.pool, self.parts.train, self.parts.val, self.parts.test])
        self.store = ViewStore(
            self.ctx.dataset,
            self.recipe,
            self.params,
            self.device,
            needed,
            budget_bytes=preload_budget(self.cfg.preload_gb),
            progress=self.ctx.progress if self.main else NullProgress(),
            resident=self.cfg.gpu_cache,
            dist=self.dist,
        )
        if self.dist.active:
            self.rank_info["views"] = self.dist.gather(self.store.source)
        self.log(f"split {self.parts.name}: {self.store.describe()}")

    def _train_module(self) -> nn.Module:
        """The module to call for training: DDP and/or torch.compile wrappers, rebuilt when the set of
        trainable parameters changes (DDP registers gradients for the trainable set at construction)."""
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if self.wrapped is not None and trainable == self.wrapped_for:
            return self.wrapped
        module: nn.Module = self.model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(module, device_ids=ids)
        if self.cfg.compile:
            module = BatchDynamic(cast(nn.Module, torch.compile(module)))
        self.wrapped, self.wrapped_for = module, trainable
        return module

    # ------------------------------------------------------------------ saving

    def _checkpoint_meta(self, epoch: int) -> dict[str, Any]:
        return {
            **self.ctx.meta,
            "model": self.recipe.model_name(self.params),
            "split": self.parts.name,
            "epoch": epoch,
            "selected_on": self.parts.select_on,
            "selection_metric": self.params.selection_metric,
            "metric_value": self.pos.best_metric,
        }

    def _save_last(self) -> Path:
        path = self.out_dir / LAST
        if self.main:
            save_state(
                path,
                {
                    "state_dict": cpu_state(self.model),
                    "iqa_meta": {
                        **{k: v if isinstance(v, str) else dumps(v) for k, v in self.ctx.meta.items()},
                        "selected_on": LAST_EPOCH,  # scored by `iqa eval`, it is said to be no kept model
                    },
                    "optimizer": self.optimizer.state_dict(),
                    "schedule": self.schedule.state_dict(),
                    "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                    "position": to_plain(self.pos),
                    "rng": capture_rng(),
                },
            )
        self.dist.barrier()
        return path

    def _write_log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        append_log(self.out_dir / LOG, dumps(record))  # strict JSON lines: an unmeasured metric is null

    # ------------------------------------------------------------------ loop

    def _check_stop(self, stop_flag: float, time_flag: float) -> str | None:
        """Why the run stops now, if it does. Under DDP both flags are all-reduced: every rank's clock
        crosses the time limit at another step, and a rank that stopped alone would leave the others
        waiting in the next step's collectives."""
        if stop_flag > 0:
            return self.ctx.stop.signal_name or "a signal on another rank"
        over_time = time_flag > 0 if self.dist.active else over_time_limit(self.cfg.time_limit)
        if over_time:
            return "time limit"
        return None

    def _write_curves(self) -> None:
        """`curves.png` beside the log: loss and validation/test metrics over epochs (at the end and on
        stop). A figure that cannot be drawn is a warning, never a failed run."""
        if not self.main or not (self.out_dir / LOG).is_file():
            return
        try:
            from iqa_cli.plots import training_curves

            records = read_log(self.out_dir / LOG)
            metrics = [m for m in self.recipe.report_metrics[:2] if any(m in r for r in records)]
            title = f"{self.recipe.name}, split {self.parts.name}"
            training_curves(self.out_dir / CURVES, records, metrics=metrics, title=title)
        except Exception as exc:  # noqa: BLE001 - a plot must not fail training
            log.warning(f"could not draw {CURVES} ({type(exc).__name__}: {exc})")

    def _interrupt(self, reason: str) -> TrainingInterrupted:
        path = self._save_last()
        self._write_log({"epoch": self.pos.epoch, "split": self.parts.name, "event": f"stopped by {reason}"})
        self._write_curves()
        return TrainingInterrupted(reason, self.pos.epoch, self.pos.step, path, stop_exit_code(reason))

    def _train_epoch(self, epoch: int) -> bool:
        """Runs the rest of this epoch; True when the step limit was reached."""
        self.recipe.configure_epoch(self.model, epoch, self.params)
        module = self._train_module()
        lr = self.schedule.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        order = shard(epoch_order(self.pool, self.cfg.seed, epoch), self.dist.rank, self.dist.world)
        if epoch == self.pos.epoch == 0 and self.dist.active:
            self.rank_info["first_epoch"] = shard_report(self.dist.gather(sorted(int(i) for i in order)))
        batches = [order[i : i + self.per_rank_batch] for i in range(0, order.size, self.per_rank_batch)]
        sizes = [b.size for b in batches]
        for b, indices in enumerate(batches):
            seed = batch_seed(self.cfg.seed, epoch, b, self.batches_per_epoch)
            # Under DDP `b * world + rank` numbers the batch uniquely across ranks (distinct extra rows).
            extra = self.recipe.batch_extra(
                indices,
                parts=self.parts,
                epoch=epoch,
                batch=b * self.dist.world + self.dist.rank,
                seed=seed,
                params=self.params,
            )
            if extra is not None and len(extra):
                batches[b] = np.concatenate([indices, np.asarray(extra, dtype=np.int64)])
        module.train()
        max_norm = self.recipe.max_grad_norm(self.params)
        if self.main:
            self.ctx.progress.start(f"split {self.parts.name} epoch {epoch}", len(batches))
            self.ctx.progress.advance(self.pos.batch)
        tick = time.monotonic()
        # Each step adds (loss sum, images, stop flag) to one device tensor; the host reads it only every
        # `readback` steps and at the end of the epoch, so the loop never waits for the GPU to finish a
        # step. A NaN loss is therefore caught up to `readback` steps late: the run stops there, and
        # last.pt (from the end of the previous epoch) is the good state. Under DDP a stop signal is
        # agreed on at those readbacks too.
        one = torch.ones((), device=self.device)
        flags = {False: torch.zeros((), device=self.device), True: torch.ones((), device=self.device)}
        readback = self.readback_steps()
        pending = torch.zeros(4, device=self.device)
        unread, stop_flag, time_flag = 0, 0.0, 0.0
        seeds = [batch_seed(self.cfg.seed, epoch, b, self.batches_per_epoch) for b in range(len(batches))]
        with self.store.batches(batches[self.pos.batch :], seeds[self.pos.batch :]) as it:
            for b, (indices, views) in enumerate(it, start=self.pos.batch):
                seed = seeds[b]
                if self.recipe.reseed_per_batch:
                    torch.manual_seed(seed)
                size = sizes[b]
                batch = TrainBatch(
                    views=views,
                    target=self.targets[torch.from_numpy(indices)].to(self.device, non_blocking=True),
                    size=size,
                    seed=seed,
                    epoch=epoch,
                    index=b,
                    channels_last=self.channels_last,
                )
                with autocast(self.device, self.dtype):
                    loss = self.recipe.training_loss(module, batch, self.params).float()
                # Under DDP every rank must stop at the same step, so a signal is all-reduced with the
                # step's statistics; a single process polls right after the step.
                requested = self.dist.active and self.ctx.stop.requested
                over_time = self.dist.active and over_time_limit(self.cfg.time_limit)
                stats = torch.stack([loss.detach() * size, one * size, flags[requested], flags[over_time]])
                self.dist.all_reduce(stats)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if max_norm is not None:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]], max_norm
                    )
                self.scaler.step(self.optimizer)
                self.scaler.update()
                pending += stats
                unread += 1
                if unread >= readback:
                    stop_flag, time_flag = self._account(pending, epoch, b, total=len(batches), lr=lr)
                    pending.zero_()
                    unread = 0
                self.pos.step += 1
                self.pos.batch = b + 1
                if self.main:
                    self.ctx.progress.advance(1)
                polled = self.ctx.stop.after_step(self.pos.step)
                if not self.dist.active:
                    stop_flag = 1.0 if polled else 0.0
                reason = self._check_stop(stop_flag, time_flag)
                limit = bool(self.cfg.max_steps and self.pos.step >= self.cfg.max_steps)
                if reason is not None or limit:
                    if unread:
                        self._account(pending, epoch, b, total=len(batches), lr=lr)
                    self.pos.seconds += time.monotonic() - tick
                    if reason is not None:
                        raise self._interrupt(reason)
                    return True
        if unread:
            self._account(pending, epoch, len(batches) - 1, total=len(batches), lr=lr)
        self.pos.seconds += time.monotonic() - tick
        return False

    def readback_steps(self) -> int:
        """Steps between two host reads of the training statistics: `--log-every` when set (its lines
        need the running loss), else `READBACK_STEPS`; 1 on the CPU, where reading costs nothing."""
        if self.device.type == "cpu":
            return 1
        return self.cfg.log_every or READBACK_STEPS

    def _account(self, stats: torch.Tensor, epoch: int, b: int, *, total: int, lr: float) -> tuple[float, float]:
        """Read the statistics summed since the last read (the one host read of the loop): divergence
        check, running loss, log line; returns the all-reduced stop and time-limit flags (> 0: stop)."""
        loss_sum, count, stop_flag, time_flag = (float(v) for v in stats.cpu())
        if not math.isfinite(loss_sum):
            kept = self.out_dir / LAST
            keep = f"; the last good checkpoint is kept at {kept}" if kept.is_file() else ""
            raise TrainingDiverged(
                f"training diverged: the loss is {loss_sum / max(count, 1):g} at epoch {epoch} step {b} "
                f"of split {self.parts.name}; stopped{keep} (try a lower learning rate or --amp off)"
            )
        self.pos.loss_sum += loss_sum
        self.pos.loss_count += count
        self.pos.images += count
        if self.main and self.cfg.log_every and (b + 1) % self.cfg.log_every == 0:
            log.info(
                f"split {self.parts.name} epoch {epoch} step {b + 1}/{total} "
                f"loss {self.pos.loss_sum / self.pos.loss_count:.4f} lr {lr:.3g}"
            )
        return stop_flag, time_flag

    def predict(self, indices: np.ndarray, outputs: TestTimeProtocol | None = None) -> np.ndarray:
        """Test-time predictions of `indices` with the current model (`outputs`: what the recipe, or a
        wrapper of it, predicts; default the score)."""
        return predict_scores(
            outputs or self.recipe,
            self.params,
            self.model,
            self.store,
            indices,
            device=self.device,
            dtype=self.eval_dtype,
            dist=self.dist,
            channels_last=self.channels_last,
        )

    def evaluate(self, indices: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """Metrics and predictions of `indices` with the current model (the `evaluation` hook if given)."""
        if self.evaluation is not None:
            return self.evaluation(self, indices)
        pred = self.predict(indices)
        tied = None if self.ties_said else low_precision_ties(pred, self.eval_dtype)
        if tied and self.main:  # once per split: every later evaluation would repeat it
            self.ties_said = True
            log.warning(
                f"split {self.parts.name}: {tied}; model selection and the logged figures rank on them "
                "(--eval-amp tf32 or off does not tie)"
            )
        return self.recipe.metrics(pred, self.labels.numpy()[indices], self.params), pred

    def _end_epoch(self, epoch: int, evaluate: bool) -> tuple[bool, str]:
        if self.dist.sync_model(self.model) and self.main and not self.drift_said:
            self.drift_said = True  # once per split: a drift that began goes on at every later epoch
            log.warning(
                f"split {self.parts.name} epoch {epoch}: the ranks' weights had drifted apart (their optimizer "
                "steps round differently, e.g. on mixed GPU types); every rank now takes rank 0's, as at "
                "every epoch's end"
            )
        lr = self.schedule.lr()
        loss = self.pos.loss_sum / self.pos.loss_count if self.pos.loss_count else math.nan
        speed = self.pos.images / self.pos.seconds if self.pos.seconds > 0 else math.nan
        base = {
            "epoch": epoch,
            "split": self.parts.name,
            "loss": loss,
            "lr": lr,
            "images_per_s": speed,
            "steps": self.pos.step,
            "selected_on": self.parts.select_on,
        }
        improved: bool | None = None
        records = []
        if evaluate:
            parts = {"val": self.parts.val} if self.parts.val.size else {}
            if (self.cfg.eval_test or self.parts.select_on == "test") and self.parts.test.size:
                parts["test"] = self.parts.test
            metrics = {name: self.evaluate(idx)[0] for name, idx in parts.items()}
            if self.parts.select_on in metrics:
                value = float(metrics[self.parts.select_on][self.params.selection_metric])
                # An unmeasured (NaN) best counts as -inf: kept as NaN, it made every later comparison
                # false, so no later epoch could be selected (a best from an older last.pt too).
                best = self.pos.best_metric if math.isfinite(self.pos.best_metric) else -math.inf
                improved = self.best_state is None or (math.isfinite(value) and value > best)
            if improved:
                self.pos.best_metric = value if math.isfinite(value) else -math.inf
                self.pos.best_epoch = epoch
                self.best_state = cpu_state(self.model)
                if self.main:
                    save_checkpoint(self.best_state, self.out_dir / BEST, self._checkpoint_meta(epoch))
            self.pos.evaluations += 1
            for name, values in metrics.items():
                chosen = bool(improved and name == self.parts.select_on)
                records.append({**base, "part": name, **values, "improved": chosen})
            for watched in self.ctx.watched:  # other datasets: logged, never selecting
                values = watched.evaluate(
                    self.model,
                    device=self.device,
                    dtype=self.eval_dtype,
                    dist=self.dist,
                    channels_last=self.channels_last,
                )
                records.append({**base, "part": WATCH_PREFIX + watched.name, **values})
        else:
            records.append({**base, "part": "train"})
        action = self.schedule.end_epoch(epoch, improved)
        if action.reload_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if action.message:
            records[-1]["event"] = action.message
        for record in records:
            self._write_log(record)
        if self.main:
            metric = self.params.selection_metric
            sel = next((r for r in records if r.get("part") == self.parts.select_on), None)
            text = f" {self.parts.select_on} {metric} {sel[metric]:.4f}" if sel else ""
            test = next((r for r in records if r.get("part") == "test"), None)
            if test and self.parts.select_on != "test":
                text += " test" + "".join(f" {m} {test[m]:.4f}" for m in self.recipe.report_metrics[:2])
            for record in records:
                if str(record.get("part", "")).startswith(WATCH_PREFIX):
                    shown = "".join(f" {m} {record[m]:.4f}" for m in self.recipe.report_metrics[:2])
                    text += f" {record['part']}{shown}"
            self.ctx.progress.finish()
            log.info(
                f"split {self.parts.name} epoch {epoch}: loss {loss:.4f} lr {lr:.3g} {speed:.1f} img/s{text}"
                + (" *" if improved else "")
                + (f" ({action.message})" if action.message else "")
            )
        return action.stop, action.message

    def fit(self, *, resume: bool = False) -> FitResult:
        with time_limit_clock():  # a run's (or a sweep's) clock where one runs, else this fit's own
            return self._fit(resume)

    def _fit(self, resume: bool) -> FitResult:
        if self.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self._setup(resume)
        if self.evaluate_before_training and self.pos.epoch == 0 and self.best_state is None:
            self._keep_start_weights()
        stopped_because = "epoch cap"
        run_label = f"{self.recipe.name} split {self.parts.name}: epochs"
        overall(self.ctx.progress, run_label, self.params.epochs, self.pos.epoch)
        try:
            while self.pos.epoch < self.params.epochs:
                epoch = self.pos.epoch
                limit = self._train_epoch(epoch)
                last_epoch = epoch + 1 >= self.params.epochs
                evaluate = limit or last_epoch or (epoch + 1) % self.cfg.eval_every == 0
                stop, message = self._end_epoch(epoch, evaluate)
                self.pos = Position(
                    epoch=epoch + 1,
                    step=self.pos.step,
                    best_metric=self.pos.best_metric,
                    best_epoch=self.pos.best_epoch,
                    evaluations=self.pos.evaluations,
                )
                self._save_last()
                overall(self.ctx.progress, run_label, self.params.epochs, self.pos.epoch)
                if stop or limit:
                    if stop:
                        stopped_because = message
                    elif not last_epoch:  # the step limit cut the protocol short
                        stopped_because = f"{STEP_LIMIT} ({self.cfg.max_steps})"
                    break
                over_time = over_time_limit(self.cfg.time_limit)
                flag = torch.tensor([float(self.ctx.stop.requested), float(over_time)])
                stop_flag, time_flag = (float(v) for v in self.dist.all_reduce(flag.to(self.device)).cpu())
                reason = self._check_stop(stop_flag, time_flag)
                if reason is not None:
                    raise self._interrupt(reason)
        finally:
            end_overall(self.ctx.progress)  # the run bar goes before the final evaluation
        return self._finish(stopped_because)

    def _adopt_later_best(self, meta: dict[str, str]) -> None:
        """A kept model saved after `last.pt` (a run killed between the two saves at an epoch's end) holds
        the weights of an epoch the resume trains again, and its `last.pt` still records the model before
        it: the position takes the kept file's epoch and metric, so the figures named with the kept model
        are its own (an epoch trained again on a GPU need not repeat them to the bit)."""
        try:
            epoch = int(meta.get("epoch", "-1"))
            value = json.loads(meta.get("metric_value", "null"))
        except ValueError:
            return
        if epoch < self.pos.epoch:
            return
        self.pos.best_epoch = epoch
        self.pos.best_metric = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf

    def _keep_start_weights(self) -> None:
        """Evaluate the weights training starts from and keep them as the model to beat (epoch -1)."""
        indices = self.parts.select
        metrics, _ = self.evaluate(indices)
        value = float(metrics[self.params.selection_metric])
        self.pos.best_metric, self.pos.best_epoch = (value if math.isfinite(value) else -math.inf), -1
        self.best_state = cpu_state(self.model)
        if self.main:
            save_checkpoint(self.best_state, self.out_dir / BEST, self._checkpoint_meta(-1))
            record = {"epoch": -1, "split": self.parts.name, "selected_on": self.parts.select_on}
            self._write_log({**record, "part": self.parts.select_on, **metrics, "event": "before training"})
            log.info(
                f"split {self.parts.name} before training: {self.parts.select_on} "
                f"{self.params.selection_metric} {value:.4f} (the model to beat)"
            )

    def _finish(self, stopped_because: str) -> FitResult:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.parts.test.size:
            test, test_pred = self.evaluate(self.parts.test)
        else:  # a whole-dataset round: nothing of this dataset is held out (see --watch)
            test, test_pred = {"n": 0, **dict.fromkeys(self.recipe.metric_names, math.nan)}, np.empty(0)
            if self.parts.select_on == "none":
                self.pos.best_epoch = self.pos.epoch - 1  # the kept model is the last epoch's
        val = self.evaluate(self.parts.val)[0] if self.parts.val.size else None
        if self.dist.active:
            self.rank_info["weights_digest"] = self.dist.gather(weights_digest(self.model))
            self.rank_info["world_size"] = self.dist.world
        weights = self.out_dir / BEST
        if self.main:
            if not weights.is_file():
                save_checkpoint(cpu_state(self.model), weights, self._checkpoint_meta(self.pos.epoch - 1))
            self._write_predictions(test_pred)
        result = FitResult(
            split=self.parts.name,
            best_epoch=self.pos.best_epoch,
            best_metric=self.pos.best_metric,
            epochs=self.pos.epoch,
            steps=self.pos.step,
            stopped_because=stopped_because,
            test=test,
            val=val,
            weights=weights,
            ranks=self.rank_info,
            watch=summarize_log(self.out_dir / LOG) if self.ctx.watched and self.main else None,
        )
        if self.main:
            write_json(self.out_dir / RESULT, {**to_plain(result), "selected_on": self.parts.select_on})
        self._write_curves()
        return result

    def _write_predictions(self, pred: np.ndarray) -> None:
        names = getattr(self.ctx.dataset, "names", None)
        with atomic_path(self.out_dir / PREDICTIONS) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "name", "label", "prediction"])
            for index, value in zip(self.parts.test, pred, strict=True):
                name = str(names[index]) if names is not None else ""
                writer.writerow([int(index), name, f"{self.labels[index].item():.9g}", f"{value:.9g}"])


def fit_split(ctx: FitContext[Any], parts: SplitParts, out_dir: Path, *, resume: bool) -> FitResult:
    """One split's training: the recipe's own `fit` where it has one, else one `Trainer`."""
    result = ctx.recipe.fit(ctx, parts, out_dir, resume=resume)
    return result if result is not None else Trainer(ctx, parts, out_dir).fit(resume=resume)
