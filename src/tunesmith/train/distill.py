"""Knowledge distillation: the distill section of a run's config, and the loss that learns a teacher's soft labels.

A distilled run is a classifier run whose training rows also carry the teacher's log-probabilities. The loss is
Hinton et al.'s: alpha x T^2 x KL(teacher at T || student at T) + (1 - alpha) x cross-entropy on the hard label,
where a row has one (unlabelled rows, label -100, learn from the teacher alone). T^2 keeps the soft term's
gradient on the scale of the hard one as T grows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.errors import TunesmithError
from tunesmith.fields import check_range, option
from tunesmith.tasks.base import Batch, Task, forward_logits

NO_LABEL = -100  # cross_entropy's ignore_index: a row the teacher alone labels
LAYER_CHOICES = ("even", "importance")


@dataclass
class DistillConfig:
    teacher: str | None = option(None, "run folder of the teacher whose soft labels the student learns")
    temperature: float = option(2.0, "softmax temperature of the soft labels (1: the teacher's own probabilities)")
    alpha: float = option(0.5, "weight of the soft-label loss; 1 - alpha goes to the hard labels")
    student_layers: int | None = option(
        None, "student = the teacher with only this many of its layers (initialised from them, as DistilBERT)"
    )
    layer_choice: str = option(
        "even",
        "which teacher layers the student keeps: evenly spaced, or the most important on the validation split",
        choices=LAYER_CHOICES,
    )
    ffn_keep: float | None = option(
        None, "student = the teacher keeping this fraction of each layer's FFN neurons, the most important ones"
    )
    unlabelled: str | None = option(None, "file of extra texts (column `text`) the teacher labels for the student")

    def validate(self) -> DistillConfig:
        check_range("temperature", self.temperature, above=0, at_most=100)
        check_range("alpha", self.alpha, at_least=0, at_most=1)
        check_range("student-layers", self.student_layers, at_least=1)
        check_range("ffn-keep", self.ffn_keep, above=0, at_most=1)
        if not self.teacher and (self.from_teacher or self.unlabelled):
            raise TunesmithError("--student-layers, --ffn-keep and --unlabelled need a --teacher run to learn from")
        if self.unlabelled and self.alpha == 0:
            raise TunesmithError("--unlabelled rows learn only from the teacher's soft labels: --alpha 0 ignores them")
        return self

    @property
    def from_teacher(self) -> bool:
        """Whether the student is the teacher made smaller, rather than another model."""
        return self.student_layers is not None or self.ffn_keep is not None


class SoftTargets:
    """The task as the loop sees it in a distilled run: its loss learns the teacher's soft labels too."""

    def __init__(self, task: Task, temperature: float, alpha: float) -> None:
        self.task, self.temperature, self.alpha = task, temperature, alpha
        self.name, self.metric = task.name, task.metric

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = forward_logits(model, batch).float()
        t = self.temperature
        student, teacher = F.log_softmax(logits / t, dim=-1), F.log_softmax(batch["teacher"] / t, dim=-1)
        # summed over rows like the hard term: the loop divides by the row count
        soft = F.kl_div(student, teacher, reduction="none", log_target=True).sum() * t * t
        weight = getattr(self.task, "class_weights", None)
        weight = None if weight is None else weight.to(logits.device)
        hard = F.cross_entropy(logits, batch["labels"], weight=weight, reduction="sum", ignore_index=NO_LABEL)
        # the loop divides by every row; the hard term is a mean over the labelled ones, however many are unlabelled
        labelled = int((batch["labels"] != NO_LABEL).sum())
        hard = hard * len(logits) / max(labelled, 1)
        return self.alpha * soft + (1 - self.alpha) * hard, len(logits)


def with_teacher(examples: list[dict[str, Any]], teacher_probs: np.ndarray) -> list[dict[str, Any]]:
    """The examples, each carrying the teacher's log-probabilities (log of its softmax: the same distribution as
    its logits at any temperature, whatever runtime produced it)."""
    # clipped only where float32 itself underflows: a higher floor would flatten the tail a high temperature shows
    logp = torch.from_numpy(np.log(np.clip(teacher_probs.astype(np.float64), np.finfo(np.float32).tiny, None)))
    logp = logp.float()
    return [{**ex, "teacher": row} for ex, row in zip(examples, logp, strict=True)]


def collate_with_teacher(collate: Callable[[list[dict]], Batch]) -> Callable[[list[dict]], Batch]:
    def both(items: list[dict]) -> Batch:
        batch = collate(items)
        batch["teacher"] = torch.stack([it["teacher"] for it in items])
        return batch

    return both
