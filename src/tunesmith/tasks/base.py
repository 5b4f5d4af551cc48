"""What every task shares: turning texts into token ids, and padding them into batches."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """The one place that knows what a row means. The loop only calls `loss` and `scores`."""

    name: str
    metric: str  # default validation metric that picks the best checkpoint

    def fit(self, train: pd.DataFrame, source: str) -> None: ...
    def check(self, df: pd.DataFrame, source: str) -> None: ...
    def targets(self, df: pd.DataFrame) -> torch.Tensor: ...
    def model_kwargs(self) -> dict[str, Any]: ...
    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]: ...
    def scores(self, logits: torch.Tensor) -> np.ndarray: ...
    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]: ...
    def probe(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray: ...
    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None: ...
    def describe(self, scores: np.ndarray) -> list[dict[str, Any]]: ...
    def state(self) -> dict[str, Any]: ...


def forward_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


def pad(rows: list[list[int]], value: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded with `value` to the longest one, and the mask of real positions (1) versus padding (0)."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), value, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(longest - len(r), longest) if left else slice(0, len(r))
        ids[i, span], mask[i, span] = torch.as_tensor(r, dtype=torch.long), 1
    return ids, mask


class Collator:
    """Dynamic padding: each batch is padded only to its own longest text."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        ids, mask = pad([it["input_ids"] for it in items], self.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in items[0]:
            batch["labels"] = torch.stack([it["labels"] for it in items])
        return batch


def make_examples(input_ids: list[list[int]], targets: torch.Tensor | None) -> list[dict[str, Any]]:
    if targets is None:
        return [{"input_ids": ids} for ids in input_ids]
    return [{"input_ids": ids, "labels": t} for ids, t in zip(input_ids, targets, strict=True)]
