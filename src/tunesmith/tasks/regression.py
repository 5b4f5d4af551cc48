"""Regression: one numeric target, MSE on the standardised target, predictions in the original units."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.errors import TunesmithError
from tunesmith.evaluate import metrics
from tunesmith.rows import row_names
from tunesmith.tasks.base import Batch, forward_logits


class Regression:
    name = "regression"
    metric = "rmse"

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        # Standardising the target keeps the head's initial outputs and the loss on a sane scale.
        self.mean, self.std = mean, std

    def fit(self, train: pd.DataFrame, source: str) -> None:
        values = self._numbers(train, source)
        self.mean = float(values.mean())
        self.std = float(values.std()) or 1.0

    def check(self, df: pd.DataFrame, source: str) -> None:
        self._numbers(df, source)

    def _numbers(self, df: pd.DataFrame, source: str) -> np.ndarray:
        values = pd.to_numeric(df["label"], errors="coerce")
        bad = values.index[values.isna() | ~np.isfinite(values.fillna(0))]
        if len(bad):
            raise TunesmithError(
                f"{source}: label {df['label'][bad[0]]!r} ({row_names(source, bad)}) is not a finite number; "
                "--task regression needs numeric labels"
            )
        return values.to_numpy(dtype=np.float64)

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        values = pd.to_numeric(df["label"]).to_numpy(dtype=np.float32)
        return torch.from_numpy(values)

    def model_kwargs(self) -> dict[str, Any]:
        return {"num_labels": 1, "problem_type": "regression"}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        pred = forward_logits(model, batch).float().squeeze(-1)
        target = (batch["labels"] - self.mean) / self.std
        return F.mse_loss(pred, target, reduction="sum"), len(pred)

    def scores(self, logits: torch.Tensor) -> np.ndarray:
        return logits.float().squeeze(-1).cpu().numpy() * self.std + self.mean

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        return metrics.regression(scores, targets)

    def probe(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
        # scikit-learn loads here, not with the module: predicting and serving never fit a probe
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
        return model.fit(train_x, train_y).predict(test_x)

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        """Nothing to tune for a regression head."""

    def describe(self, scores: np.ndarray) -> list[dict[str, Any]]:
        return [{"value": float(v)} for v in scores]

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "mean": self.mean, "std": self.std}
