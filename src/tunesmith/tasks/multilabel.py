"""Multi-label classification: an independent sigmoid per label, one threshold tuned on validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.errors import TunesmithError
from tunesmith.evaluate import metrics
from tunesmith.rows import row_name
from tunesmith.tasks.base import Batch, forward_logits


class Multilabel:
    name = "multilabel"
    metric = "micro_f1"

    def __init__(self, labels: list[str] | None = None, threshold: float = 0.5) -> None:
        self.labels = labels or []
        self.threshold = threshold

    def fit(self, train: pd.DataFrame, source: str) -> None:
        self.labels = sorted({label for row in train["label"] for label in row})
        if len(self.labels) < 2:
            raise TunesmithError(f"{source}: fewer than 2 distinct labels ({self.labels}); multilabel needs 2 or more")

    def check(self, df: pd.DataFrame, source: str) -> None:
        known = set(self.labels)
        for index, row in df["label"].items():
            unseen = [label for label in row if label not in known]
            if unseen:
                raise TunesmithError(
                    f"{source}: label {unseen[0]!r} ({row_name(source, index)}) never appears in "
                    f"the training data (labels: {', '.join(self.labels)})"
                )

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        ids = {label: i for i, label in enumerate(self.labels)}
        out = torch.zeros((len(df), len(self.labels)))
        for row, labels in enumerate(df["label"]):
            for label in labels:
                out[row, ids[label]] = 1.0
        return out

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.labels),
            "problem_type": "multi_label_classification",
            "id2label": dict(enumerate(self.labels)),
            "label2id": {label: i for i, label in enumerate(self.labels)},
        }

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = forward_logits(model, batch).float()
        per_example = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none").mean(-1)
        return per_example.sum(), len(logits)

    def scores(self, logits: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(logits.float()).cpu().numpy()

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        return metrics.multilabel(scores, targets, self.labels, self.threshold)

    def probe(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
        # scikit-learn loads here, not with the module: predicting and serving never fit a probe
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        probs = np.zeros((len(test_x), len(self.labels)))
        present = [j for j in range(len(self.labels)) if 0 < train_y[:, j].sum() < len(train_y)]
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=3000)))
        clf.fit(train_x, train_y[:, present])
        probs[:, present] = clf.predict_proba(test_x)
        for j in set(range(len(self.labels))) - set(present):
            probs[:, j] = train_y[:, j].mean()  # a label that is always or never on: predict its rate
        return probs

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        self.threshold = metrics.best_threshold(scores, targets)

    def describe(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "labels": [label for label, p in zip(self.labels, row, strict=True) if p >= self.threshold],
                "probs": {label: float(p) for label, p in zip(self.labels, row, strict=True)},
            }
            for row in scores
        ]

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "labels": self.labels, "threshold": self.threshold}
