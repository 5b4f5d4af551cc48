"""Single-label classification: cross-entropy over K classes, a label map built from the training data."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.errors import TunesmithError
from tunesmith.evaluate import metrics
from tunesmith.rows import label_text, row_names
from tunesmith.tasks.base import Batch, forward_logits


def _sort_key(label: str) -> tuple[int, float | str]:
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


def logistic_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int, max_iter: int
) -> np.ndarray:
    """Class probabilities of the test rows from a logistic regression on standardised frozen features; a class
    the training rows lack gets probability 0."""
    # scikit-learn loads here, not with the module: predicting and serving never fit a probe
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    clf.fit(train_x, train_y)
    probs = np.zeros((len(test_x), n_classes))
    probs[:, clf.classes_] = clf.predict_proba(test_x)
    return probs


class Classification:
    name = "classification"
    metric = "macro_f1"

    def __init__(self, labels: list[str] | None = None) -> None:
        self.labels = labels or []
        self.class_weights: torch.Tensor | None = None  # training-time only; not part of the saved state

    def fit(self, train: pd.DataFrame, source: str) -> None:
        found = sorted({label_text(v) for v in train["label"]}, key=_sort_key)
        if len(found) < 2:
            raise TunesmithError(
                f"{source}: only one class ({found[0]!r}) in the training labels; a classifier needs at least 2"
            )
        self.labels = found

    def balance(self, train: pd.DataFrame) -> None:
        """Weight each class by n / (k * count), scikit-learn's "balanced", so rare classes count as much."""
        counts = self.targets(train).bincount(minlength=len(self.labels)).float()
        self.class_weights = len(train) / (len(self.labels) * counts.clamp(min=1))

    def check(self, df: pd.DataFrame, source: str) -> None:
        known = set(self.labels)
        text = df["label"].map(label_text)
        unseen = text[~text.isin(known)]
        if len(unseen):
            raise TunesmithError(
                f"{source}: label {unseen.iloc[0]!r} ({row_names(source, unseen.index)}) never appears in the "
                f"training data (labels: {', '.join(self.labels)}); fix the label or add training examples"
            )

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        ids = {label: i for i, label in enumerate(self.labels)}
        return torch.tensor([ids[label_text(v)] for v in df["label"]], dtype=torch.long)

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "problem_type": "single_label_classification",
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = forward_logits(model, batch)
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        # Summed, then divided by the example count by the loop: weights shift the balance, not the scale.
        return F.cross_entropy(logits.float(), batch["labels"], weight=weight, reduction="sum"), len(logits)

    def scores(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        return metrics.classification(scores, targets, self.labels)

    def probe(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
        return logistic_probe(train_x, train_y, test_x, len(self.labels), max_iter=3000)

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        """Nothing to tune: the arg-max is the decision."""

    def describe(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "label": self.labels[int(row.argmax())],
                "score": float(row.max()),
                "probs": {label: float(p) for label, p in zip(self.labels, row, strict=True)},
            }
            for row in scores
        ]

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "labels": self.labels}
