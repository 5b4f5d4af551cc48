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
    max_spread: float | None = None,
) -> np.ndarray:
    """Task scores for every example, in input order; batches are length-sorted to cut padding, and with
    `max_spread` a batch also ends before a text that many times longer than its shortest one."""
    model.eval()
    rows: list[Any] = [None] * len(examples)
    for ids in length_batches([len(e["input_ids"]) for e in examples], batch_size, max_spread):
        batch = collate([examples[i] for i in ids])
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        for i, row in zip(ids, rows_of(task.scores(logits), batch["attention_mask"]), strict=True):
            rows[i] = row
    return stack_rows(rows)


def length_batches(lengths: list[int], batch_size: int, max_spread: float | None = None) -> list[list[int]]:
    """Indices in batches of similar length: sorted by length, at most `batch_size` each, and (with
    `max_spread`) none whose longest text is more than `max_spread` times its shortest, so that a few texts
    of mixed lengths (a service's batch) are not padded to the longest of them."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        current = batches[-1] if batches else []
        full = len(current) == batch_size
        if not current or full or (max_spread is not None and lengths[i] > max_spread * lengths[current[0]]):
            batches.append([i])
        else:
            current.append(i)
    return batches


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
