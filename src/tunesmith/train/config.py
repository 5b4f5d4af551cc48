"""The train section of a run's config: what the loop needs and nothing else."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunesmith.errors import TunesmithError
from tunesmith.fields import check_range, option

SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    # None is `auto`: the recipe chooses from the method, the model and the rows (train/auto.py).
    epochs: float | None = option(None, "passes over the training data (auto: about 300 optimizer steps)")
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit)")
    lr: float | None = option(None, "peak learning rate (auto: from the method and the model's size)")
    batch_size: int | None = option(
        None, "examples per optimizer step, split over --grad-accum micro-batches (auto: from the rows)"
    )
    grad_accum: int = option(1, "micro-batches per optimizer step; the update equals the full batch's")
    weight_decay: float = option(0.01, "AdamW weight decay (never on biases and norms)")
    warmup_ratio: float | None = option(None, "fraction of steps with linear warmup (auto: 0.06)")
    scheduler: str = option("linear", "learning-rate decay after warmup", choices=SCHEDULERS)
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: off)")
    precision: str = option("fp32", "bf16 autocast (CPU or GPU) or fp16 (GPU only)", choices=PRECISIONS)
    gradient_checkpointing: bool = option(
        False, "recompute each layer's activations in the backward pass: less memory for more time"
    )
    fsdp: bool = option(
        False,
        "under torchrun, shard the weights, gradients and optimizer state across the processes (FSDP) instead of "
        "keeping a whole copy in each: for full fine-tuning that does not fit one device",
    )
    eval_every: int = option(0, "evaluate every N optimizer steps (0: at the end of each epoch)")
    checkpoint_every: int = option(0, "checkpoint every N optimizer steps (0: at each evaluation)")
    patience: int = option(0, "stop after N evaluations without improvement (0: never stop early)")
    metric: str | None = option(None, "validation metric that picks the best checkpoint; default per task")
    seed: int = option(42, "seed for splits, shuffling, dropout and initialisation")
    device: str = option("auto", "cpu, cuda, cuda:1 or auto")
    eval_batch_size: int = option(64, "batch size for evaluation and prediction")
    class_weights: str = option(
        "auto",
        "classification: weight the loss by inverse class frequency (balanced); auto: balanced when the rarest "
        "class has under half the rows of the largest",
        choices=("auto", "none", "balanced"),
    )

    def auto_fields(self) -> list[str]:
        """The fields still left to `auto`; a loop is only ever given a config with none."""
        names = ("lr", "batch_size", "epochs", "warmup_ratio")
        return [n for n in names if getattr(self, n) is None] + (["class_weights"] * (self.class_weights == "auto"))

    def validate(self) -> TrainConfig:
        check_range("epochs", self.epochs, at_least=0)
        check_range("max-steps", self.max_steps, at_least=0, hint="0 means no limit")
        if self.epochs is not None and self.epochs <= 0 and self.max_steps <= 0:
            raise TunesmithError("set --epochs or --max-steps above 0")
        check_range("lr", self.lr, above=0, at_most=1, hint="typical values are 1e-5 to 1e-3")
        for flag, value in (("batch-size", self.batch_size), ("grad-accum", self.grad_accum)):
            check_range(flag, value, at_least=1)
        check_range("eval-batch-size", self.eval_batch_size, at_least=1)
        if self.batch_size is not None and self.batch_size % self.grad_accum:
            raise TunesmithError(f"--batch-size {self.batch_size} is not a multiple of --grad-accum {self.grad_accum}")
        check_range("weight-decay", self.weight_decay, at_least=0, at_most=1)
        check_range("warmup-ratio", self.warmup_ratio, at_least=0, at_most=1)
        check_range("max-grad-norm", self.max_grad_norm, at_least=0, hint="0 turns clipping off")
        for flag, value in (("eval-every", self.eval_every), ("checkpoint-every", self.checkpoint_every)):
            check_range(flag, value, at_least=0)
        check_range("patience", self.patience, at_least=0, hint="0 never stops early")
        check_range("seed", self.seed, at_least=0, below=2**32)
        check_device(self.device)
        return self


def check_device(name: str) -> None:
    """The names torch accepts for a device this machine has; `auto` picks CUDA when there is one."""
    import torch

    if name in ("auto", "cpu"):
        return
    match = re.fullmatch(r"(cuda|mps)(?::(\d+))?", name)
    if not match:
        raise TunesmithError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    kind, index = match.group(1), int(match.group(2) or 0)
    if kind == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise TunesmithError("--device mps: no Apple GPU here; use --device cpu or auto")
        return
    if not torch.cuda.is_available():
        raise TunesmithError(f"--device {name}: no CUDA GPU here; use --device cpu or auto")
    if index >= torch.cuda.device_count():
        raise TunesmithError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
