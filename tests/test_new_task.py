"""A new task is one module plus one registry entry: a token-level tagger, defined here and nowhere in tunesmith,
trains, evaluates and predicts through the same recipe, loop, run folder and commands as the built-in tasks.

This module plays the part of `tasks/tagging.py`: everything a task must say lives in it, and tunesmith is
not edited. (A full entity-extraction task, with spans and seqeval metrics, is a later issue.)
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

from conftest import Result, train_args
from tunesmith.errors import TunesmithError
from tunesmith.models.config import ModelConfig
from tunesmith.rows import row_names
from tunesmith.tasks import CLASSIFIER, TASKS, TaskInfo, register
from tunesmith.tasks.base import Batch, pad

IGNORE = -100


class ToyTagger:
    """One tag per whitespace-separated word, predicted on the word's first sub-word token."""

    name = "toy-tags"
    metric = "token_macro_f1"

    def __init__(self, labels: list[str] | None = None) -> None:
        self.labels = labels or []

    def fit(self, train: pd.DataFrame, source: str) -> None:
        self.labels = sorted({tag for cell in train["label"] for tag in str(cell).split()})

    def check(self, df: pd.DataFrame, source: str) -> None:
        bad = df.index[
            [len(str(t).split()) != len(str(x).split()) for t, x in zip(df["text"], df["label"], strict=True)]
        ]
        if len(bad):
            raise TunesmithError(f"{source}: {row_names(source, bad)}: one tag per word is needed")

    def encode(self, tokenizer: Any, frame: pd.DataFrame, max_length: int) -> list[dict[str, Any]]:
        ids = {label: i for i, label in enumerate(self.labels)}
        words = [str(t).split() for t in frame["text"]]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        examples = []
        for row, tags in enumerate(frame["label"]):
            tags = str(tags).split()
            seen: set[int] = set()
            labels = []
            for word in enc.word_ids(row):
                first = word is not None and word not in seen
                labels.append(ids.get(tags[word], IGNORE) if first else IGNORE)
                if word is not None:
                    seen.add(word)
            n = sum(label != IGNORE for label in labels)
            examples.append({"input_ids": enc["input_ids"][row], "labels": torch.tensor(labels), "n_targets": n})
        return examples

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        raise NotImplementedError("labels follow the tokens: see encode")

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
        return loss, int((labels != IGNORE).sum())

    def scores(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()  # (batch, tokens, tags)

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        pred = np.concatenate([s.argmax(-1) for s in scores])
        gold = np.concatenate(list(targets))
        keep = gold != IGNORE
        return {
            "token_accuracy": float(accuracy_score(gold[keep], pred[keep])),
            "token_macro_f1": float(f1_score(gold[keep], pred[keep], average="macro", zero_division=0)),
            "n": len(scores),
        }

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        """Nothing to tune."""

    def describe(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return [{"tags": [self.labels[i] for i in s.argmax(-1)]} for s in scores]

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "labels": self.labels}


class TagCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        ids, mask = pad([it["input_ids"] for it in items], self.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in items[0]:
            batch["labels"], _ = pad([it["labels"].tolist() for it in items], IGNORE)
        return batch


def load_tagger(path: str, head: dict[str, Any], cfg: ModelConfig, pad_token_id: int | None) -> nn.Module:
    from transformers import AutoModelForTokenClassification

    return AutoModelForTokenClassification.from_pretrained(path, **head)


@pytest.fixture
def toy_task() -> Any:
    register(
        TaskInfo(
            "toy-tags",
            CLASSIFIER,
            "TOKEN_CLS",
            64,
            f"{__name__}:ToyTagger",
            f"{__name__}:TagCollator",
            f"{__name__}:load_tagger",
        )
    )
    yield
    TASKS.pop("toy-tags")


CITIES = ["paris", "london", "北京", "上海", "tokyo"]
OTHER = ["ship", "my", "parcel", "to", "from", "please", "寄", "到", "the", "order"]


def tagged_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(CITIES if rng.random() < 0.3 else OTHER) for _ in range(rng.randint(3, 7))]
        words += [str(rng.randint(100, 999))]
        tags = ["CITY" if w in CITIES else "NUM" if w.isdigit() else "O" for w in words]
        rows.append((" ".join(words), " ".join(tags)))
    return rows


@pytest.fixture(autouse=True)
def _user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def test_a_token_level_task_registered_from_outside_trains_evaluates_and_predicts(
    toy_task: Any, cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    pd.DataFrame(tagged_rows(160, 0), columns=["text", "tags"]).to_csv(tmp_path / "tagged.csv", index=False)
    args = train_args(tiny_model, "tagged.csv", "run", "--task", "toy-tags", "--label-column", "tags")
    result = cli(*args, "--epochs", "12", "--batch-size", "16", "--lr", "1e-2", "--eval-every", "20")
    assert result.code == 0, result.err

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "base" not in metrics  # a task with no linear probe gets no baseline
    test = metrics["finetuned"]["test"]
    # Cities, numbers and other words are learnable from the words alone: far above tagging all "O" (macro 0.29).
    assert test["token_macro_f1"] > 0.8, test
    evals = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert len(evals) >= 2 and evals[-1]["token_macro_f1"] > evals[0]["token_macro_f1"] - 1e-9

    predicted = cli("predict", "run", "--text", "ship to 北京 123")
    assert predicted.code == 0, predicted.err
    tags = predicted.json_lines()[0]["tags"]
    assert isinstance(tags, list) and len(tags) >= 4  # one per token, special tokens included
    evaluated = cli("evaluate", "run", "--test", "tagged.csv")
    assert evaluated.code == 0 and "token_macro_f1" in evaluated.out
