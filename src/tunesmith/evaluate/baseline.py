"""What the base model scores before fine-tuning, on the same test split.

Two baselines, both from the pretrained backbone's mean-pooled token states:
- zero-shot (classification only): each text gets the label whose *name* embeds nearest. This is
  the model as it comes, trained on nothing: the "base" of the base-vs-fine-tuned table. A decoder
  (a causal LM) is asked instead, as a user would ask it (`evaluate/prompted.py`).
- linear probe: a scikit-learn head fitted on frozen features of the training split, i.e. what
  training only a head buys. It is reported beside the others so the gain of fine-tuning is honest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tunesmith.evaluate import prompted
from tunesmith.tasks.base import Collator, Task
from tunesmith.tasks.token_loss import IGNORE


@torch.inference_mode()
def pooled_features(
    backbone: nn.Module, examples: list[dict], collate: Collator, batch_size: int, device: torch.device
) -> np.ndarray:
    backbone.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    chunks = []
    for start in range(0, len(order), batch_size):
        batch = collate([{"input_ids": examples[i]["input_ids"]} for i in order[start : start + batch_size]])
        mask = batch["attention_mask"].to(device)
        hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        chunks.append(((hidden * m).sum(1) / m.sum(1)).float().cpu().numpy())
    feats = np.concatenate(chunks)
    out = np.empty_like(feats)
    out[order] = feats
    return out


def score_baselines(
    model: nn.Module,
    task: Task,
    tokenizer: Any,
    train: list[dict],
    test: list[dict],
    collate: Collator,
    batch_size: int,
    device: torch.device,
    max_rows: int,
    seed: int,
    asked: prompted.Asked | None = None,
) -> dict[str, Any]:
    """Run before any weight changes: `model.base_model` is then the untouched pretrained backbone.

    `asked`: the base model is a causal LM, whose zero-shot answer is the label it finds likeliest when asked."""
    backbone = model.base_model.to(device)
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(train), size=min(max_rows, len(train)), replace=False).tolist())
    if getattr(task, "token_level", False):
        return {
            "linear_probe": _token_probe(
                backbone, task, [train[i] for i in picked], test, collate, batch_size, device, rng
            )
        }
    train_x = pooled_features(backbone, [train[i] for i in picked], collate, batch_size, device)
    test_x = pooled_features(backbone, test, collate, batch_size, device)
    train_y = torch.stack([train[i]["labels"] for i in picked]).numpy()
    test_y = torch.stack([ex["labels"] for ex in test]).numpy()
    out: dict[str, Any] = {
        "linear_probe": {
            "description": f"scikit-learn head on frozen mean-pooled features of {len(picked)} training rows",
            "test": task.metrics(task.probe(train_x, train_y, test_x), test_y),
        }
    }
    labels = getattr(task, "labels", None)
    if task.name == "classification" and labels and asked is not None:
        out["zero_shot"] = {
            "description": prompted.prompt_description(labels),
            "test": task.metrics(prompted.zero_shot(asked, labels, batch_size, device), test_y),
        }
    elif task.name == "classification" and labels:
        names = [{"input_ids": ids} for ids in tokenizer(labels, truncation=True)["input_ids"]]
        label_x = pooled_features(backbone, names, collate, batch_size, device)
        out["zero_shot"] = {
            "description": "no training: each text takes the label whose name embeds nearest (cosine)",
            "test": task.metrics(_cosine_softmax(test_x, label_x), test_y),
        }
    return out


# Tokens the token-level probe is fitted on at most: a logistic regression on more takes minutes and gains little.
PROBE_TOKENS = 50_000


@torch.inference_mode()
def token_states(
    backbone: nn.Module, examples: list[dict], collate: Collator, batch_size: int, device: torch.device
) -> list[np.ndarray]:
    """Each example's last-layer states, one row per token."""
    backbone.eval()
    out: list[np.ndarray] = [np.empty(0)] * len(examples)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([{"input_ids": examples[i]["input_ids"]} for i in chunk])
        mask = batch["attention_mask"].to(device)
        hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        for j, i in enumerate(chunk):
            out[i] = hidden[j, : int(mask[j].sum())].float().cpu().numpy()
    return out


def _token_probe(
    backbone: nn.Module,
    task: Task,
    train: list[dict],
    test: list[dict],
    collate: Collator,
    batch_size: int,
    device: torch.device,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """A token-level linear probe: each token's tag from its frozen state, what training only a head buys."""
    targets = [ex["labels"].numpy() for ex in train]
    states = token_states(backbone, train, collate, batch_size, device)
    train_x = np.concatenate([s[y != IGNORE] for s, y in zip(states, targets, strict=True)])
    train_y = np.concatenate([y[y != IGNORE] for y in targets])
    if len(train_x) > PROBE_TOKENS:
        keep = rng.choice(len(train_x), size=PROBE_TOKENS, replace=False)
        train_x, train_y = train_x[keep], train_y[keep]
    states = token_states(backbone, test, collate, batch_size, device)
    lengths = [len(s) for s in states]
    probs = task.probe(train_x, train_y, np.concatenate(states))
    scores = np.split(probs, np.cumsum(lengths)[:-1])
    return {
        "description": f"scikit-learn head on frozen token states: {len(train_x)} tokens of {len(train)} training rows",
        "test": task.metrics(scores, [ex["labels"].numpy() for ex in test]),
    }


def _cosine_softmax(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    labels = labels / np.linalg.norm(labels, axis=1, keepdims=True)
    sims = x @ labels.T / 0.05  # a temperature so the scores read as probabilities
    sims -= sims.max(axis=1, keepdims=True)
    e = np.exp(sims)
    return e / e.sum(axis=1, keepdims=True)
