"""What every task shares: turning texts into token ids, and padding them into batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class Task(Protocol):
    """The one place that knows what a row means. The loop only calls `loss` and `scores`.

    Optional: `encode(tokenizer, frame, max_length) -> examples` for labels that follow the tokens (a tagger);
    without it, a row's label is `targets(frame)`'s row. `probe` is what the linear-probe baseline fits;
    a task without one gets no baseline. `pop_stats() -> dict` returns (and forgets) numbers the loss saw beyond
    itself, which the loop logs with each step. Scores and targets may be one fixed-size row per text or, for
    token-level tasks, one row per real token (see `rows_of`).
    """

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


_ENCODE_BATCH = 10_000


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> list[np.ndarray]:
    """Token ids of each text, as int32 arrays: a list of Python ints costs about ten times the memory
    (1.2 GB against 0.12 GB for 200,000 short texts, measured by bench/memory.py's data)."""
    out: list[np.ndarray] = []
    for start in range(0, len(texts), _ENCODE_BATCH):
        enc = tokenizer(
            texts[start : start + _ENCODE_BATCH],
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        out += [np.asarray(ids, dtype=np.int32) for ids in enc["input_ids"]]
    return out


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


def make_examples(input_ids: Sequence[Sequence[int]], targets: torch.Tensor | None) -> list[dict[str, Any]]:
    if targets is None:
        return [{"input_ids": ids} for ids in input_ids]
    return [{"input_ids": ids, "labels": t} for ids, t in zip(input_ids, targets, strict=True)]


def rows_of(scores: np.ndarray, attention_mask: torch.Tensor) -> list[np.ndarray]:
    """A batch's scores, one item per text; token-level scores (batch, length, ...) keep each text's real tokens."""
    if scores.ndim < 3:
        return list(scores)
    lengths = attention_mask.sum(dim=1).tolist()
    return [row[:n] for row, n in zip(scores, lengths, strict=True)]


def stack_rows(rows: list[Any]) -> np.ndarray:
    """One array when every row has one shape; else (token-level rows of many lengths) an array of arrays."""
    arrays = [np.asarray(r) for r in rows]
    if len({a.shape for a in arrays}) <= 1:
        return np.stack(arrays) if arrays else np.empty(0)
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def describe(task: Task, scores: np.ndarray, texts: list[str], tokenizer: Any, max_length: int) -> list[dict]:
    """What a user reads of each text's scores: a task whose answers point into the text (entities) is given the
    texts and the tokenizer to find where; any other describes its scores alone."""
    if hasattr(task, "describe_texts"):
        return task.describe_texts(scores, texts, tokenizer, max_length)
    return task.describe(scores)


def targets_of(examples: list[dict[str, Any]]) -> np.ndarray:
    return stack_rows([ex["labels"].numpy() for ex in examples])


def encode_frame(
    task: Task, tokenizer: Any, frame: pd.DataFrame, max_length: int, ids: Sequence[Sequence[int]] | None = None
) -> list[dict[str, Any]]:
    """Labelled examples of a frame: the task's own `encode` when its labels follow the tokens, else token ids
    (`ids` when already computed) with one `targets` row per text."""
    if hasattr(task, "encode"):
        return task.encode(tokenizer, frame, max_length)
    if ids is None:
        ids = encode_texts(tokenizer, frame["text"].tolist(), max_length)
    return make_examples(ids, task.targets(frame))
