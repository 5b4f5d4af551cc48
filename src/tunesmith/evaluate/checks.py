"""Warnings a finished classifier run must not keep to itself: a class it never predicts, or a fine-tuned
model that ends below the linear probe the run fitted on the untouched model's features.

Both happen on imbalanced data at learning rates that suit balanced data; a user reading only the
headline accuracy would ship such a model. Each warning says what to try.
"""

from __future__ import annotations

import math
from typing import Any

from tunesmith.evaluate.metrics import LOWER_IS_BETTER


def run_warnings(metrics: dict[str, Any], metric: str, train: Any) -> list[str]:
    """`metrics` is a classifier run's metrics.json content; `train` its resolved train section."""
    tuned = metrics["finetuned"]
    classes = "confusion_matrix" in tuned["validation"]  # single-label classification: its classes can be weighted
    out = [_never_predicted(tuned["validation"], train)] if classes else []
    probe = metrics.get("linear_probe", {}).get("test", {})
    if metric in probe and metric in tuned["test"]:
        out.append(_below_probe(tuned["test"][metric], probe[metric], metric, train, classes))
    return [w for w in out if w]


def _never_predicted(validation: dict[str, Any], train: Any) -> str:
    cm = validation["confusion_matrix"]
    matrix, labels = cm["matrix"], cm["labels"]
    missed = [
        f"{label!r} ({sum(matrix[i])} rows)"
        for i, label in enumerate(labels)
        if sum(matrix[i]) and not sum(row[i] for row in matrix)
    ]
    if not missed:
        return ""
    return (
        f"the fine-tuned model never predicts {', '.join(missed)} on the validation split; try {_remedies(train, True)}"
    )


def _below_probe(tuned: float, probe: float, metric: str, train: Any, classes: bool) -> str:
    worse = tuned > probe if metric in LOWER_IS_BETTER else tuned < probe
    if not worse:
        return ""
    return (
        f"the fine-tuned model ({metric} {tuned:.4f} on test) ends below the linear probe on the base model's "
        f"frozen features ({probe:.4f}); try {_remedies(train, classes)}"
    )


def _remedies(train: Any, classes: bool) -> str:
    tries = []
    if classes and train.class_weights != "balanced":
        tries.append("--class-weights balanced")
    tries.append(f"--lr {train.lr * 2:g} or {train.lr / 2:g}")
    if train.max_steps:  # the steps bound the run, so more epochs would change nothing
        tries.append(f"--max-steps {train.max_steps * 2}")
    else:
        tries.append(f"--epochs {max(1, math.ceil(train.epochs * 2))}")
    tries.append("or `tunesmith tune` to search")
    return ", ".join(tries)
