"""The train section of a run's config: what the loop needs and nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.fields import option

SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    epochs: float = option(3.0, "passes over the training data")
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit)")
    lr: float = option(2e-5, "peak learning rate")
    batch_size: int = option(32, "examples per optimizer step (split over --grad-accum micro-batches)")
    grad_accum: int = option(1, "micro-batches per optimizer step; the update equals the full batch's")
    weight_decay: float = option(0.01, "AdamW weight decay (never on biases and norms)")
    warmup_ratio: float = option(0.1, "fraction of steps with linear warmup")
    scheduler: str = option("linear", "learning-rate decay after warmup", choices=SCHEDULERS)
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: off)")
    precision: str = option("fp32", "bf16 autocast (CPU or GPU) or fp16 (GPU only)", choices=PRECISIONS)
    eval_every: int = option(0, "evaluate every N optimizer steps (0: at the end of each epoch)")
    checkpoint_every: int = option(0, "checkpoint every N optimizer steps (0: at each evaluation)")
    patience: int = option(0, "stop after N evaluations without improvement (0: never stop early)")
    metric: str | None = option(None, "validation metric that picks the best checkpoint; default per task")
    seed: int = option(42, "seed for splits, shuffling, dropout and initialisation")
    device: str = option("auto", "cpu, cuda, cuda:1 or auto")
    eval_batch_size: int = option(64, "batch size for evaluation and prediction")
    class_weights: str = option(
        "none", "classification: weight the loss by inverse class frequency (balanced)", choices=("none", "balanced")
    )
