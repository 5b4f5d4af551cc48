"""The training loop: plain PyTorch, readable in one sitting.

Batches are grouped by length and padded per batch; each optimizer step sees exactly `batch_size`
examples however many micro-batches it is split into, because every micro-batch's summed loss is
divided by the target count of the whole step: examples for a classifier, answer tokens for a
generative model (an example may carry `n_targets`). Averaging per-micro-batch means instead would
weigh a short answer's tokens more than a long one's. Evaluation (a function the recipe passes in)
picks the best checkpoint, early stopping watches it, and an atomic checkpoint after each evaluation
lets `--resume` continue bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.metrics import LOWER_IS_BETTER
from tunesmith.tasks.base import Task
from tunesmith.train import distributed, sharding
from tunesmith.train.checkpoint import (
    WEIGHTS,
    copy_weights,
    load_checkpoint,
    load_trainable,
    recover_checkpoint,
    save_checkpoint,
    trainable_state,
)
from tunesmith.train.config import TrainConfig
from tunesmith.utils import atomic_write_text, fsync_file, is_main_process

_SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


@dataclass
class LoopState:
    step: int = 0  # optimizer steps taken
    examples: int = 0
    best_metric: float | None = None
    best_step: int = 0
    bad_evals: int = 0
    log_lines: int = 0  # log.jsonl lines written up to this state, so a resume rewrites nothing twice
    stopped_early: bool = False
    done: bool = False


def step_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's optimizer steps, each a list of example indices, grouped by length to cut padding.

    The order depends only on (seed, epoch), so a resumed run replays the same batches.
    """
    rng = np.random.default_rng([seed, epoch])  # a seed sequence: no two (seed, epoch) pairs collide
    order = rng.permutation(len(lengths)).tolist()
    mega = batch_size * 50
    steps = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        steps += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = rng.permutation(len(steps)).tolist()
    return [steps[i] for i in shuffled]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    seen: set[int] = set()  # tied weights (T5's shared embeddings) belong to several modules: add them once
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue  # frozen parts stay out of the optimizer: no state, no work
            seen.add(id(p))
            is_norm = "norm" in type(module).__name__.lower()
            (no_decay if is_norm or name == "bias" else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel updates each tensor in one pass instead of a dozen: full fine-tuning of e5-small on a CPU
    # ran at 12.7 examples/s against 8.6, and 760 MB lower peak (bench/train_levers.py). HF Trainer fuses too.
    devices = {p.device.type for p in decay + no_decay}
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=bool(devices) and devices <= {"cpu", "cuda"})


def peak_memory(device: torch.device) -> dict[str, float]:
    """This process's peak memory so far, in MB: resident (what a CPU run costs the machine) and, on a GPU,
    the most its tensors held at once."""
    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}  # kB on Linux
    if device.type == "cuda":
        peak["gpu_peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak


def checkpoint_activations(model: nn.Module) -> None:
    """--gradient-checkpointing: each layer's activations are recomputed in the backward pass, not kept."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise TunesmithError(f"--gradient-checkpointing: {type(model).__name__} does not support it; drop the flag")
    # Non-reentrant: it works with frozen embeddings and adapters, whose inputs need no gradient.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


class RunLog:
    """log.jsonl: one line per optimizer step and per evaluation."""

    def __init__(self, path: Path, keep_lines: int) -> None:
        self.path = path
        self.lines = keep_lines
        if not is_main_process():
            return
        kept = path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep_lines] if path.exists() else []
        atomic_write_text(path, "".join(kept))  # a crash while trimming must not cost the lines kept

    def sync(self) -> None:
        """Flush the lines written so far to disk: a checkpoint counts them, and must not outlive them."""
        if is_main_process() and self.path.exists():
            fsync_file(self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Append one line, stamped with the wall-clock time (Unix seconds) it was written."""
        self.lines += 1
        if is_main_process():
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({**record, "time": round(time.time(), 3)}, ensure_ascii=False) + "\n")


