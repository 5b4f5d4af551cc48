"""Hyper-parameters chosen for the user: what `auto` (an unset `--lr`, `--batch-size`, `--epochs`,
`--warmup-ratio`, `--class-weights`) becomes, from the method, the model's size and the training rows.

The rules are the ones `bench/defaults.py` measured against a grid (README, "Hyper-parameters that
work untuned"); a flag or a YAML value always wins over them. Each choice carries its reason, which
the run logs and writes into config.yaml and metrics.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tunesmith.models.config import LORA_FAMILY, PROMPT_METHODS
from tunesmith.train.config import TrainConfig

# Optimizer steps a run aims for (bench/defaults.py). The review demo reached its best macro-F1 in two
# epochs of 158 steps; the chat demo's second epoch of 93 steps only overfit (validation loss 2.77 after
# one, 2.80 after two): an sft row carries many answer tokens.
# An entity tagger learns from every token but needs more steps: on the People's Daily NER demo (e5-small,
# 2,800 sentences) validation entity F1 was 0.64 after 350 steps and 0.89 after 1,050 (one seed).
TARGET_STEPS = {"classifier": 300, "generative": 100, "token": 1000}
MAX_EPOCHS = 10
# A class this much rarer than the largest one is lost by an unweighted loss often enough to weight it.
IMBALANCE_RATIO = 0.5


@dataclass(frozen=True)
class Chosen:
    """One value `auto` became, and why."""

    field: str
    value: Any
    why: str

    def line(self) -> str:
        return f"{self.field.replace('_', '-')} {self.value}: {self.why}"


def body_size(model: Any) -> int:
    """Weights outside the input-embedding table: what sets how large a step the network tolerates.

    The table is left out because its size follows the vocabulary (96 of e5-small's 118M weights), not depth."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return total - (embeddings.weight.numel() if embeddings is not None else 0)


def learning_rate(method: str, body: int) -> tuple[float, str]:
    if method in LORA_FAMILY:
        return 5e-4, f"{method}: adapters start at zero and need a larger step than full fine-tuning"
    if method == "ia3":
        return 3e-3, "ia3 scales activations by learned vectors, which move slowly at LoRA's rate"
    if method in PROMPT_METHODS:
        return 1e-2, f"{method} trains only a few virtual-token vectors"
    millions = body / 1e6
    for limit, lr in ((60, 1e-4), (200, 5e-5), (600, 2e-5)):
        if millions <= limit:
            return lr, f"full fine-tuning of a model with {millions:.0f}M weights outside its embeddings"
    return 1e-5, f"full fine-tuning of a large model ({millions:.0f}M weights outside its embeddings)"


def batch_size(rows: int, generative: bool, grad_accum: int) -> tuple[int, str]:
    if generative:
        size, why = 8, "language-model rows are long (a conversation, a text, a pair of answers): 8 per step"
    elif rows < 10_000:
        size, why = 16, f"{rows} training rows: smaller batches give more steps on a small set"
    else:
        size, why = 32, f"{rows} training rows"
    size = math.ceil(size / grad_accum) * grad_accum  # a batch must split into --grad-accum micro-batches
    return size, why


def epochs(rows: int, batch: int, generative: bool, token_level: bool = False) -> tuple[int, str]:
    target = TARGET_STEPS["generative" if generative else "token" if token_level else "classifier"]
    steps_per_epoch = max(1, math.ceil(rows / batch))
    n = min(MAX_EPOCHS, max(1, round(target / steps_per_epoch)))
    return n, f"about {target} optimizer steps: {steps_per_epoch} per epoch at batch {batch}"


def imbalanced(counts: list[int]) -> bool:
    return bool(counts) and min(counts) < IMBALANCE_RATIO * max(counts)


def choose(
    cfg: TrainConfig,
    *,
    method: str,
    body: int,
    rows: int,
    generative: bool,
    class_counts: list[int] | None = None,
    token_level: bool = False,
) -> list[Chosen]:
    """Values for every field of `cfg` left to `auto`; fields the user set are not touched or listed."""
    out: list[Chosen] = []
    if cfg.lr is None:
        out.append(Chosen("lr", *learning_rate(method, body)))
    batch = cfg.batch_size
    if batch is None:
        batch, why = batch_size(rows, generative, cfg.grad_accum)
        out.append(Chosen("batch_size", batch, why))
    if cfg.epochs is None:
        if cfg.max_steps:
            out.append(Chosen("epochs", 0.0, f"--max-steps {cfg.max_steps} alone bounds the run"))
        else:
            out.append(Chosen("epochs", *epochs(rows, batch, generative, token_level)))
    if cfg.warmup_ratio is None:
        out.append(Chosen("warmup_ratio", 0.06, "6 % of the steps, RoBERTa's warmup"))
    if cfg.class_weights == "auto":
        out.append(_class_weights(class_counts))
    return out


def _class_weights(counts: list[int] | None) -> Chosen:
    if counts is None:
        return Chosen("class_weights", "none", "only classification weights its classes")
    if imbalanced(counts):
        return Chosen(
            "class_weights",
            "balanced",
            f"the rarest class has {min(counts)} training rows against {max(counts)}: an unweighted loss can "
            "learn never to predict it",
        )
    return Chosen("class_weights", "none", f"classes are near balanced ({min(counts)} to {max(counts)} rows)")


def apply(cfg: TrainConfig, chosen: list[Chosen]) -> None:
    """Set the chosen values on `cfg` (a recipe's resolved copy, never the caller's config)."""
    for c in chosen:
        setattr(cfg, c.field, c.value)
    cfg.validate()
