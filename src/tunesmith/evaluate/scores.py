"""Scores of a classifier-style model on examples, in input order: what validation, the final report and
`predict` all compute, the same way, in fp32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from tunesmith.tasks.base import Collator, Task, rows_of, stack_rows, targets_of


@torch.inference_mode()
def predict_scores(
    model: nn.Module,
    task: Task,
    examples: list[dict],
    collate: Collator,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Task scores for every example, in input order; batches are length-sorted to cut padding."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    rows: list[Any] = [None] * len(examples)
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        batch = collate([examples[i] for i in ids])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        for i, row in zip(ids, rows_of(task.scores(logits), batch["attention_mask"]), strict=True):
            rows[i] = row
    return stack_rows(rows)


def score_evaluator(
    task: Task, examples: list[dict], collate: Collator, batch_size: int, device: torch.device
) -> Callable[[nn.Module], dict[str, Any]]:
    """Validation for tasks that score examples (classification, regression, multilabel).

    Always in fp32, whatever the training precision: the best checkpoint is then chosen on the scores
    `predict` and the final report give, not on autocast's slightly different ones.
    """
    targets = targets_of(examples)

    def evaluate(model: nn.Module) -> dict[str, Any]:
        return task.metrics(predict_scores(model, task, examples, collate, batch_size, device), targets)

    return evaluate