# Called after each evaluation with the step and the validation metrics; returning True stops the run
# (what a search's pruner needs). It may also raise, e.g. optuna.TrialPruned, which ends the run.
OnEvaluate = Callable[[int, dict[str, Any]], "bool | None"]


class Trainer:
    """Holds what one run's loop needs; `fit` is the loop."""

    def __init__(
        self,
        model: nn.Module,
        task: Task,
        train: list[dict],
        cfg: TrainConfig,
        run_dir: Path,
        device: torch.device,
        collate: Callable[[list[dict]], dict[str, torch.Tensor]],
        evaluate: Callable[[nn.Module], dict[str, Any]],
        on_evaluate: OnEvaluate | None = None,
        checkpoints: bool = True,
    ) -> None:
        if cfg.precision == "fp16" and device.type != "cuda":
            raise TunesmithError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        left = [f for f in cfg.auto_fields() if f != "class_weights"]  # the task has already applied weights
        if left:
            raise TunesmithError(f"the loop needs values for {', '.join(left)}: choose them with train.auto.choose")
        self.model, self.task, self.cfg, self.device = model.to(device), task, cfg, device
        if cfg.gradient_checkpointing:
            checkpoint_activations(self.model)
        # --fsdp: the loop trains a sharded twin, and `whole` (the caller's model) gets the weights back in fit()
        self.whole: nn.Module | None = None
        if cfg.fsdp:
            self.whole, self.model = self.model, sharding.sharded_twin(self.model)
        self.runner = self.model  # what forward and backward run through: DDP's wrapper once fit() starts
        self.train, self.collate, self.evaluate, self.on_evaluate = train, collate, evaluate, on_evaluate
        # Without checkpoints (a search trial) the best weights are kept in memory and nothing heavy is written.
        self.checkpoints = checkpoints
        self.best_in_memory: dict[str, torch.Tensor] | None = None
        self.ckpt_dir = run_dir / "checkpoints"
        self.lengths = [len(ex["input_ids"]) for ex in train]
        self.steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.steps_per_epoch)
        if cfg.max_steps and cfg.epochs > 0:
            self.total_steps = min(cfg.max_steps, math.ceil(cfg.epochs * self.steps_per_epoch))
        self.metric = cfg.metric or task.metric
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = get_scheduler(
            _SCHEDULERS[cfg.scheduler],
            self.optimizer,
            num_warmup_steps=round(cfg.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None

    def fit(self, resume: bool = False) -> LoopState:
        state = LoopState()
        last = self.ckpt_dir / "last"
        if resume and recover_checkpoint(last) is not None:
            restore = None if self.whole is None else partial(sharding.load_sharded, self.model, self.optimizer)
            state = LoopState(**load_checkpoint(last, self.model, self.optimizer, self.scheduler, self.scaler, restore))
            self._recover_best(state)
            self._continue_at_lr(self.cfg.lr)
        log = RunLog(self.ckpt_dir.parent / "log.jsonl", state.log_lines)
        self.runner = distributed.wrap(self.model)  # after a resume has loaded the weights every rank starts from
        bar = tqdm(
            total=self.total_steps,
            initial=state.step,
            desc="train",
            unit="step",
            disable=None if is_main_process() else True,
            dynamic_ncols=True,
        )
        try:
            for step_ids in [] if state.done or state.stopped_early else self._remaining_steps(state.step):
                loss, grad_norm, seconds = self._optimizer_step(step_ids, state.step)
                state.step += 1
                state.examples += len(step_ids)
                lr = self.scheduler.get_last_lr()[0]
                speed = len(step_ids) / seconds
                log.write(
                    {
                        "type": "train",
                        "step": state.step,
                        "epoch": round(state.step / self.steps_per_epoch, 4),
                        "loss": loss,
                        **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                        "lr": lr,
                        "examples_per_s": round(speed, 2),
                        "seconds": round(seconds, 4),
                        **peak_memory(self.device),
                        **self._task_stats(),
                    }
                )
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", ex_s=f"{speed:.1f}")
                if self._eval_due(state.step):
                    self._evaluate(state, log)
                    self._checkpoint(state, log, best=state.best_step == state.step)
                elif self.cfg.checkpoint_every and state.step % self.cfg.checkpoint_every == 0:
                    self._checkpoint(state, log)
                if state.stopped_early:
                    break
        finally:
            bar.close()
        state.done = True
        self._checkpoint(state, log)
        distributed.barrier()  # rank 0's best/ is on disk before any rank loads it
        if self.best_in_memory is not None:  # a sharded model's best is its shards: they go back before gathering
            params = dict(self.model.named_parameters())
            with torch.no_grad():
                for name, value in self.best_in_memory.items():
                    params[name].copy_(value)
        if self.whole is not None:
            sharding.give_back(self.model, self.whole)
            self.model = self.runner = self.whole
            self.whole = None
        if self.best_in_memory is None and state.best_step and (self.ckpt_dir / "best" / WEIGHTS).is_file():
            # best_step 0: nothing improved, and a best/ there is from an attempt this run started over from
            load_trainable(self.model, self.ckpt_dir / "best")
        return state

    def _task_stats(self) -> dict[str, float]:
        """What the task saw in this step's batches beyond the loss (DPO's reward accuracy and margin), when it
        keeps such numbers (`pop_stats`)."""
        pop = getattr(self.task, "pop_stats", None)
        return pop() if callable(pop) else {}

    def _continue_at_lr(self, lr: float) -> None:
        """A resume may lower --lr (the usual cure for a loss that became NaN): the restored scheduler would
        otherwise keep the old peak, so the schedule's shape continues from the new one."""
        for group, old in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            if old != lr:
                group["lr"] *= lr / old
                group["initial_lr"] = lr
        self.scheduler.base_lrs = [lr] * len(self.optimizer.param_groups)

    def _remaining_steps(self, done: int) -> Iterator[list[int]]:
        epoch, skip = divmod(done, self.steps_per_epoch)
        step = done
        while step < self.total_steps:
            for ids in step_batches(self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)[skip:]:
                if step >= self.total_steps:
                    return
                step += 1
                yield ids
            epoch, skip = epoch + 1, 0

    def _optimizer_step(self, step_ids: list[int], step: int) -> tuple[float, float | None, float]:
        """One update; returns the step's loss, its gradient norm before clipping (None without clipping) and
        the seconds it took."""
        start = time.perf_counter()
        self.model.train()
        # Each summed loss is divided by the target count of the whole step (all ranks together), not the
        # micro-batch's: the update then equals one big batch's, whatever the accumulation, the number of
        # ranks and however long each answer. DDP averages over ranks, so each rank's share is scaled back up.
        step_targets = max(sum(self.train[j].get("n_targets", 1) for j in step_ids), 1)
        scale = distributed.world_size()
        mine = distributed.share(step_ids)
        if not mine:  # fewer examples than ranks: this rank still joins the gradient exchange, adding nothing
            mine, scale = step_ids[:1], 0
        micro = math.ceil(len(mine) / self.cfg.grad_accum)
        chunks = [mine[i : i + micro] for i in range(0, len(mine), micro)]
        total = torch.zeros((), device=self.device)
        for k, ids in enumerate(chunks):
            batch = {key: v.to(self.device) for key, v in self.collate([self.train[j] for j in ids]).items()}
            with distributed.no_sync(self.runner, last=k == len(chunks) - 1):
                with autocast(self.device, self.cfg.precision):
                    loss_sum, _ = self.task.loss(self.runner, batch)
                loss = loss_sum * scale / step_targets
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            if scale:
                total += loss_sum.detach() / step_targets
        total = distributed.total(total)
        value = total.item()
        if not math.isfinite(value):
            self.optimizer.zero_grad(set_to_none=True)
            last = self.ckpt_dir / "last"
            advice = (
                f"The last good checkpoint is in {last}: lower --lr (or use --precision fp32) and run again "
                "with --resume"
                if (last / "state.json").is_file()
                else "No checkpoint was saved yet: lower --lr (or use --precision fp32) and run again with --overwrite"
            )
            raise TunesmithError(f"training loss became {value} at step {step + 1}; stopped. {advice}")
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if self.cfg.max_grad_norm > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = float(sharding.whole_norm(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value, grad_norm, time.perf_counter() - start

    def _eval_due(self, step: int) -> bool:
        if step == self.total_steps:
            return True
        every = self.cfg.eval_every or self.steps_per_epoch
        return step % every == 0

    def _evaluate(self, state: LoopState, log: RunLog) -> None:
        start = time.perf_counter()
        metrics = self.evaluate(self.model)
        seconds = time.perf_counter() - start
        if self.metric not in metrics:
            numbers = ", ".join(k for k, v in metrics.items() if isinstance(v, float))
            raise TunesmithError(f"--metric {self.metric!r} is not one the {self.task.name} task reports ({numbers})")
        value = metrics[self.metric]
        sign = -1 if self.metric in LOWER_IS_BETTER else 1
        # A NaN (e.g. Spearman of constant predictions) never counts as an improvement.
        improved = not math.isnan(value) and (state.best_metric is None or sign * (value - state.best_metric) > 0)
        if improved:
            state.best_metric, state.best_step, state.bad_evals = value, state.step, 0
        else:
            state.bad_evals += 1
            state.stopped_early = bool(self.cfg.patience) and state.bad_evals >= self.cfg.patience
        summary = {k: v for k, v in metrics.items() if isinstance(v, float | int)}
        log.write(
            {
                "type": "eval",
                "split": "validation",
                "step": state.step,
                **summary,
                "best": improved,
                "stopped_early": state.stopped_early,
                "seconds": round(seconds, 4),
            }
        )
        if is_main_process():
            tqdm.write(f"step {state.step}: validation {self.metric} {value:.4f}" + (" (best)" if improved else ""))
        if self.on_evaluate is not None and self.on_evaluate(state.step, metrics):
            state.stopped_early = True
            tqdm.write(f"step {state.step}: stopped by the on_evaluate callback")

    def _checkpoint(self, state: LoopState, log: RunLog, best: bool = False) -> None:
        """Save last/, then best/ when this step is the best so far.

        In that order a crash between the two leaves best/ behind last/, never ahead of it (a best/ from a
        step the resumed run trains again, differently on a GPU, would not match the state it resumes), and
        last/ then holds best/'s weights: `_recover_best` copies them over.
        """
        state.log_lines = log.lines
        sharded = self.whole is not None  # then every rank takes part in gathering what rank 0 saves
        if not self.checkpoints:
            if best and sharded:  # this rank's shards: 1/N of the memory, and no exchange
                params = self.model.named_parameters()
                self.best_in_memory = {n: p.detach().clone() for n, p in params if p.requires_grad}
            elif best:
                self.best_in_memory = trainable_state(self.model)
            return
        if not (is_main_process() or sharded):
            return
        if sharded:
            weights = sharding.gather_weights(self.model)
            optimizer_state = sharding.gather_optimizer(self.model, self.optimizer)
        else:
            weights, optimizer_state = trainable_state(self.model, copy=False), self.optimizer.state_dict()
        if not is_main_process():
            return
        log.sync()
        last = self.ckpt_dir / "last"
        save_checkpoint(last, weights, dataclasses.asdict(state), optimizer_state, self.scheduler, self.scaler)
        if best:
            save_checkpoint(self.ckpt_dir / "best", weights, self._best_info(state))

    def _recover_best(self, state: LoopState) -> None:
        best = recover_checkpoint(self.ckpt_dir / "best")
        behind = state.best_step and state.best_step == state.step and (best or {}).get("step") != state.step
        if behind and is_main_process():
            copy_weights(self.ckpt_dir / "last", self.ckpt_dir / "best", self._best_info(state))

    def _best_info(self, state: LoopState) -> dict[str, Any]:
        return {"step": state.best_step, self.metric: state.best_metric}
